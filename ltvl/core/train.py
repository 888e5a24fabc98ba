"""The training loop every IMP round, ticket evaluation and baseline shares.

Determinism is built in rather than bolted on: the batch and the dropout RNG of
optimizer step ``s`` are pure functions of (seed, s). So training from a rewind
point θi reproduces exactly the steps a dense run would have taken from there, and
a crashed round re-run from its start gives bit-identical weights on CPU.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import get_linear_schedule_with_warmup

from ltvl.core.adversarial import AdvConfig, adversarial_backward
from ltvl.core.identity import late_field
from ltvl.pruning.enforce import MaskEnforcer
from ltvl.util.atomic import atomic_write_bytes, sha256_bytes
from ltvl.util.errors import LtvlError, require

ADAMW_IMPLS = ("reference", "fused")
# Flags that choose an optimizer's kernels, not its numbers: kept out of saved optimizer state,
# so that θi's bytes (and sha256) do not depend on them and the loading run's config decides.
_KERNEL_FLAGS = ("foreach", "fused")


@dataclass(frozen=True)
class TrainConfig:
    # Identity anchors: a store's hash covers only fields that differ from these defaults, so they are
    # never changed. Users never see them: the defaults users get are the parameter schema's
    # (ltvl/params/schema.py, docs/reference/parameters.md), which resolve_chain passes in full.
    steps: int = 300  # t: optimizer steps per training run
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    batch_size: int = 32
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    amp: Literal["off", "bf16", "fp16"] = "off"
    seed: int = 0
    # How AdamW runs, not what it computes. "reference": torch's per-tensor update (as a multi-tensor
    # loop, which is bit-identical to it); every store before 2026-11-25 was trained this way.
    # "fused": one fused kernel per tensor, ~27% faster steps on a 2-core CPU, but it rounds
    # differently in the last bit, so it is part of the spec's identity and never mixes with the other.
    adamw_impl: Literal["reference", "fused"] = late_field("reference")
    adversarial: AdvConfig = AdvConfig()  # VILLA-style AT for every step of this training

    def validate(self, where: str = "train") -> None:
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}", where=f"{where}.steps")
        require(self.lr >= 0, f"lr must be >= 0, got {self.lr}", where=f"{where}.lr",
                fix="a positive learning rate (0 is allowed only as an untrainable control)")
        require(
            0 <= self.warmup_ratio < 1,
            f"warmup_ratio {self.warmup_ratio} outside [0, 1)",
            where=f"{where}.warmup_ratio",
        )
        require(self.batch_size >= 1, "batch_size must be >= 1", where=f"{where}.batch_size")
        require(self.grad_accum >= 1, "grad_accum must be >= 1", where=f"{where}.grad_accum")
        require(
            self.amp in ("off", "bf16", "fp16"),
            f"unknown amp mode {self.amp!r}",
            where=f"{where}.amp",
            fix="use off, bf16 or fp16",
        )
        require(
            self.adamw_impl in ADAMW_IMPLS,
            f"unknown adamw_impl {self.adamw_impl!r}",
            where=f"{where}.adamw_impl",
            fix=" or ".join(ADAMW_IMPLS),
        )
        self.adversarial.validate(f"{where}.adversarial")


class TrainTask(Protocol):
    """What the loop needs from a task: deterministic batches, a loss, an evaluation."""

    def batch(self, slot: int, batch_size: int, seed: int) -> Any: ...  # slot = step * grad_accum + micro

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor: ...

    def evaluate(self, model: nn.Module) -> dict[str, float]: ...  # must contain "metric"


def derive_seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little") & ((1 << 63) - 1)


def batch_indices(n: int, batch_size: int, slot: int, seed: int) -> torch.Tensor:
    """Indices of micro-batch number ``slot`` (step * grad_accum + micro): an epoch-wise seeded shuffle."""
    start = slot * batch_size
    idx = []
    while len(idx) < batch_size:
        epoch, offset = divmod(start + len(idx), n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, "epoch", epoch)))
        idx.extend(perm[offset : offset + batch_size - len(idx)].tolist())
    return torch.tensor(idx)


def to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


@dataclass
class RewindPoint:
    """θi with everything needed to continue as if never interrupted: weights, optimizer, LR schedule."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict
    scheduler: dict
    scaler: dict | None = None

    @classmethod
    def fine_tune_from(cls, model: dict[str, torch.Tensor]) -> RewindPoint:
        """Weights with a fresh optimizer at step 0: training from it runs the whole LR schedule again
        (prune + fine-tune with learning-rate rewinding)."""
        return cls(0, model, {}, {})

    @property
    def weights_only(self) -> bool:
        return not self.optimizer

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save(
            {
                "step": self.step,
                "model": self.model,
                "optimizer": self.optimizer,
                "scheduler": self.scheduler,
                "scaler": self.scaler,
            },
            buf,
        )
        return buf.getvalue()

    def save(self, path: str | os.PathLike) -> str:
        """Atomic write; returns the sha256 of the file, which is how chains reference θi."""
        data = self.to_bytes()
        atomic_write_bytes(path, data)
        return sha256_bytes(data)

    @classmethod
    def load(cls, path: str | os.PathLike, expect_sha256: str | None = None) -> RewindPoint:
        data = open(path, "rb").read()
        if expect_sha256 is not None and sha256_bytes(data) != expect_sha256:
            raise LtvlError(
                f"rewind point hash mismatch (expected {expect_sha256[:12]}…)",
                where=str(path),
                fix=f"the file is damaged: delete it and {Path(path).with_suffix('.sha256').name} beside it; the "
                    "next run re-trains the dense run up to that step and recomputes θi bit-identically",
            )
        d = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)  # never unpickle code
        return cls(d["step"], d["model"], d["optimizer"], d["scheduler"], d.get("scaler"))


@dataclass
class TrainOutcome:
    steps_run: int
    mean_loss: float
    last_loss: float
    captured: dict[int, RewindPoint] = field(default_factory=dict)
    optimizer_state_masked: bool | None = None  # under a mask: its moments were zero where pruned at the end
    # floating-point operations of one optimizer step (forward + backward of every micro-batch, PGD's
    # extra passes included), counted by torch's FlopCounterMode on the first step; 0 when not counted
    flops_per_step: float = 0.0

    @property
    def flops(self) -> float:
        return self.steps_run * self.flops_per_step


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and norms (tensors with < 2 dims), as in BERT fine-tuning."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """Runs optimizer steps [start, until) of a task on a model, optionally under a mask."""

    def __init__(
        self,
        task: TrainTask,
        cfg: TrainConfig,
        device: str | torch.device = "cpu",
        on_step: Callable[[int, float], None] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        """``rank``/``world_size``: under DDP each rank draws its own micro-batches (slot interleaved
        by rank, so the global batch is world_size x batch_size) and the model is wrapped in
        DistributedDataParallel for the backward passes; masks and optimizer act on the bare module."""
        cfg.validate()
        if cfg.adversarial.active and not hasattr(task, "adversarial_parts"):
            raise LtvlError(
                f"{type(task).__name__} does not support adversarial training",
                where="train.adversarial",
                fix="use a VL task (ltvl.vl.assemble.build_vl), or set adversarial.enabled=false",
            )
        self.task, self.cfg, self.device, self.on_step = task, cfg, torch.device(device), on_step
        self.rank, self.world_size = rank, world_size

    def _kernel_flags(self) -> dict[str, bool | None]:
        if self.cfg.adamw_impl == "fused":
            return {"foreach": None, "fused": True}
        return {"foreach": True, "fused": None}  # bit-identical to the per-tensor loop (tests/test_training.py)

    def _optim(self, model: nn.Module):
        opt = torch.optim.AdamW(param_groups(model, self.cfg.weight_decay), lr=self.cfg.lr, **self._kernel_flags())
        warm = math.floor(self.cfg.warmup_ratio * self.cfg.steps)
        sched = get_linear_schedule_with_warmup(opt, warm, self.cfg.steps)
        return opt, sched

    def _autocast(self):
        if self.cfg.amp == "off":
            return nullcontext()
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def train(
        self,
        model: nn.Module,
        *,
        enforcer: MaskEnforcer | None = None,
        start: RewindPoint | None = None,
        until: int | None = None,
        capture_at: Iterable[int] = (),
    ) -> TrainOutcome:
        """Train to step ``until`` (default: cfg.steps), from ``start`` (θi) or from step 0.

        ``capture_at`` lists steps whose full state (weights + optimizer + schedule)
        is returned as :class:`RewindPoint` — how the dense round records θi.
        """
        cfg, until = self.cfg, self.cfg.steps if until is None else until
        model.to(self.device)
        opt, sched = self._optim(model)
        scaler = torch.amp.GradScaler(self.device.type) if cfg.amp == "fp16" else None
        step0 = 0
        if start is not None:
            model.load_state_dict(start.model)
            if not start.weights_only:
                # load_state_dict aliases same-device tensors: without the copy, training would
                # mutate θi's Adam moments in place and corrupt every later rewind to it.
                opt.load_state_dict(_cpu(start.optimizer))
                for group in opt.param_groups:  # loading restores the saved groups' flags: this run's config decides
                    group.update(self._kernel_flags())
                sched.load_state_dict(start.scheduler)
                if scaler is not None and start.scaler:
                    scaler.load_state_dict(start.scaler)
            step0 = start.step
        require(
            0 <= step0 <= until <= cfg.steps,
            f"cannot train steps [{step0}, {until}) of a {cfg.steps}-step run",
            where="until",
            fix="rewind steps must be < train steps",
        )
        if enforcer is not None:
            enforcer.apply_()
            enforcer.attach(opt)
        capture = set(capture_at)
        captured: dict[int, RewindPoint] = {}
        net = model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        def snap(step: int) -> None:
            captured[step] = RewindPoint(
                step,
                {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
                _without_kernel_flags(_cpu(opt.state_dict())),
                sched.state_dict(),
                scaler.state_dict() if scaler is not None else None,
            )

        if step0 in capture:
            snap(step0)
        losses: list[float] = []
        model.train()
        batches = self._batches(step0, until)
        flops_per_step = 0.0
        for step in range(step0, until):
            torch.manual_seed(derive_seed(cfg.seed, "step", step))  # dropout = f(seed, step)
            opt.zero_grad(set_to_none=True)
            total = 0.0
            # the first step's forward and backward passes are counted (not timed): the cost unit of a run;
            # under DDP the count is skipped (collectives run inside backward hooks)
            counter = FlopCounterMode(display=False) if step == step0 and self.world_size == 1 else nullcontext()
            with counter:
                for micro in range(cfg.grad_accum):
                    batch = to_device(next(batches), self.device)
                    if cfg.adversarial.active:
                        total += self._adversarial_micro_step(net, batch, scaler, step, micro)
                        continue
                    with self._autocast():
                        loss = self.task.loss(net, batch) / cfg.grad_accum
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                    total += float(loss.detach())
            if isinstance(counter, FlopCounterMode):
                flops_per_step = float(counter.get_total_flops())
            if not math.isfinite(total) and scaler is None:
                raise FloatingPointError(f"loss became {total} at step {step}: lower the lr or enable grad clipping "
                                         "(datasets are checked for nan/inf inputs before training)")
            if scaler is not None:
                scaler.unscale_(opt)
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            losses.append(total)
            if self.on_step is not None:
                self.on_step(step + 1, total)
            if step + 1 in capture:
                snap(step + 1)
        batches.close()  # stops the loader's workers
        state_masked = None
        if enforcer is not None:
            state_masked = enforcer.state_masked(opt)
            enforcer.remove_optimizer_hooks()
        n = len(losses)
        return TrainOutcome(n, sum(losses) / n if n else float("nan"), losses[-1] if n else float("nan"), captured,
                            state_masked, flops_per_step)

    def _batches(self, step0: int, until: int) -> Iterator[Any]:
        """Micro-batches of steps [step0, until): slot = (step * grad_accum + micro) * world_size + rank.
        A task with ``batches`` builds them ahead (loader workers); otherwise one ``batch`` per slot."""
        cfg = self.cfg
        slots = [(step * cfg.grad_accum + micro) * self.world_size + self.rank
                 for step in range(step0, until) for micro in range(cfg.grad_accum)]
        if hasattr(self.task, "batches"):
            yield from self.task.batches(slots, cfg.batch_size, cfg.seed)
        else:
            yield from (self.task.batch(s, cfg.batch_size, cfg.seed) for s in slots)

    def _adversarial_micro_step(self, model: nn.Module, batch: Any, scaler, step: int, micro: int) -> float:
        forward, criterion, kl_view = self.task.adversarial_parts(model, batch)

        def fwd(**deltas):
            with self._autocast():
                return forward(**deltas)

        def crit(out):
            with self._autocast():
                return criterion(out)

        gen = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "adv", step, micro))
        stats = adversarial_backward(
            fwd,
            crit,
            self.cfg.adversarial,
            1.0 / self.cfg.grad_accum,
            gen,
            kl_view,
            backward=(lambda t: scaler.scale(t).backward()) if scaler else torch.Tensor.backward,
        )
        return stats["loss"] / self.cfg.grad_accum

    @torch.no_grad()
    def calibrate(self, model: nn.Module, examples: int) -> None:
        """The task's forward passes over its first ``examples`` training examples, for pruning that
        reads activations (:mod:`ltvl.pruning.calibration` hooks them). The slots are 0, 1, … on every
        DDP rank, so every rank sees the same batches and prunes the same weights."""
        cfg = self.cfg
        slots = list(range(-(-examples // cfg.batch_size)))
        model.to(self.device)
        batches = (self.task.batches(slots, cfg.batch_size, cfg.seed) if hasattr(self.task, "batches")
                   else (self.task.batch(s, cfg.batch_size, cfg.seed) for s in slots))
        for batch in batches:
            with self._autocast():
                self.task.loss(model, to_device(batch, self.device))
        if hasattr(batches, "close"):
            batches.close()

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        model.to(self.device).eval()
        with self._autocast():
            out = self.task.evaluate(model)
        model.train()
        require("metric" in out, "task.evaluate() must return a 'metric' entry", where=type(self.task).__name__)
        return out


def _without_kernel_flags(state: dict) -> dict:
    """An optimizer state dict as the reference implementation saves it (flags unset)."""
    groups = [{**g, **{k: None for k in _KERNEL_FLAGS if k in g}} for g in state["param_groups"]]
    return {**state, "param_groups": groups}


def _cpu(obj: Any) -> Any:
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    return obj
