"""Evaluate a ticket: reset to an initialisation, apply a mask, re-train, report (SPEC §3).

The baselines of the paper are (init, mask) pairs around an IMP mask ``m``:

| baseline        | weights                       | mask                           |
|-----------------|-------------------------------|--------------------------------|
| imp             | θ0 (or θi when rewinding)     | m                              |
| random (RP)     | θ0                            | random, same sparsity as m     |
| theta0_prime    | θ'0 (another checkpoint)      | m                              |
| theta0_shuffled | θ0 shuffled within tensors    | m                              |
| high_magnitude  | θ0                            | prune the largest |θ0|, same count as m |
| random_init     | a fresh random init           | m                              |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from ltvl.core.invariants import ticket_checks
from ltvl.core.train import RewindPoint, Trainer
from ltvl.pruning.enforce import MaskEnforcer
from ltvl.pruning.inits import InitReport, load_matching, reinitialise, shuffle_within_tensors
from ltvl.pruning.mask import Mask
from ltvl.pruning.prune import high_magnitude_mask, matched_random
from ltvl.util.errors import LtvlError, require


class Baseline(str, Enum):
    IMP = "imp"
    RANDOM = "random"
    THETA0_PRIME = "theta0_prime"
    THETA0_SHUFFLED = "theta0_shuffled"
    HIGH_MAGNITUDE = "high_magnitude"
    RANDOM_INIT = "random_init"


@dataclass
class TicketRun:
    baseline: Baseline
    mask: Mask
    metrics: dict[str, float]
    train_loss: float
    init_report: InitReport | None = None
    checks: dict | None = None  # the invariants measured on the trained ticket (ltvl.core.invariants)


Prepared = tuple[nn.Module, Mask, "InitReport | None"]


def _keep(model: nn.Module, mask: Mask, seed: int, other: Mapping[str, torch.Tensor] | None) -> Prepared:
    return model, mask, None


def _random_mask(model: nn.Module, mask: Mask, seed: int, other: Mapping[str, torch.Tensor] | None) -> Prepared:
    return model, matched_random(mask, seed), None


def _other_checkpoint(model: nn.Module, mask: Mask, seed: int, other: Mapping[str, torch.Tensor] | None) -> Prepared:
    require(other is not None, "the θ'0 baseline needs another checkpoint", where="other_state",
            fix="pass the state dict of e.g. the plain BERT checkpoint")
    report = load_matching(model, other)
    if report.shape_mismatch:
        raise LtvlError(f"θ'0's {report.shape_mismatch[0]!r} does not fit the model ({len(report.shape_mismatch)} "
                        "tensor(s) of another shape)", where="other_state",
                        fix="θ'0 must be a checkpoint of the model's size")
    return model, mask, report


def _shuffled(model: nn.Module, mask: Mask, seed: int, other: Mapping[str, torch.Tensor] | None) -> Prepared:
    shuffle_within_tensors(model, mask.names, seed)
    return model, mask, None


def _high_magnitude(model: nn.Module, mask: Mask, seed: int, other: Mapping[str, torch.Tensor] | None) -> Prepared:
    params = dict(model.named_parameters())
    return model, high_magnitude_mask({n: params[n].detach() for n in mask.names}, mask), None


def _random_init(model: nn.Module, mask: Mask, seed: int, other: Mapping[str, torch.Tensor] | None) -> Prepared:
    reinitialise(model, seed)
    return model, mask, None


@dataclass(frozen=True)
class BaselineInfo:
    """Everything about one baseline in one place: how it is prepared and what it is called."""

    prepare: Callable[[nn.Module, Mask, int, Mapping[str, torch.Tensor] | None], Prepared]
    init_label: str  # the ``ltvl.init`` tag of its rounds in MLflow
    report_label: str  # its line in the report's tables and figures


BASELINES: dict[Baseline, BaselineInfo] = {
    Baseline.IMP: BaselineInfo(_keep, "theta0", "IMP"),
    Baseline.RANDOM: BaselineInfo(_random_mask, "RP", "RP"),
    Baseline.THETA0_PRIME: BaselineInfo(_other_checkpoint, "theta0_prime", "θ'0"),
    Baseline.THETA0_SHUFFLED: BaselineInfo(_shuffled, "theta0_shuffled", "θ''0"),
    Baseline.HIGH_MAGNITUDE: BaselineInfo(_high_magnitude, "high_magnitude", "high-magnitude"),
    Baseline.RANDOM_INIT: BaselineInfo(_random_init, "random", "random init"),
}


def prepare(baseline: Baseline | str, mask: Mask, model_factory: Callable[[], nn.Module], *, seed: int = 0,
            other_state: Mapping[str, torch.Tensor] | None = None) -> Prepared:
    """Build the model and the mask a baseline trains (weights not yet masked)."""
    return BASELINES[Baseline(baseline)].prepare(model_factory(), mask, seed, other_state)


def train_ticket(baseline: Baseline | str, mask: Mask, model_factory: Callable[[], nn.Module], trainer: Trainer, *,
                 seed: int = 0, theta_i: RewindPoint | None = None,
                 other_state: Mapping[str, torch.Tensor] | None = None, start_sha256: str | None = None) -> TicketRun:
    """Fully re-train a (baseline) ticket and evaluate it. ``theta_i`` rewinds the IMP ticket to step i.
    Its invariants are measured as a chain round's are: a derived mask (random, high-magnitude) keeps
    each tensor's count of the source mask, so its sparsity must equal the source's to one weight per
    tensor; ``start_sha256`` names the weights it started from where a file holds them (θ'0's)."""
    nominal = mask.sparsity
    model, mask, report = prepare(baseline, mask, model_factory, seed=seed, other_state=other_state)
    enforcer = MaskEnforcer(model, mask)
    start = theta_i if Baseline(baseline) is Baseline.IMP else None
    out = trainer.train(model, enforcer=enforcer, start=start)
    metrics = trainer.evaluate(model)
    enforcer.remove()
    checks = ticket_checks(model, mask, nominal, "layerwise", out.optimizer_state_masked, start_sha256)
    return TicketRun(Baseline(baseline), mask, metrics, out.mean_loss, report, checks)
