"""Baseline and transfer tickets over a finished chain's masks, one resumable round per mask.

For every pruned round of a source chain (or a given list of masks), a ticket chain re-trains
one (init, mask) pair of :mod:`ltvl.core.baselines` on a target task and evaluates it:

- same task, ``theta0_prime`` / ``theta0_shuffled`` / ``high_magnitude`` / ``random_init`` /
  ``random``: the paper's baselines at the IMP chain's sparsities (SPEC §3);
- another task, ``imp``: ticket transfer (the source mask on the target's θ0; θi is task-specific).

State lives in ``root/tickets/<spec hash16>/`` like a chain's: ``spec.json``, one record per
finished round, derived masks by hash, all written atomically; re-running replays.
Imports neither Ray nor MLflow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ltvl.core.baselines import Baseline, train_ticket
from ltvl.core.store import Record, Spec, SpecStore, read_record, write_record
from ltvl.core.train import TrainConfig, Trainer, derive_seed
from ltvl.pruning.maskfile import load_mask, save_mask
from ltvl.pruning.prunable import PrunableSpec
from ltvl.util.errors import LtvlError, require


@dataclass(frozen=True)
class SourceMask:
    round: int
    path: str
    sha256: str


@dataclass(frozen=True)
class TicketSpec(Spec):
    baseline: Baseline
    source: str  # the source chain's sha256, or "masks:<sha of the mask list>"
    source_task: str
    train: TrainConfig
    prunable: PrunableSpec
    context: tuple[tuple[str, str], ...]  # the target: task, data, backbone …
    prime: str = ""  # θ'0's checkpoint by content (theta0_prime): other weights are other tickets


class TicketStore(SpecStore):
    kind = "ticket"

    def __init__(self, root: str | Path, spec: TicketSpec, writer: bool = True):
        super().__init__(Path(root) / "tickets", spec, writer)

    def round_path(self, r: int) -> Path:
        return self.dir / "rounds" / f"{r:03d}.json"

    def mask_path(self, sha: str) -> Path:
        return self.dir / "masks" / f"{sha}.mask.safetensors"


@dataclass
class TicketRound(Record):
    ticket: str  # TicketSpec sha256
    round: int  # the source round whose mask this is
    baseline: str
    source: str
    source_task: str
    source_mask_sha256: str
    mask_sha256: str  # the mask actually trained (differs for random / high_magnitude)
    mask_path: str
    sparsity: float
    metrics: dict[str, float]
    train_loss: float
    wall_s: float
    steps_trained: int
    checks: dict | None = None  # the invariants measured on the trained ticket (ltvl.core.invariants)
    replayed: bool = False



def chain_masks(root: str | Path, source: Any) -> tuple[str, list[SourceMask]]:
    """The source chain's identity and its pruned rounds' masks (found by hash in ``root``)."""
    from ltvl.core.dense import DenseSpec, DenseStore
    from ltvl.core.imp import ChainStore
    store = ChainStore(root, source, writer=False)
    dense = DenseStore(root, DenseSpec.of(source), writer=False)
    out = [SourceMask(rec["round"], str(store.find_mask(rec["mask_sha256"], dense)), rec["mask_sha256"])
           for rec in store.finished_rounds() if rec["round"] > 0]
    if not out:
        raise LtvlError(f"source chain {store.dir} has no finished pruned rounds", where="source",
                        fix="run the source chain first (the sweep's chain stage runs before tickets)")
    return store.sha256, out


def run_ticket_chain(spec: TicketSpec, sources: list[SourceMask], model_factory: Callable[[], nn.Module],
                     trainer: Trainer, root: str | Path, reporter: Callable[[TicketRound], None] | None = None,
                     other_state: Mapping[str, torch.Tensor] | None = None, writer: bool = True,
                     agree: Callable[[Any], Any] = lambda v: v) -> list[TicketRound]:
    require(trainer.cfg == spec.train, "the trainer's TrainConfig differs from the ticket spec's", where="trainer")
    if Baseline(spec.baseline) is Baseline.THETA0_PRIME and other_state is None:
        raise LtvlError("the theta0_prime baseline needs another checkpoint", where="prime_checkpoint",
                        fix="set prime_checkpoint to a .safetensors file (e.g. plain BERT weights)")
    store = TicketStore(root, spec, writer)
    store.open()
    d = store.dir
    report = reporter or (lambda _r: None)
    done = agree({p.name for p in (d / "rounds").glob("*.json")} if (d / "rounds").exists() else set())
    out = []
    for src in sources:
        f = store.round_path(src.round)
        if f.name in done:
            res = TicketRound.from_record(read_record(f), f)
            res.mask_path = str(store.mask_path(res.mask_sha256))
            load_mask(res.mask_path)  # verify
        else:
            t0 = time.perf_counter()
            mask = load_mask(src.path)
            require(mask.sha256 == src.sha256, f"source mask {src.path} is not {src.sha256[:12]}", where="source")
            run = train_ticket(spec.baseline, mask, model_factory, trainer,
                               seed=derive_seed(spec.train.seed, "ticket", spec.baseline, src.round),
                               other_state=other_state, start_sha256=spec.prime or None)
            path = store.mask_path(run.mask.sha256)
            if writer and not path.exists():
                save_mask(run.mask, path)
            res = TicketRound(store.sha256, src.round, Baseline(spec.baseline).value, spec.source, spec.source_task,
                              src.sha256, run.mask.sha256, str(path), run.mask.sparsity, run.metrics,
                              run.train_loss, time.perf_counter() - t0, spec.train.steps, run.checks)
            if writer:
                write_record(f, res.record())
        out.append(res)
        report(res)
    return out
