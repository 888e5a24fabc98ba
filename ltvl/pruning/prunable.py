"""Which parameters may be pruned.

The default follows the BERT-ticket convention (SPEC §1): every Linear weight inside
the encoder, plus the pooler; never embeddings, LayerNorms, biases or task heads.
Patterns are Python regexes searched in the full parameter name, so they work for
any prefix (``backbone.bert.encoder...``) and for LXMERT's/ViLT's encoders too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ltvl.util.errors import LtvlError

DEFAULT_INCLUDE: tuple[str, ...] = (r"(^|\.)encoder\.", r"(^|\.)pooler\.")


@dataclass(frozen=True)
class PrunableSpec:
    """include/exclude regexes; ``linear_only`` keeps only 2-D weights of nn.Linear."""

    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = ()
    linear_only: bool = True

    @classmethod
    def of(
        cls, include: Sequence[str] | None = None, exclude: Sequence[str] | None = None, linear_only: bool = True
    ) -> PrunableSpec:
        return cls(tuple(include) if include else DEFAULT_INCLUDE, tuple(exclude or ()), linear_only)


def _compile(patterns: Sequence[str], kind: str) -> list[re.Pattern]:
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p))
        except re.error as e:
            raise LtvlError(f"invalid regex {p!r}: {e}", where=f"--{kind}", fix="fix the pattern") from e
    return out


def _linear_weight_names(model: nn.Module) -> set[str]:
    return {
        f"{mod_name}.weight" if mod_name else "weight"
        for mod_name, mod in model.named_modules()
        if isinstance(mod, nn.Linear)
    }


def select_names(
    candidates: Mapping[str, tuple[int, ...]], spec: PrunableSpec, linear_weights: set[str] | None = None
) -> list[str]:
    """Apply the spec to ``name -> shape``; errors name any pattern that selects nothing.

    ``linear_weights`` is the set of nn.Linear weight names when a module is known;
    for a bare checkpoint, 2-D ``*.weight`` tensors stand in for Linear weights.
    """
    inc, exc = _compile(spec.include, "include"), _compile(spec.exclude, "exclude")

    def eligible(name: str, shape: tuple[int, ...]) -> bool:
        if not spec.linear_only:
            return True
        if linear_weights is not None:
            return name in linear_weights
        return name.endswith(".weight") and len(shape) == 2

    pool = [n for n, s in candidates.items() if eligible(n, tuple(s))]
    for rx in inc:
        if not any(rx.search(n) for n in pool):
            raise LtvlError(
                f"include pattern {rx.pattern!r} selects no parameter"
                + (
                    " (only Linear weights are eligible; pass linear_only=False / --all-params to widen)"
                    if spec.linear_only
                    else ""
                ),
                where="--include",
                fix="check names with `ltvl prune --list`; e.g. "
                + (pool[0] if pool else "(model has no eligible parameters)"),
            )
    chosen = [n for n in pool if any(rx.search(n) for rx in inc)]
    for rx in exc:
        if not any(rx.search(n) for n in chosen):
            raise LtvlError(
                f"exclude pattern {rx.pattern!r} matches none of the {len(chosen)} selected parameters",
                where="--exclude",
                fix="drop or correct the pattern",
            )
    chosen = [n for n in chosen if not any(rx.search(n) for rx in exc)]
    if not chosen:
        raise LtvlError(
            "the include/exclude patterns leave no prunable parameter",
            where="--include/--exclude",
            fix="loosen the exclude patterns",
        )
    return chosen


def select_prunable(model: nn.Module, spec: PrunableSpec = PrunableSpec()) -> dict[str, nn.Parameter]:
    """``name -> Parameter`` for the prunable set of ``model``, in model order."""
    params = dict(model.named_parameters())
    names = select_names({n: tuple(p.shape) for n, p in params.items()}, spec, _linear_weight_names(model))
    return {n: params[n] for n in names}


def select_from_state(
    state: Mapping[str, torch.Tensor], spec: PrunableSpec = PrunableSpec()
) -> dict[str, torch.Tensor]:
    names = select_names({n: tuple(t.shape) for n, t in state.items()}, spec)
    return {n: state[n] for n in names}


def describe(selected: Mapping[str, torch.Tensor]) -> str:
    """Human-readable listing: each tensor, its shape and count, then the total."""
    width = max((len(n) for n in selected), default=4)
    lines = [f"{n:<{width}}  {str(list(t.shape)):>14}  {t.numel():>12,}" for n, t in selected.items()]
    total = sum(t.numel() for t in selected.values())
    lines.append(f"{len(selected)} tensors, {total:,} prunable weights")
    return "\n".join(lines)
