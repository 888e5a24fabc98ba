"""One IMP chain (SPEC §2, Algorithm 1) as a plain, resumable loop.

Round 0 trains the dense model from θ0 to step t, capturing θi on the way.
Every later round r trains ``m_r ⊙ θi`` from step i to t (optimizer and LR schedule
restored as at step i), evaluates, and prunes to the schedule's next sparsity.

State lives in ``root/<spec hash>/`` (open_lth-style): ``spec.json``, θi once
(``theta_i.pt``, referenced by sha256), content-addressed masks, and one JSON record
per finished round, each written atomically *after* the files it references.
Re-running the same spec replays finished rounds and recomputes only the rest;
because every step is a pure function of (seed, step), the result is bit-identical.
This module imports neither Ray nor MLflow: they observe via ``reporter``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ltvl.adversarial import AdvConfig
from ltvl.atomic import atomic_write_text
from ltvl.errors import LtvlError, require
from ltvl.pruning.enforce import MaskEnforcer
from ltvl.pruning.mask import Mask
from ltvl.pruning.maskfile import load_mask, save_mask
from ltvl.pruning.prunable import PrunableSpec, select_prunable
from ltvl.pruning.prune import Method, Scope, prune_to_sparsity
from ltvl.pruning.schedule import Schedule
from ltvl.train import RewindPoint, TrainConfig, TrainOutcome, Trainer, derive_seed


@dataclass(frozen=True)
class ChainSpec:
    """Everything that determines a chain's result; its hash names the chain."""

    train: TrainConfig = TrainConfig()
    rewind_step: int = 0  # i: 0 rewinds to θ0
    schedule: Schedule = Schedule()
    method: Method = Method.MAGNITUDE  # MAGNITUDE = IMP; RANDOM = iterative random pruning
    scope: Scope = Scope.GLOBAL
    prunable: PrunableSpec = PrunableSpec()
    context: tuple[tuple[str, str], ...] = ()  # task, backbone preset, …: whatever else defines the run
    # AT uses (SPEC §4): train.adversarial makes every training phase adversarial (AT-IMP);
    # finetune_adversarial additionally re-trains each round's ticket m ⊙ θi adversarially and
    # reports its metrics as ``finetune_metrics`` (the paper's "AT on tickets").
    finetune_adversarial: AdvConfig = AdvConfig()

    def validate(self) -> None:
        self.train.validate("train")
        self.finetune_adversarial.validate("finetune_adversarial")
        self.schedule.validate("schedule")
        require(0 <= self.rewind_step < self.train.steps,
                f"rewind step {self.rewind_step} is not in [0, train.steps={self.train.steps})",
                where="rewind_step", fix="rewind to a step before the end of training (0 = θ0)")
        Method(self.method), Scope(self.scope)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["method"], d["scope"] = Method(self.method).value, Scope(self.scope).value
        d["context"] = dict(self.context)
        return d

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    @property
    def short_hash(self) -> str:
        return self.sha256[:16]


@dataclass
class RoundResult:
    chain: str
    round: int
    sparsity: float
    mask_sha256: str
    parent_sha256: str | None
    metrics: dict[str, float]
    train_loss: float
    wall_s: float
    next_mask_sha256: str | None
    mask_path: str
    finetune_metrics: dict[str, float] | None = None  # AT fine-tuning of this round's ticket
    fully_pruned: list[str] = field(default_factory=list)  # tensors with nothing left (layer collapse)
    replayed: bool = False  # True when read back from disk on resume rather than computed now

    def record(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("replayed")
        return d


@dataclass
class ChainResult:
    spec: ChainSpec
    directory: Path
    rounds: list[RoundResult] = field(default_factory=list)

    @property
    def final_mask(self) -> Mask:
        return load_mask(self.rounds[-1].mask_path)


TrainFn = Callable[..., TrainOutcome]  # (model, *, enforcer, start, capture_at) -> TrainOutcome
EvalFn = Callable[[nn.Module], dict]
Reporter = Callable[[RoundResult], None]


class ChainStore:
    """The chain's directory: every write atomic, every read verified."""

    def __init__(self, root: str | Path, spec: ChainSpec, writer: bool = True):
        self.dir = Path(root) / spec.short_hash
        self.spec, self.writer = spec, writer

    def open(self) -> None:
        spec_file = self.dir / "spec.json"
        if spec_file.exists():
            on_disk = json.loads(spec_file.read_text())
            if on_disk != json.loads(json.dumps(self.spec.to_dict())):
                raise LtvlError("chain directory holds a different spec (hash prefix collision?)", where=str(self.dir),
                                fix="use a different root directory")
        elif self.writer:
            atomic_write_text(spec_file, json.dumps(self.spec.to_dict(), indent=2, sort_keys=True))

    def mask_path(self, sha: str) -> Path:
        return self.dir / "masks" / f"{sha}.mask.safetensors"

    def put_mask(self, mask: Mask) -> Path:
        path = self.mask_path(mask.sha256)
        if self.writer and not path.exists():
            save_mask(mask, path)
        return path

    def round_path(self, r: int) -> Path:
        return self.dir / "rounds" / f"{r:03d}.json"

    def finished_rounds(self) -> list[dict]:
        out = []
        r = 0
        while self.round_path(r).exists():
            out.append(json.loads(self.round_path(r).read_text()))
            r += 1
        return out

    def put_round(self, res: RoundResult) -> None:
        if self.writer:
            atomic_write_text(self.round_path(res.round), json.dumps(res.record(), indent=2, sort_keys=True))

    @property
    def theta_i_path(self) -> Path:
        return self.dir / "theta_i.pt"

    def put_theta_i(self, point: RewindPoint) -> None:
        if self.writer:
            atomic_write_text(self.dir / "theta_i.sha256", point.save(self.theta_i_path))

    def get_theta_i(self) -> RewindPoint:
        sha_file = self.dir / "theta_i.sha256"
        if not sha_file.exists() or not self.theta_i_path.exists():
            raise LtvlError("finished rounds exist but θi is missing", where=str(self.dir),
                            fix="delete the chain directory to recompute it")
        return RewindPoint.load(self.theta_i_path, sha_file.read_text().strip())


def run_chain(spec: ChainSpec, model_factory: Callable[[], nn.Module], train_fn: TrainFn, eval_fn: EvalFn,
              root: str | Path, reporter: Reporter | None = None, finetune_fn: TrainFn | None = None,
              writer: bool = True) -> ChainResult:
    """Run (or resume) one IMP chain. ``model_factory()`` must return θ0 deterministically.

    ``finetune_fn`` (needed when ``spec.finetune_adversarial`` is enabled) trains a copy of each
    round's ticket adversarially from θi; its evaluation becomes ``finetune_metrics``.
    ``writer=False`` (DDP ranks other than 0) computes everything but writes nothing: ranks hold
    identical replicas, so rank 0's files describe every rank.
    """
    spec.validate()
    if spec.finetune_adversarial.active and finetune_fn is None:
        raise LtvlError("finetune_adversarial is enabled but no finetune_fn was given", where="run_chain",
                        fix="use run_chain_with_trainer, which builds it")
    sparsities = [0.0] + spec.schedule.sparsities()
    store = ChainStore(root, spec, writer)
    store.open()
    result = ChainResult(spec, store.dir)
    report = reporter or (lambda _r: None)

    done = store.finished_rounds()
    for rec in done:
        res = RoundResult(**rec, replayed=True)
        load_mask(res.mask_path)  # verify: a finished round's mask must be intact
        result.rounds.append(res)
        report(res)
    if len(done) == len(sparsities):
        return result

    theta_i: RewindPoint | None = store.get_theta_i() if done else None
    mask: Mask | None = load_mask(store.mask_path(done[-1]["next_mask_sha256"])) if done else None
    for r in range(len(done), len(sparsities)):
        t0 = time.perf_counter()
        model = model_factory()
        names = list(select_prunable(model, spec.prunable))
        if mask is None:  # round 0: dense
            mask = Mask.dense_like({n: p for n, p in model.named_parameters() if n in names},
                                   metadata={"round": 0, "chain": spec.sha256})
        enforcer = MaskEnforcer(model, mask) if r > 0 else None
        out = train_fn(model, enforcer=enforcer, start=theta_i,
                       capture_at=[spec.rewind_step] if theta_i is None else [])
        if theta_i is None:
            theta_i = out.captured[spec.rewind_step]
            store.put_theta_i(theta_i)
        metrics = eval_fn(model)
        mask_path = store.put_mask(mask)
        next_mask = None
        if r + 1 < len(sparsities):
            params = dict(model.named_parameters())
            weights = {n: params[n].detach() for n in mask.names}
            next_mask = prune_to_sparsity(weights, mask, sparsities[r + 1], method=spec.method, scope=spec.scope,
                                          seed=derive_seed(spec.train.seed, "prune", r),
                                          metadata={"round": r + 1, "chain": spec.sha256})
            store.put_mask(next_mask)
        if enforcer is not None:
            enforcer.remove()
        finetuned = None
        if spec.finetune_adversarial.active and r > 0:
            ticket = model_factory()
            ticket_enforcer = MaskEnforcer(ticket, mask)
            finetune_fn(ticket, enforcer=ticket_enforcer, start=theta_i, capture_at=[])
            finetuned = eval_fn(ticket)
            ticket_enforcer.remove()
        res = RoundResult(chain=spec.sha256, round=r, sparsity=mask.sparsity, mask_sha256=mask.sha256,
                          parent_sha256=mask.parent, metrics=metrics, train_loss=out.mean_loss,
                          wall_s=time.perf_counter() - t0,
                          next_mask_sha256=next_mask.sha256 if next_mask else None, mask_path=str(mask_path),
                          finetune_metrics=finetuned,
                          fully_pruned=[n for n, t in mask.tensors.items() if not t.any()])
        store.put_round(res)
        result.rounds.append(res)
        report(res)
        mask = next_mask
    return result


def run_chain_with_trainer(spec: ChainSpec, model_factory: Callable[[], nn.Module], trainer: Trainer,
                           root: str | Path, reporter: Reporter | None = None) -> ChainResult:
    """Convenience: the chain driven by an :class:`ltvl.train.Trainer` (train + evaluate)."""
    require(trainer.cfg == spec.train, "the trainer's TrainConfig differs from the chain spec's",
            where="trainer", fix="build the Trainer from spec.train")
    finetune = None
    if spec.finetune_adversarial.active:
        finetune = Trainer(trainer.task, dataclasses.replace(spec.train, adversarial=spec.finetune_adversarial),
                           trainer.device).train
    return run_chain(spec, model_factory, trainer.train, trainer.evaluate, root, reporter, finetune)
