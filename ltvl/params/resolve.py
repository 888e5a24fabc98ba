"""A chain job as one flat, JSON-able dict: what a sweep's param_space varies and what a Ray
worker receives. ``build_job`` validates every key before any compute and names the culprit."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from ltvl.core.adversarial import AdvConfig
from ltvl.util.errors import LtvlError
from ltvl.core.imp import ChainSpec
from ltvl.vl.models.presets import BackboneSpec
from ltvl.pruning import Method, Schedule
from ltvl.core.baselines import Baseline
from ltvl.core.train import TrainConfig
from ltvl.vl.assemble import VLSpec

DEFAULTS: dict[str, Any] = {
    # what to train
    "task": "vqa", "data": "easy-vqa", "preset": "minilm", "layers": 2, "checkpoint": None,
    "max_len": 16, "eval_limit": 2000,
    # training recipe (t steps per round)
    "steps": 200, "lr": 1e-4, "batch_size": 32, "weight_decay": 0.01, "warmup_ratio": 0.1, "seed": 0,
    "amp": "off",
    # IMP
    "rewind_step": 0, "rewind_fraction": None, "schedule": "geometric", "rate": 0.5, "target_sparsity": 0.9,
    "rounds": None, "method": "magnitude", "scope": "global",
    # adversarial training (SPEC §4): 'imp' = AT-IMP, 'finetune' = AT on each round's ticket, 'both' = both
    "adv_use": "off", "adv_modality": "both", "adv_epsilon": 0.0, "adv_step_size": 1e-3, "adv_steps": 3,
    "adv_kl": 1.5,
    # tickets (ltvl.core.ticket_chain): set `ticket` to re-train every pruned round's mask of `source`
    # (a chain's params, or a list of mask files) with that baseline on this job's task
    "ticket": None, "source": None, "prime_checkpoint": None,
}
TICKET_KEYS = ("ticket", "source", "prime_checkpoint")


@dataclass(frozen=True)
class ChainJob:
    vl: VLSpec
    chain: ChainSpec
    params: dict


def _check_keys(params: dict) -> None:
    for key in params:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(key, DEFAULTS, n=1)
            raise LtvlError(f"unknown chain parameter {key!r}", where=key,
                            fix=(f"did you mean {close[0]!r}? " if close else "") + "see ltvl.params.resolve.DEFAULTS")


def _typed(p: dict, key: str, typ) -> Any:
    v = p[key]
    if v is None:
        return None
    if typ is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise LtvlError(f"{key} must be {typ.__name__}, got {type(v).__name__} {v!r}", where=key)
    return v


def build_job(params: dict, data_path: str | None = None) -> ChainJob:
    """Validate a flat param dict (defaults filled in) into the core's specs."""
    _check_keys(params)
    if params.get("ticket") is not None:
        build_ticket_job(params, data_path)  # a ticket job validates its own keys and source
    p = {**DEFAULTS, **params}
    from ltvl.vl.models.presets import get_preset
    from ltvl.vl.tasks import TASK_DESCRIPTIONS
    if p["task"] not in TASK_DESCRIPTIONS:
        close = difflib.get_close_matches(str(p["task"]), TASK_DESCRIPTIONS, n=1)
        raise LtvlError(f"unknown task {p['task']!r}", where="task",
                        fix=(f"did you mean {close[0]!r}? " if close else "") + f"known: {', '.join(TASK_DESCRIPTIONS)}")
    get_preset(p["preset"])  # an unknown preset fails here, with the closest name
    data = data_for(p)
    if data.startswith("synthetic:") and data.removeprefix("synthetic:") not in TASK_DESCRIPTIONS:
        raise LtvlError(f"data {data!r} names no task", where="data",
                        fix=f"synthetic:<task> with a task of {', '.join(TASK_DESCRIPTIONS)}, or synthetic:{{task}}")
    steps = _typed(p, "steps", int)
    rewind = _typed(p, "rewind_step", int)
    if p["rewind_fraction"] is not None:
        frac = _typed(p, "rewind_fraction", float)
        if not 0 <= frac < 1:
            raise LtvlError(f"rewind_fraction {frac} outside [0, 1)", where="rewind_fraction")
        rewind = int(frac * steps)
    if p["adv_use"] not in ("off", "imp", "finetune", "both"):
        raise LtvlError(f"unknown adv_use {p['adv_use']!r}", where="adv_use", fix="off, imp, finetune or both")
    adv = AdvConfig(enabled=p["adv_use"] != "off", modality=p["adv_modality"],
                    epsilon=_typed(p, "adv_epsilon", float), step_size=_typed(p, "adv_step_size", float),
                    steps=_typed(p, "adv_steps", int), kl_weight=_typed(p, "adv_kl", float))
    adv.validate("adv", sep="_")
    train = TrainConfig(steps=steps, lr=_typed(p, "lr", float), batch_size=_typed(p, "batch_size", int),
                        weight_decay=_typed(p, "weight_decay", float), warmup_ratio=_typed(p, "warmup_ratio", float),
                        seed=_typed(p, "seed", int), amp=p["amp"],
                        adversarial=adv if p["adv_use"] in ("imp", "both") else AdvConfig())
    backbone = BackboneSpec(p["preset"], p["checkpoint"], _typed(p, "layers", int), _typed(p, "seed", int))
    vl = VLSpec(task=p["task"], data=data_path or data_for(p), backbone=backbone, max_len=_typed(p, "max_len", int),
                eval_limit=_typed(p, "eval_limit", int))
    try:
        method, scope = Method(p["method"]), p["scope"]
    except ValueError as e:
        raise LtvlError(f"unknown method {p['method']!r}", where="method", fix="magnitude, random or high_magnitude") from e
    context = tuple((k, data_for(p) if k == "data" else str(p[k]))
                    for k in ("task", "data", "preset", "layers", "checkpoint", "max_len", "eval_limit"))
    chain = ChainSpec(train=train, rewind_step=rewind,
                      schedule=Schedule(p["schedule"], _typed(p, "rate", float), p["target_sparsity"], p["rounds"]),
                      method=method, scope=scope, context=context,
                      finetune_adversarial=adv if p["adv_use"] in ("finetune", "both") else AdvConfig())
    chain.validate()
    return ChainJob(vl, chain, p)


def chain_spec(params: dict) -> ChainSpec:
    """The chain's spec as its worker will hash it (prunable set from the preset), without loading a model."""
    from ltvl.vl.models.presets import get_preset
    job = build_job(params, data_path="/unused")
    return with_prunable(job, get_preset(job.vl.backbone.preset).prunable).chain


@dataclass(frozen=True)
class TicketJob:
    target: ChainJob  # the task, data and recipe the tickets are trained with
    baseline: Baseline
    source: ChainSpec | None  # a chain whose pruned rounds give the masks …
    source_task: str
    masks: tuple[str, ...] = ()  # … or explicit mask files


def build_ticket_job(params: dict, data_path: str | None = None) -> TicketJob:
    """Validate a ticket job: ``ticket`` names the baseline, ``source`` the masks' origin."""
    _check_keys(params)
    try:
        baseline = Baseline(params.get("ticket"))
    except ValueError as e:
        raise LtvlError(f"unknown ticket baseline {params.get('ticket')!r}", where="ticket",
                        fix=", ".join(b.value for b in Baseline)) from e
    target = build_job({k: v for k, v in params.items() if k not in TICKET_KEYS}, data_path)
    src = params.get("source")
    if baseline is Baseline.THETA0_PRIME and not params.get("prime_checkpoint"):
        raise LtvlError("the theta0_prime baseline needs another checkpoint", where="prime_checkpoint",
                        fix="set prime_checkpoint to a .safetensors file (e.g. plain BERT weights)")
    if isinstance(src, dict):
        source_params = {k: v for k, v in src.items() if k not in TICKET_KEYS}
        return TicketJob(target, baseline, chain_spec(source_params), {**DEFAULTS, **source_params}["task"])
    if isinstance(src, (list, tuple)) and src and all(isinstance(m, str) for m in src):
        return TicketJob(target, baseline, None, "masks", tuple(src))
    raise LtvlError(f"ticket source must be a chain's params or a list of mask files, got {src!r}", where="source",
                    fix="e.g. source: {task: vqa, rewind_step: 0} or source: [a.mask.safetensors, …]")


def data_for(params: dict) -> str:
    """The dataset of a chain: ``data`` may name the task as ``{task}`` so one sweep spans tasks."""
    p = {**DEFAULTS, **params}
    return str(p["data"]).format(task=p["task"])


def with_prunable(job: ChainJob, prunable) -> ChainJob:
    return dataclasses.replace(job, chain=dataclasses.replace(job.chain, prunable=prunable))
