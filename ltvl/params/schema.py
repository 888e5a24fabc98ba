"""The one declaration of a chain's parameters.

Each field of :class:`ChainParams` carries its default, help, type, allowed values or range, and
its **role**: which identity it belongs to. Everything else is generated from here: the defaults,
the one checker, ``ltvl imp``'s options, the MLflow params, the report's recipe keys. Adding a
parameter is one field here (plus wiring it into the core where it acts, and a test).

Roles:
- ``dense``: changes the dense run, so every chain that shares it (task, data, recipe, …);
- ``chain``: changes the chain (rewinding, pruning) but never its dense run;
- ``ticket``: turns a job into a ticket chain over another chain's masks;
- ``none``: changes how a job runs, never what it computes (not part of any hash).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ltvl.util.errors import LtvlError

DENSE, CHAIN, TICKET, NONE = "dense", "chain", "ticket", "none"


@dataclass(frozen=True)
class ParamInfo:
    type: type | tuple[type, ...]  # int, float, str, bool; (dict, list) for a ticket's source
    help: str
    role: str
    nullable: bool = False
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None  # a callable is looked up lazily
    low: float | None = None  # inclusive unless low_open
    high: float | None = None  # inclusive unless high_open
    low_open: bool = False
    high_open: bool = False
    limit: int | None = None  # above this, ask for override_limits: a likely typo, or weeks of compute
    recipe: bool = False  # two chains are comparable in a report only if these agree
    context: bool = False  # part of the run context the core hashes (what the dense run trains on)
    keywords: tuple[str, ...] = ()  # words accepted besides values of ``type`` (e.g. layers: preset)

    def allowed(self) -> tuple[str, ...] | None:
        return self.choices() if callable(self.choices) else self.choices


def param(default: Any, help: str, role: str, type: type | tuple[type, ...] | None = None, **info: Any) -> Any:
    return field(default=default, metadata={"param": ParamInfo(type or type_of(default), help, role, **info)})


type_of = type  # `type` is shadowed by param()'s argument of that name


def _tasks() -> tuple[str, ...]:
    from ltvl.vl.tasks import TASK_DESCRIPTIONS
    return tuple(TASK_DESCRIPTIONS)


def _presets() -> tuple[str, ...]:
    from ltvl.vl.models.presets import PRESETS
    return tuple(PRESETS)


def _poolings() -> tuple[str, ...]:
    from ltvl.vl.models.base import POOLINGS
    return POOLINGS


def _methods() -> tuple[str, ...]:
    from ltvl.pruning.methods import METHODS
    return tuple(METHODS)


def _baselines() -> tuple[str, ...]:
    from ltvl.core.baselines import Baseline
    return tuple(b.value for b in Baseline)


RANDOM_INIT = "random"  # checkpoint: random — a base preset without pre-trained weights, on purpose
LAYERS_PRESET = "preset"  # `layers` left to the preset: 2 for minilm/tiny (CPU speed), all for base presets
MAX_STEPS = 1_000_000  # UNITER's longest public recipe is 300k steps
MAX_ROUNDS = 100  # 0.9 ** 100 keeps 0.003% of the weights: past this a rate is almost surely a typo


@dataclass(frozen=True)
class ChainParams:
    """A chain job's parameters, typed and checked (see :func:`check`). Flat on purpose: this is
    what a sweep's grid varies and what MLflow shows as params."""

    # what to train
    task: str = param("vqa", "VL task (see `ltvl list`)", DENSE, choices=_tasks, context=True)
    data: str = param("easy-vqa", "dataset directory or URI (s3://, gs://, file://), `easy-vqa`, or "
                      "`synthetic:<task>`; `{task}` is filled in",
                      DENSE, recipe=True, context=True)
    preset: str = param("minilm", "backbone preset (see `ltvl list`)", DENSE, choices=_presets, recipe=True,
                        context=True)
    layers: int | str | None = param(LAYERS_PRESET, "keep only the first N encoder layers; null = all; `preset` = "
                                     "the preset's own depth (minilm and the tiny presets: 2, for CPU speed; base "
                                     "presets: all)", DENSE, int, nullable=True, low=1, recipe=True, context=True,
                                     keywords=(LAYERS_PRESET,))
    checkpoint: str | None = param(None, "backbone weights for base presets: UNITER's .pt, a transformers directory "
                                   "(BERT, LXMERT, ViLT; .safetensors or .bin), airsplay's *_LXRT.pth, or a directory "
                                   "of `ltvl ticket export` (verified; its tokenizer too); identified by its content; "
                                   "`random` = a base preset from its seeded random init",
                                   DENSE, str, nullable=True, recipe=True, context=True, keywords=(RANDOM_INIT,))
    tokenizer: str | None = param(None, "tokenizer directory (vocab.txt); default: the one beside the checkpoint, or "
                                  "bert-base-uncased (MiniLM's copy) for models with that vocabulary", DENSE, str,
                                  nullable=True, recipe=True, context=True)
    custom_size: bool = param(False, "the checkpoint is deliberately not the preset's published size (layers, hidden, "
                              "heads, positions): skip that check", NONE)
    allow_missing: str | None = param(None, "regex of backbone tensors the checkpoint may lack (they start from the "
                                      "seeded random init); any other missing tensor is an error", DENSE, str,
                                      nullable=True, recipe=True, context=True)
    pooling: str = param("cls", "what the answer head reads (UNITER-style presets): the [CLS] state, or cls+image: "
                         "[CLS] plus the mean image state, a direct path from the image", DENSE,
                         choices=_poolings, recipe=True, context=True)
    max_len: int = param(16, "text tokens per example", DENSE, low=1, recipe=True, context=True)
    eval_limit: int | None = param(2000, "evaluate on the first N test examples; null = all", DENSE, int,
                                   nullable=True, low=1, recipe=True, context=True)
    # training recipe: t steps per round
    steps: int = param(200, "training steps t per round", DENSE, low=1, limit=MAX_STEPS, recipe=True)
    lr: float = param(1e-4, "peak learning rate (AdamW, linear warm-up and decay); 0 trains nothing (a control)",
                      DENSE, low=0)
    batch_size: int = param(32, "examples per optimizer step", DENSE, low=1, limit=65536, recipe=True)
    weight_decay: float = param(0.01, "AdamW weight decay", DENSE, low=0)
    warmup_ratio: float = param(0.1, "fraction of steps spent warming up the learning rate", DENSE, low=0, high=1,
                                high_open=True)
    seed: int = param(0, "seed of batches, dropout, heads and random masks", DENSE, low=0)
    amp: str = param("off", "mixed precision", DENSE, choices=("off", "bf16", "fp16"))
    adamw_impl: str = param("reference", "AdamW's kernels: reference (torch's per-tensor update; every store before "
                            "2026-11-25) or fused (~27% faster steps on CPU, rounds differently in the last bit, "
                            "so a different dense run)", DENSE, choices=("reference", "fused"))
    # IMP (SPEC §2)
    rewind_step: int = param(0, "rewind step i (0 = θ0)", CHAIN, low=0)
    rewind_fraction: float | None = param(None, "rewind to this fraction of steps instead of rewind_step", CHAIN,
                                          float, nullable=True, low=0, high=1, high_open=True)
    schedule: str = param("geometric", "geometric (rate of the remaining), linear (rate of the original), "
                          "adaptive: search the geometric levels for the sparsest ticket keeping `keep` of dense "
                          "(jumps of `jump` levels, then bisection; each try a round), one_shot: prune the "
                          "trained dense model to target_sparsity in one round and rewind (the one-shot ticket), "
                          "or gradual: one round that starts dense and ramps the sparsity to target_sparsity "
                          "while it trains (GMP, Zhu & Gupta's cubic schedule); one_shot and gradual use no rate",
                          CHAIN,
                          choices=("geometric", "linear", "adaptive", "one_shot", "gradual"))
    rate: float = param(0.5, "pruning rate per round", CHAIN, low=0, high=1, low_open=True, high_open=True)
    target_sparsity: float | None = param(0.9, "stop once this sparsity is reached", CHAIN, float, nullable=True,
                                          low=0, high=1, low_open=True, high_open=True)
    rounds: int | None = param(None, "stop after this many pruning rounds (instead of target_sparsity)", CHAIN,
                               int, nullable=True, low=1, limit=MAX_ROUNDS)
    jump: int = param(4, "adaptive: levels per jump while tickets keep `keep` of dense (1 = every level, stopping "
                      "at the first below: IMP with early abandonment)", CHAIN, low=1)
    keep: float = param(0.99, "adaptive: a ticket keeps p when its metric >= keep x the dense metric", CHAIN,
                        low=0, high=1, low_open=True)
    start_level: int | None = param(None, "adaptive: cap the jumps at this level (another seed's answer), try the "
                                    "one above, then go on", CHAIN, int, nullable=True, low=1)
    masks_of_seed: int | None = param(None, "adaptive, with start_level: prune nothing, take every try's mask from "
                                      "this seed's settled chain of the same recipe and walk one level at a time "
                                      "from start_level (a sweep's share_masks sets it)", CHAIN, int, nullable=True,
                                      low=0)
    method: str = param("magnitude", "magnitude (IMP), random (RP), high_magnitude, wanda, sparsegpt, or all: the "
                        "100%-sparse control (one round, every prunable weight pruned, the rest trained)", CHAIN,
                        choices=_methods)
    scope: str = param("global", "prune across all tensors (global), each tensor alike (layerwise) or each output "
                       "row alike (row: Wanda's comparison group, and wanda's default when scope is not given; "
                       "sparsegpt's is layerwise)",
                       CHAIN, choices=("global", "layerwise", "row"))
    calibration_examples: int = param(128, "wanda, sparsegpt: training examples whose activations each prune reads "
                                      "(their 128 calibration sequences); unused by other methods", CHAIN, low=1,
                                      limit=65536)
    retrain: str = param("rewind", "how a pruned round trains: rewind (m ⊙ θi from step i: the lottery ticket) or "
                         "finetune (m ⊙ the weights it pruned, from step 0 with a fresh optimizer and the whole LR "
                         "schedule; with schedule: one_shot this is prune + fine-tune from θT)", CHAIN,
                         choices=("rewind", "finetune"))
    # adversarial training (SPEC §4): imp = AT-IMP, finetune = AT on each round's ticket, both
    adv_use: str = param("off", "off, imp (AT-IMP), finetune (AT on each round's ticket) or both", DENSE,
                         choices=("off", "imp", "finetune", "both"))
    adv_modality: str = param("both", "perturb text, image or both embeddings", DENSE,
                              choices=("text", "image", "both"))
    adv_epsilon: float = param(0.0, "Frobenius radius per example (0 = unbounded)", DENSE, low=0)
    adv_step_size: float = param(1e-3, "PGD step size η", DENSE, low=0)
    adv_steps: int = param(3, "PGD steps K", DENSE, low=0, limit=100)
    adv_kl: float = param(1.5, "KL weight α", DENSE, low=0)
    # tickets: re-train every pruned round's mask of `source` with baseline `ticket` on this task
    ticket: str | None = param(None, "baseline to train on another chain's masks", TICKET, str, nullable=True,
                               choices=_baselines)
    source: Any = param(None, "the masks' chain (its params), or a list of mask files or directories of "
                              "`ltvl ticket export` (verified)", TICKET, (dict, list),
                        nullable=True)
    prime_checkpoint: str | None = param(None, "θ'0's weights, for ticket theta0_prime: a BERT checkpoint (loaded into "
                                         "the encoder by BERT's names) or one of the preset's own model; identified "
                                         "by its content", TICKET, str, nullable=True)
    # how to run, not what
    override_limits: bool = param(False, f"allow steps > {MAX_STEPS:,} or more than {MAX_ROUNDS} rounds", NONE)
    loader_workers: int | None = param(None, "data-loader worker processes per trainer; null = auto (0 on CPU, up "
                                       "to 4 beside a GPU); batches are identical either way", NONE, int,
                                       nullable=True, low=0, high=64)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def non_default(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if v != DEFAULTS[k]}


def infos() -> dict[str, ParamInfo]:
    return {f.name: f.metadata["param"] for f in dataclasses.fields(ChainParams)}


DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(ChainParams)}
INFO = infos()
RECIPE_KEYS = tuple(k for k, i in INFO.items() if i.recipe)
CONTEXT_KEYS = tuple(k for k, i in INFO.items() if i.context)
TICKET_KEYS = tuple(k for k, i in INFO.items() if i.role == TICKET)


def unknown_key(key: str, where: str) -> LtvlError:
    close = difflib.get_close_matches(key, DEFAULTS, n=1)
    return LtvlError(f"unknown chain parameter {key!r}", where=where,
                     fix=(f"did you mean {close[0]!r}? " if close else "") + "see docs/reference/parameters.md")


def _type_name(t: type | tuple[type, ...]) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def check_value(name: str, value: Any, where: str) -> Any:
    """One parameter's value, type- and range-checked; ints are accepted where floats are wanted."""
    info = INFO[name]
    if isinstance(value, str) and value in info.keywords:
        return value
    if value is None:
        if info.nullable:
            return None
        raise LtvlError(f"{where} must be set (a {_type_name(info.type)})", where=where,
                        fix=f"e.g. {name}: {DEFAULTS[name]!r}")
    want = info.type
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    is_bool_mismatch = isinstance(value, bool) and want is not bool
    if is_bool_mismatch or not isinstance(value, want):
        hint = " (write numbers like 1.0e-4 or 1e-4; quotes make a string)" if want in (int, float) else ""
        words = f" or one of {', '.join(repr(w) for w in info.keywords)}" if info.keywords else ""
        raise LtvlError(f"{where} must be {_type_name(want)}{words}, got {type(value).__name__} {value!r}{hint}",
                        where=where, fix=f"e.g. {name}: {DEFAULTS[name]!r}" if DEFAULTS[name] is not None else None)
    if isinstance(value, float) and not math.isfinite(value):
        raise LtvlError(f"{where} must be a finite number, got {value!r}", where=where)
    allowed = info.allowed()
    if allowed is not None and value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        raise LtvlError(f"unknown {name} {value!r}", where=where,
                        fix=(f"did you mean {close[0]!r}? " if close else "") + f"one of: {', '.join(allowed)}")
    if info.low is not None and (value < info.low or (info.low_open and value == info.low)):
        raise LtvlError(f"{where} = {value!r} is below its range ({_range(info)})", where=where)
    if info.high is not None and (value > info.high or (info.high_open and value == info.high)):
        raise LtvlError(f"{where} = {value!r} is above its range ({_range(info)})", where=where)
    return value


def _range(info: ParamInfo) -> str:
    lo = "-inf" if info.low is None else f"{info.low:g}"
    hi = "inf" if info.high is None else f"{info.high:g}"
    return f"{'(' if info.low_open else '['}{lo}, {hi}{')' if info.high_open or info.high is None else ']'}"


def check(raw: Mapping[str, Any], where: str = "params") -> ChainParams:
    """A raw mapping (YAML, a Tune config, CLI options) as typed :class:`ChainParams`. Every key is
    known, every value has its type and range, limits need ``override_limits``."""
    if not isinstance(raw, Mapping):
        raise LtvlError(f"{where} must be a mapping of chain parameters, got {type(raw).__name__}", where=where)
    values = {}
    for key, value in raw.items():
        if key not in DEFAULTS:
            raise unknown_key(key, f"{where}.{key}")
        values[key] = check_value(key, value, f"{where}.{key}")
    p = ChainParams(**values)
    if not p.override_limits:
        for name, info in INFO.items():
            v = getattr(p, name)
            if info.limit is not None and isinstance(v, int) and v > info.limit:
                raise LtvlError(f"{where}.{name} = {v:,} is beyond the limit {info.limit:,}", where=f"{where}.{name}",
                                fix=f"if you mean it, set {where}.override_limits: true")
    return p
