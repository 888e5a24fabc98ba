"""Resolve a chain's raw parameters once into the typed job every layer uses.

The sweep driver resolves each chain before any trial starts (so bad input fails first); the
trial, the Train worker, MLflow records and trial names all read the same resolved job, so
they can never disagree on what a chain is (its hash, its rewind step, its prunable set).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltvl.core.adversarial import AdvConfig
from ltvl.core.baselines import Baseline
from ltvl.core.dense import DenseSpec
from ltvl.core.imp import ChainSpec, ChainStore
from ltvl.core.ticket_chain import SourceMask, TicketSpec, chain_masks
from ltvl.core.train import TrainConfig
from ltvl.params.schema import (
    CONTEXT_KEYS,
    DEFAULTS,
    INFO,
    LAYERS_PRESET,
    MAX_ROUNDS,
    RANDOM_INIT,
    TICKET_KEYS,
    ChainParams,
    check,
)
from ltvl.pruning import Schedule
from ltvl.pruning.methods import get_method
from ltvl.pruning.schedule import rounds_needed
from ltvl.util.errors import LtvlError
from ltvl.vl.assemble import VLSpec
from ltvl.vl.models.presets import BackboneFacts, BackboneSpec, Preset, check_pooling, get_preset, preflight


@dataclass(frozen=True)
class ChainJob:
    """One chain, resolved: its typed params and the core's specs built from them."""

    params: ChainParams
    vl: VLSpec
    chain: ChainSpec  # prunable set from the preset: exactly what the worker trains and hashes

    @property
    def rewind_step(self) -> int:
        """The step the chain actually rewinds to (``rewind_fraction`` resolved)."""
        return self.chain.rewind_step

    @property
    def dense(self) -> DenseSpec:
        return DenseSpec.of(self.chain)

    def store_sha256(self, root: str | Path) -> str:
        """The chain's identity as its store knows it (an older-format store keeps its old hash)."""
        return ChainStore(root, self.chain, writer=False).sha256

    def with_data(self, data_path: str) -> ChainJob:
        """The same job reading its dataset from ``data_path`` (where this node keeps it)."""
        return dataclasses.replace(self, vl=dataclasses.replace(self.vl, data=data_path))


@dataclass(frozen=True)
class TicketJob:
    params: ChainParams  # as given, ticket keys included
    target: ChainJob  # the task, data and recipe the tickets are trained with
    baseline: Baseline
    source: ChainJob | None  # a chain whose pruned rounds give the masks …
    source_task: str
    masks: tuple[str, ...] = ()  # … or explicit mask files
    prime_sha256: str = ""  # θ'0's checkpoint, by content (theta0_prime)

    def masks_id(self, shas: list[str]) -> str:
        return "masks:" + hashlib.sha256("".join(shas).encode()).hexdigest()


def data_for(p: ChainParams) -> str:
    """The dataset of a chain: ``data`` may name the task as ``{task}`` so one sweep spans tasks."""
    return str(p.data).format(task=p.task)


def _context(p: ChainParams, preset: Preset, facts: BackboneFacts) -> tuple[tuple[str, str], ...]:
    """What the dense run trains on, beyond the recipe: only values that differ from their
    defaults, so a context parameter added later does not change any existing hash. The
    checkpoint and the tokenizer enter by content (``sha256:…``), never by path; the depth as
    the layers actually built, omitted at the preset's own default."""
    out = []
    for k in CONTEXT_KEYS:
        if k in ("checkpoint", "tokenizer"):
            continue
        if k == "layers":
            if p.layers != preset.default_layers:
                out.append((k, str(p.layers)))
            continue
        value = data_for(p) if k == "data" else getattr(p, k)
        if str(value) != str(DEFAULTS[k]):
            out.append((k, str(value)))
    out.extend(facts.context())
    if data_for(p) == "easy-vqa":  # a dataset ltvl defines: its content is named by its revision
        from ltvl.vl.data.easy_vqa import REVISION
        if REVISION > 1:
            out.append(("easy_vqa_revision", str(REVISION)))
    return tuple(out)


def _rewind_step(raw: Mapping[str, Any], p: ChainParams, where: str) -> int:
    if p.rewind_fraction is None:
        return p.rewind_step
    if "rewind_step" in raw:
        raise LtvlError(f"both rewind_step ({p.rewind_step}) and rewind_fraction ({p.rewind_fraction}) are set",
                        where=f"{where}.rewind_step/{where}.rewind_fraction", fix="set one of them")
    return int(p.rewind_fraction * p.steps)


def _schedule(p: ChainParams, where: str) -> Schedule:
    # jump/keep/start_level act on an adaptive schedule only; elsewhere they stay at the defaults, out of the hash
    extra = ({"jump": p.jump, "keep": p.keep, "start": p.start_level, "masks_of_seed": p.masks_of_seed}
             if p.schedule == "adaptive" else {})
    if p.masks_of_seed is not None and p.masks_of_seed == p.seed:
        raise LtvlError(f"masks_of_seed {p.masks_of_seed} is this chain's own seed", where=f"{where}.masks_of_seed",
                        fix="name another seed's chain (the lead), or leave it unset to search on its own")
    if p.masks_of_seed is not None and p.schedule != "adaptive":
        raise LtvlError(f"masks_of_seed {p.masks_of_seed} needs schedule: adaptive (its tries walk the levels)",
                        where=f"{where}.masks_of_seed", fix="set schedule: adaptive, or leave masks_of_seed unset")
    rate = Schedule.rate if p.schedule in ("one_shot", "gradual") else p.rate  # one round to the target: inert
    sched = Schedule(p.schedule, rate, p.target_sparsity, p.rounds, **extra)
    sched.validate(where)
    if p.start_level is not None and p.schedule != "adaptive":
        raise LtvlError(f"start_level {p.start_level} needs schedule: adaptive (it caps the search's jumps)",
                        where=f"{where}.start_level", fix="set schedule: adaptive, or leave start_level unset")
    if p.target_sparsity is not None and not p.override_limits:
        n = (rounds_needed(p.rate, p.target_sparsity) if p.schedule != "linear"
             else math.ceil(p.target_sparsity / p.rate - 1e-9))
        if n > MAX_ROUNDS:
            raise LtvlError(f"rate {p.rate:g} needs {n:,} rounds to reach sparsity {p.target_sparsity:g}, beyond the "
                            f"limit {MAX_ROUNDS}", where=f"{where}.rate",
                            fix=f"raise the rate, or set {where}.override_limits: true if you mean it")
    return sched


def resolve_chain(raw: Mapping[str, Any], where: str = "params", data_path: str | None = None) -> ChainJob:
    """Check a raw param mapping and build the core's specs; every error names the key."""
    if isinstance(raw, Mapping) and raw.get("ticket") is not None:
        raise LtvlError("this is a ticket job, not a chain", where=f"{where}.ticket",
                        fix="resolve it with resolve_ticket")
    p = check(raw, where)
    if raw.get("rounds") is not None and "target_sparsity" not in raw:  # rounds given: it is the stop
        p = dataclasses.replace(p, target_sparsity=None)
    method = get_method(p.method)
    if "scope" not in raw:  # a method's own comparison group (Wanda: per output row) unless the config says
        p = dataclasses.replace(p, scope=method.default_scope)
    if not method.needs_inputs:  # read by activation-aware methods only: elsewhere out of the hash
        p = dataclasses.replace(p, calibration_examples=DEFAULTS["calibration_examples"])
    data = data_for(p)
    tasks = INFO["task"].allowed()
    if data.startswith("synthetic:") and data.removeprefix("synthetic:") not in tasks:
        raise LtvlError(f"data {data!r} names no task", where=f"{where}.data",
                        fix=f"synthetic:<task> with a task of {', '.join(tasks)}, or synthetic:{{task}}")
    adv = AdvConfig(enabled=p.adv_use != "off", modality=p.adv_modality, epsilon=p.adv_epsilon,
                    step_size=p.adv_step_size, steps=p.adv_steps, kl_weight=p.adv_kl)
    train = TrainConfig(steps=p.steps, lr=p.lr, batch_size=p.batch_size, weight_decay=p.weight_decay,
                        warmup_ratio=p.warmup_ratio, seed=p.seed, amp=p.amp, adamw_impl=p.adamw_impl,
                        adversarial=adv if p.adv_use in ("imp", "both") else AdvConfig())
    preset = get_preset(p.preset)
    check_pooling(p.preset, p.pooling, f"{where}.pooling")
    if p.layers == LAYERS_PRESET:  # the depth the preset builds by default, as a number (or None: all)
        p = dataclasses.replace(p, layers=preset.default_layers)
    random_init = p.checkpoint == RANDOM_INIT
    if p.checkpoint and not random_init:  # an exported ticket's directory: its backbone and tokenizer, verified
        from ltvl.tickets.reuse import checkpoint_of, tokenizer_of
        p = dataclasses.replace(p, checkpoint=checkpoint_of(p.checkpoint, f"{where}.checkpoint"),
                                tokenizer=p.tokenizer or tokenizer_of(p.checkpoint))
    backbone = BackboneSpec(p.preset, None if random_init else p.checkpoint, p.layers, p.seed, p.pooling,
                            p.tokenizer, p.custom_size, p.allow_missing)
    facts = preflight(backbone, p.max_len, where, random_init)
    vl = VLSpec(task=p.task, data=data_path or data, backbone=backbone,
                max_len=p.max_len, eval_limit=p.eval_limit, loader_workers=p.loader_workers)
    chain = ChainSpec(train=train, rewind_step=_rewind_step(raw, p, where), schedule=_schedule(p, where),
                      method=p.method, scope=p.scope, prunable=preset.prunable,
                      context=_context(p, preset, facts),
                      finetune_adversarial=adv if p.adv_use in ("finetune", "both") else AdvConfig(),
                      retrain=p.retrain, calibration_examples=p.calibration_examples)
    chain.validate()
    return ChainJob(p, vl, chain)


def resolve_ticket(raw: Mapping[str, Any], where: str = "params", data_path: str | None = None) -> TicketJob:
    """A ticket job: ``ticket`` names the baseline, ``source`` the masks' origin (a chain's params
    or a list of mask files); the other keys are the target chain's."""
    p = check(raw, where)
    if p.ticket is None:
        raise LtvlError("a ticket job needs a baseline", where=f"{where}.ticket", fix="e.g. ticket: theta0_shuffled")
    baseline = Baseline(p.ticket)
    target = resolve_chain({k: v for k, v in raw.items() if k not in TICKET_KEYS}, where, data_path)
    # the ticket's own params read as its target's (layers `preset` resolved, rounds as the stop), so a
    # ticket run's recipe in MLflow and the report is the same as the chains it is compared with
    p = dataclasses.replace(p, layers=target.params.layers, target_sparsity=target.params.target_sparsity)
    prime = _prime(p, baseline, target, where)
    src = p.source
    if isinstance(src, dict):
        source = resolve_chain({k: v for k, v in src.items() if k not in TICKET_KEYS}, f"{where}.source")
        return TicketJob(p, target, baseline, source, source.params.task, prime_sha256=prime)
    if isinstance(src, list) and src and all(isinstance(m, str) for m in src):
        from ltvl.tickets.reuse import mask_of  # an exported ticket's directory: its mask, verified first
        masks = tuple(mask_of(m, f"{where}.source") for m in src)
        return TicketJob(p, target, baseline, None, "masks", masks, prime_sha256=prime)
    raise LtvlError(f"ticket source must be a chain's params or a list of mask files, got {src!r}",
                    where=f"{where}.source",
                    fix="e.g. source: {task: vqa, rewind_step: 0}, or source: [a.mask.safetensors, …] (mask files or "
                        "directories of `ltvl ticket export`)")


def _prime(p: ChainParams, baseline: Baseline, target: ChainJob, where: str) -> str:
    """θ'0's content hash, after checking it is a checkpoint the target's backbone can take."""
    if baseline is not Baseline.THETA0_PRIME:
        if p.prime_checkpoint:
            raise LtvlError(f"prime_checkpoint is θ'0's weights, but this ticket is {baseline.value!r}",
                            where=f"{where}.prime_checkpoint", fix="drop it, or set ticket: theta0_prime")
        return ""
    if not p.prime_checkpoint:
        raise LtvlError("the theta0_prime baseline needs another checkpoint", where=f"{where}.prime_checkpoint",
                        fix="set prime_checkpoint to a BERT checkpoint (e.g. a bert-base-cased directory)")
    from ltvl.vl.models.prime import check_prime

    return check_prime(p.prime_checkpoint, get_preset(target.params.preset).kind, f"{where}.prime_checkpoint")


def resolve(raw: Mapping[str, Any], where: str = "params", data_path: str | None = None) -> ChainJob | TicketJob:
    """A chain or a ticket job, whichever ``raw`` describes."""
    if isinstance(raw, Mapping) and raw.get("ticket") is not None:
        return resolve_ticket(raw, where, data_path)
    return resolve_chain(raw, where, data_path)


def ticket_plan(params: Mapping[str, Any], root: str | Path) -> tuple[TicketSpec, list[SourceMask]]:
    """A ticket job's spec (its store's identity) and the source masks it trains, from its params
    and the chain stores: the worker and ``ltvl imp --ticket`` train it, the summary reads its store."""
    tj = resolve_ticket(params)
    if tj.source is not None:
        source_id, sources = chain_masks(root, tj.source.chain)
    else:
        from ltvl.pruning.maskfile import load_mask

        masks = [load_mask(p) for p in tj.masks]
        sources = [SourceMask(i + 1, p, m.sha256) for i, (p, m) in enumerate(zip(tj.masks, masks))]
        source_id = tj.masks_id([m.sha256 for m in masks])
    chain = tj.target.chain
    return TicketSpec(tj.baseline, source_id, tj.source_task, chain.train, chain.prunable, chain.context,
                      prime=tj.prime_sha256), sources


def prime_for(params: Mapping[str, Any], target: ChainJob, model_factory, say=lambda _line: None):
    """θ'0 as the model's named tensors when ``params`` ask for it (ticket theta0_prime), else None."""
    if not params.get("prime_checkpoint"):
        return None
    from ltvl.vl.models.prime import prime_state

    state, report = prime_state(params["prime_checkpoint"], model_factory(), get_preset(target.params.preset).kind,
                                target.params.seed, target.params.allow_missing)
    say(f"θ'0 {report.line()}")
    return state
