"""The shared dense prefix: one dense training serves every chain that differs only in how it prunes.

Round 0 of an IMP chain trains the dense model from θ0 for t steps. That run depends on the
training recipe, the prunable set and the run context (task, data, backbone), and on nothing
else: rewind step, pruning rate, schedule and method do not touch it. So chains that share
those inputs share one dense run, which captures θi for *every* rewind step they need.

Layout (``root/dense/<hash16>/``, :mod:`ltvl.core.store`), every file written atomically and
referenced by sha256:

- ``spec.json``: the dense key (train, prunable, context)
- ``record.json``: dense metrics, train loss, wall time, the final weights' sha256
- ``final.safetensors``: the trained prunable weights (the first prune reads these)
- ``theta/<step>.pt`` + ``theta/<step>.sha256``: θi per rewind step, one file per step, so two
  writers adding different steps never race on a shared index
- ``first/<method>-<scope>-<sparsity>-<seed>.sha256`` + ``masks/<sha>.mask.safetensors``: the
  first pruned mask per pruning rate, shared by every chain with that rate

A missing θi is added by training from θ0 only up to that step: batches and dropout are pure
functions of (seed, step), so the result is bit-identical to capturing it in the first run.
Imports neither Ray nor MLflow.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ltvl.core.identity import FORMAT
from ltvl.core.store import Spec, SpecStore, read_record, record_from, write_record
from ltvl.core.train import RewindPoint, TrainConfig
from ltvl.pruning.mask import Mask
from ltvl.pruning.maskfile import load_mask, save_mask
from ltvl.pruning.methods import get_method
from ltvl.pruning.prunable import PrunableSpec, select_prunable
from ltvl.pruning.prune import Scope, prune_to_sparsity
from ltvl.util.atomic import atomic_write_bytes, atomic_write_text, sha256_bytes
from ltvl.util.errors import LtvlError


@dataclass(frozen=True)
class DenseSpec(Spec):
    """What determines the dense run, and nothing more."""

    train: TrainConfig
    prunable: PrunableSpec
    context: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, chain_spec: Any) -> DenseSpec:
        return cls(chain_spec.train, chain_spec.prunable, chain_spec.context)


@dataclass
class DenseRecord:
    dense: str  # DenseSpec sha256
    metrics: dict[str, float]
    train_loss: float
    wall_s: float
    steps: int
    final_sha256: str
    names: list[str]  # prunable tensors in model order: a mask's hash depends on it, safetensors sorts
    # the dataset's content (its manifest's sha256) it was trained on; "" in older records. The
    # store is keyed by params, and a directory's files can change under the same path.
    data_sha256: str = ""
    flops_per_step: float = 0.0  # one optimizer step's counted FLOPs (TrainOutcome.flops_per_step); 0 in older records

    def check_data(self, data_sha256: str, where: str) -> None:
        """Refuse to replay a dense run (and every chain grown from it) on other data."""
        if self.data_sha256 and data_sha256 and self.data_sha256 != data_sha256:
            raise LtvlError(
                f"the stored dense run was trained on data with content sha256 {self.data_sha256[:12]}…, but this "
                f"run's data has content {data_sha256[:12]}…: the dataset changed under the same path",
                where=where, fix="stores are keyed by params, not by data: write the new data to a new directory "
                "(or give the sweep another root), or delete this dense directory and the chains grown from it")


@dataclass
class DenseOutcome:
    """The dense run as this process sees it. Tensors computed here are kept in memory, because a
    non-writing DDP rank must not wait for rank 0's files."""

    record: DenseRecord
    steps_trained: int  # optimizer steps this call executed (0 when everything was on disk)
    store: DenseStore
    thetas: dict[int, RewindPoint] = dataclasses.field(default_factory=dict)
    final: dict[str, torch.Tensor] | None = None

    def theta(self, step: int) -> RewindPoint:
        return self.thetas[step] if step in self.thetas else self.store.get_theta(step)

    def final_weights(self) -> dict[str, torch.Tensor]:
        if self.final is None:
            self.final = self.store.final_weights(self.record)
        return self.final


class DenseStore(SpecStore):
    kind = "dense"

    def __init__(self, root: str | Path, spec: DenseSpec, writer: bool = True):
        super().__init__(Path(root) / "dense", spec, writer)

    # --- the dense run's result -------------------------------------------------------------
    def record(self) -> DenseRecord | None:
        f = self.dir / "record.json"
        if not f.exists():
            return None
        return record_from(DenseRecord, f, {k: v for k, v in read_record(f).items() if k != "format"})

    def put_result(self, rec: DenseRecord, final_bytes: bytes) -> None:
        if self.writer:
            atomic_write_bytes(self.dir / "final.safetensors", final_bytes)  # before the record that names it
            write_record(self.dir / "record.json", {"format": FORMAT, **dataclasses.asdict(rec)})

    def final_weights(self, rec: DenseRecord) -> dict[str, torch.Tensor]:
        data = (self.dir / "final.safetensors").read_bytes()
        if sha256_bytes(data) != rec.final_sha256:
            raise LtvlError("dense final weights do not match their recorded sha256", where=str(self.dir),
                            fix="the file is damaged; delete this dense directory to retrain it")
        tensors = st_load(data)
        return {n: tensors[n] for n in rec.names}

    # --- θi per rewind step -----------------------------------------------------------------
    def theta_path(self, step: int) -> Path:
        return self.dir / "theta" / f"{step}.pt"

    def has_theta(self, step: int) -> bool:
        return (self.dir / "theta" / f"{step}.sha256").exists()

    def put_theta(self, point: RewindPoint) -> str:
        if not self.writer:
            return ""
        sha = point.save(self.theta_path(point.step))
        atomic_write_text(self.dir / "theta" / f"{point.step}.sha256", sha)  # after the file it names
        return sha

    def theta_sha(self, step: int) -> str:
        return (self.dir / "theta" / f"{step}.sha256").read_text().strip()

    def get_theta(self, step: int) -> RewindPoint:
        if not self.has_theta(step):
            raise LtvlError(f"θi for rewind step {step} is missing", where=str(self.dir),
                            fix="re-run: the dense stage recomputes a missing θi from its dense run")
        return RewindPoint.load(self.theta_path(step), self.theta_sha(step))

    # --- the first pruned mask, per pruning rate -----------------------------------------------
    def first_mask(self, final: Callable[[], dict[str, torch.Tensor]], dense_mask: Mask, sparsity: float,
                   method: str, scope: Scope, seed: int,
                   inputs: Callable[[], dict[str, torch.Tensor]] | None = None, calibration: int = 0,
                   ) -> tuple[Mask, Path]:
        """The mask after round 0 at ``sparsity``: read if a chain with this rate made it, else pruned now.
        ``inputs`` gives the trained dense model's calibration input norms, for a method that reads them
        (computed only when the mask is not stored yet); ``calibration`` examples are part of its key."""
        info = get_method(method)
        cal = f"-cal{calibration}" if info.needs_inputs else ""
        key = self.dir / "first" / f"{info.name}-{Scope(scope).value}-{sparsity:.8f}-{seed}{cal}.sha256"
        if key.exists():
            path = self.mask_path(key.read_text().strip())
            return load_mask(path), path
        mask = prune_to_sparsity(final(), dense_mask, sparsity, method=method, scope=scope, seed=seed,
                                 metadata={"round": 1, "dense": self.sha256},
                                 inputs=inputs() if info.needs_inputs and inputs is not None else None)
        path = self.mask_path(mask.sha256)
        if self.writer:
            if not path.exists():
                save_mask(mask, path)
            atomic_write_text(key, mask.sha256)
        return mask, path

    def mask_path(self, sha: str) -> Path:
        return self.dir / "masks" / f"{sha}.mask.safetensors"


TrainFn = Callable[..., Any]


def ensure_dense(store: DenseStore, rewind_steps: Iterable[int], model_factory: Callable[[], nn.Module],
                 train_fn: TrainFn, eval_fn: Callable[[nn.Module], dict],
                 agree: Callable[[Any], Any] = lambda v: v, data_sha256: str = "") -> DenseOutcome:
    """Make sure the dense run and θi for every step in ``rewind_steps`` are on disk; train only what is missing.

    ``agree`` makes every DDP rank act on rank 0's view of the store (another trial may be writing
    it), so all ranks train the same steps or none. ``data_sha256`` (the dataset's content hash)
    is recorded with a new dense run and must match a stored one's before it is replayed.
    """
    store.open()
    wanted = sorted(set(rewind_steps))
    if (known := store.record()) is not None:
        known.check_data(data_sha256, str(store.dir))
    have = agree({"record": known is not None, "theta": [s for s in wanted if store.has_theta(s)]})
    missing = [s for s in wanted if s not in have["theta"]]
    if have["record"] and not missing:
        return DenseOutcome(store.record() or _require_record(store), 0, store)
    model = model_factory()
    t0 = time.perf_counter()
    if have["record"]:  # only some θi are missing: replay the dense run up to the last of them
        out = train_fn(model, enforcer=None, start=None, until=max(missing), capture_at=missing)
        for s in missing:
            store.put_theta(out.captured[s])
        return DenseOutcome(store.record() or _require_record(store), out.steps_run, store, out.captured)
    out = train_fn(model, enforcer=None, start=None, capture_at=missing)
    for s in missing:
        store.put_theta(out.captured[s])
    metrics = eval_fn(model)
    names = list(select_prunable(model, store.spec.prunable))
    params = dict(model.named_parameters())
    final = {n: params[n].detach().cpu().contiguous() for n in names}
    final_bytes = st_save(final)
    rec = DenseRecord(dense=store.sha256, metrics=metrics, train_loss=out.mean_loss,
                      wall_s=time.perf_counter() - t0, steps=out.steps_run, final_sha256=sha256_bytes(final_bytes),
                      names=names, data_sha256=data_sha256, flops_per_step=out.flops_per_step)
    store.put_result(rec, final_bytes)
    return DenseOutcome(rec, out.steps_run, store, out.captured, final)


def _require_record(store: DenseStore) -> DenseRecord:
    raise LtvlError("the dense record vanished while adding θi", where=str(store.dir),
                    fix="another process deleted it; re-run")
