"""A chain's identity, results and store: what determines a chain (``ChainSpec``), what a round
produced (``RoundResult``) and the directory that holds it (``ChainStore``). Kept apart from the
loop that runs a chain (:mod:`ltvl.core.imp`), as :mod:`ltvl.core.dense` pairs the dense run's spec
and store, so the mask strategies can read a store without importing the loop."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ltvl.core.adversarial import AdvConfig
from ltvl.core.dense import DenseStore
from ltvl.core.store import DAMAGED_FIX, Record, Spec, SpecStore, read_record, write_record
from ltvl.core.train import RewindPoint, TrainConfig, TrainOutcome
from ltvl.pruning.mask import Mask
from ltvl.pruning.maskfile import load_mask, save_mask
from ltvl.pruning.methods import get_method
from ltvl.pruning.prunable import PrunableSpec
from ltvl.pruning.prune import Scope
from ltvl.pruning.schedule import Schedule
from ltvl.util.atomic import atomic_write_bytes, sha256_bytes
from ltvl.util.errors import LtvlError, require

RETRAIN = {"rewind": "train m ⊙ θi from step i (the lottery ticket)",
           "finetune": "train m ⊙ the pruned weights from step 0 with the whole LR schedule (prune + fine-tune)"}


@dataclass(frozen=True)
class ChainSpec(Spec):
    """Everything that determines a chain's result; the hash of its non-default fields names the chain."""

    # Identity anchors: a store's hash covers only fields that differ from these defaults, so they are
    # never changed. Users never see them: the defaults users get are the parameter schema's
    # (ltvl/params/schema.py, docs/reference/parameters.md), which resolve_chain passes in full.
    train: TrainConfig = TrainConfig()
    rewind_step: int = 0  # i: 0 rewinds to θ0
    schedule: Schedule = Schedule()
    method: str = "magnitude"  # a registered pruning method (ltvl.pruning.methods): magnitude = IMP, random = RP
    scope: Scope = Scope.GLOBAL
    prunable: PrunableSpec = PrunableSpec()
    context: tuple[tuple[str, str], ...] = ()  # task, backbone preset, …: whatever else defines the run
    # AT uses (SPEC §4): train.adversarial makes every training phase adversarial (AT-IMP);
    # finetune_adversarial additionally re-trains each round's ticket m ⊙ θi adversarially and
    # reports its metrics as ``finetune_metrics`` (the paper's "AT on tickets").
    finetune_adversarial: AdvConfig = AdvConfig()
    # How a pruned round starts (RETRAIN): "rewind" trains m ⊙ θi from step i (the lottery ticket);
    # "finetune" trains m ⊙ (the weights it pruned) from step 0 with a fresh optimizer and the whole
    # LR schedule (prune + fine-tune with learning-rate rewinding, Renda et al. 2020), so the first
    # pruned round starts from θT, the trained dense model.
    retrain: str = "rewind"
    # examples whose activations an activation-aware method (Wanda) reads before each prune: the
    # first training batches, as Wanda's 128 calibration sequences. Inert (and out of the hash) otherwise.
    calibration_examples: int = 128

    @property
    def finetunes(self) -> bool:
        return self.retrain == "finetune"

    @property
    def reads_inputs(self) -> bool:
        """Its pruning reads activations, so each prune calibrates the model it prunes."""
        return get_method(self.method).needs_inputs

    @property
    def dense_steps(self) -> tuple[int, ...]:
        """The dense run's steps whose full state this chain needs: its start, and θT when its first
        prune calibrates the trained dense model."""
        return tuple(sorted({self.start_step, *([self.train.steps] if self.reads_inputs else [])}))

    @property
    def start_step(self) -> int:
        """The dense run's step whose state a chain keeps (θi, or θT for a fine-tuning chain)."""
        return self.train.steps if self.finetunes else self.rewind_step

    @property
    def round_start_step(self) -> int:
        """The optimizer step a pruned round begins at: i when rewinding, 0 when fine-tuning."""
        return 0 if self.finetunes else self.rewind_step

    @property
    def steps_per_round(self) -> int:
        return self.train.steps - self.round_start_step

    @property
    def prunes_all(self) -> bool:
        """The 100%-sparse control: a method with no scores prunes every prunable weight."""
        return get_method(self.method).scores is None

    def sparsities(self) -> list[float]:
        """Sparsity after each pruning round. The 100%-sparse control (method ``all``) has one
        round at 1.0 whatever its schedule says."""
        return [1.0] if self.prunes_all else self.schedule.sparsities()

    def validate(self) -> None:
        self.train.validate("train")
        self.finetune_adversarial.validate("finetune_adversarial")
        self.schedule.validate("schedule")
        require(0 <= self.rewind_step < self.train.steps,
                f"rewind step {self.rewind_step} is not in [0, train.steps={self.train.steps})",
                where="rewind_step", fix="rewind to a step before the end of training (0 = θ0)")
        get_method(self.method), Scope(self.scope)
        require(self.retrain in RETRAIN, f"retrain {self.retrain!r} is not one of {', '.join(RETRAIN)}",
                where="retrain", fix="rewind (the lottery ticket) or finetune (prune + fine-tune the trained weights)")
        if self.finetunes:
            require(self.rewind_step == 0, f"rewind_step {self.rewind_step} means nothing to a fine-tuning chain: it "
                    "starts each round from the weights it pruned", where="rewind_step",
                    fix="leave rewind_step at 0 with retrain: finetune, or set retrain: rewind")
            require(not self.schedule.adaptive and not self.prunes_all,
                    "retrain: finetune works on a geometric, linear or one_shot schedule of a scored method",
                    where="retrain", fix="use retrain: rewind for an adaptive schedule or the 100%-sparse control")
        require(self.calibration_examples >= 1, f"calibration_examples {self.calibration_examples} is below 1",
                where="calibration_examples", fix="e.g. 128 (Wanda's default)")
        require(not (self.schedule.adaptive and self.reads_inputs),
                f"an adaptive schedule re-prunes earlier tries, whose activations are not kept: {self.method} "
                "cannot search levels", where="schedule", fix="use a geometric or one_shot schedule with this method")
        require(not (self.schedule.gradual and self.reads_inputs),
                f"a gradual schedule prunes while it trains, where {self.method} has no calibration pass",
                where="schedule", fix="use schedule: one_shot or geometric with this method")
        require(not (self.schedule.adaptive and self.prunes_all),
                "the 100%-sparse control has one round: it has no levels to search", where="schedule",
                fix="give the control (method: all) a geometric schedule")


@dataclass
class RoundResult(Record):
    chain_sha256: str  # the chain's identity (its store's hash)
    round: int
    sparsity: float
    mask_sha256: str
    parent_sha256: str | None
    metrics: dict[str, float]
    train_loss: float
    wall_s: float
    next_mask_sha256: str | None
    mask_path: str
    steps_trained: int = 0  # optimizer steps this round executed (0: replayed or taken from the shared dense run)
    train_flops: float = 0.0  # their counted FLOPs (steps x the first step's FlopCounterMode count)
    dense_sha256: str | None = None  # the shared dense run round 0 came from
    finetune_metrics: dict[str, float] | None = None  # AT fine-tuning of this round's ticket
    fully_pruned: list[str] = field(default_factory=list)  # tensors with nothing left (layer collapse)
    replayed: bool = False  # True when read back from disk on resume rather than computed now
    # schedule: adaptive (ltvl.core.adaptive): the try this round was, and what it decided
    level: int | None = None  # the schedule level tried (its sparsity); 0 for round 0
    parent_level: int | None = None  # the level whose trained weights were pruned to get this mask
    kept: bool | None = None  # metric >= keep x the dense metric
    next_level: int | None = None  # the level the next round tries (None: the answer is settled)
    checks: dict | None = None  # the invariants measured on this round's ticket (ltvl.core.invariants)
    weights_sha256: str | None = None  # a kept try's trained weights, for a later prune from this level;
    # with retrain: finetune, the round's whole trained state, which the next round starts from

    RENAMED = {"chain": "chain_sha256"}  # format 0 called the chain's hash ``chain``


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


class ChainStore(SpecStore):
    """The chain's directory: every write atomic, every read verified."""

    kind = "chain"

    def mask_path(self, sha: str) -> Path:
        return self.dir / "masks" / f"{sha}.mask.safetensors"

    def put_mask(self, mask: Mask) -> Path:
        path = self.mask_path(mask.sha256)
        if self.writer and not path.exists():
            save_mask(mask, path)
        return path

    def round_path(self, r: int) -> Path:
        return self.dir / "rounds" / f"{r:03d}.json"

    def weights_path(self, sha: str) -> Path:
        return self.dir / "weights" / f"{sha}.safetensors"

    def put_weights(self, weights: Mapping[str, torch.Tensor]) -> str:
        """A kept adaptive try's trained prunable weights, by content hash (written before any record names it)."""
        data = st_save({n: w.detach().to("cpu").contiguous() for n, w in weights.items()})
        sha = sha256_bytes(data)
        if self.writer and not self.weights_path(sha).exists():
            atomic_write_bytes(self.weights_path(sha), data)
        return sha

    def put_state(self, model: nn.Module) -> str:
        """A fine-tuning round's whole trained state (the next round starts from it), by content hash.
        Cloned, so tensors a model ties together are saved as the values they hold."""
        return self.put_weights({n: t.detach().to("cpu", copy=True) for n, t in model.state_dict().items()})

    def get_state(self, sha: str) -> dict[str, torch.Tensor]:
        return self.get_weights(sha, None)

    def get_weights(self, sha: str, names: list[str] | None) -> dict[str, torch.Tensor]:
        data = self.weights_path(sha).read_bytes() if self.weights_path(sha).exists() else b""
        if sha256_bytes(data) != sha:
            raise LtvlError(f"kept weights {sha[:12]} are missing or damaged", where=str(self.weights_path(sha)),
                            fix="delete the chain directory to recompute the chain")
        tensors = st_load(data)
        return tensors if names is None else {n: tensors[n] for n in names}

    def finished_rounds(self) -> list[dict]:
        out = []
        r = 0
        while self.round_path(r).exists():
            out.append(read_record(self.round_path(r)))
            r += 1
        return out

    def put_round(self, res: RoundResult) -> None:
        if self.writer:
            write_record(self.round_path(res.round), res.record())

    def put_theta_ref(self, dense: DenseStore, step: int) -> None:
        """θi lives once, in the dense store; the chain records which file and hash it rewinds to."""
        if self.writer:
            write_record(self.dir / "theta_i.json",
                         {"dense_dir": str(dense.dir), "step": step, "sha256": dense.theta_sha(step)})

    def get_theta_i(self, dense: DenseStore) -> RewindPoint:
        ref = self.dir / "theta_i.json"
        if not ref.exists():
            raise LtvlError("finished rounds exist but the θi reference is missing", where=str(self.dir),
                            fix="delete the chain directory to recompute it")
        r = read_record(ref)  # its dense_dir is informational: the dense store is found by hash
        if not isinstance(r.get("step"), int) or not isinstance(r.get("sha256"), str):
            raise LtvlError("the θi reference names no step and sha256", where=str(ref), fix=DAMAGED_FIX)
        return RewindPoint.load(dense.theta_path(r["step"]), r["sha256"])

    def find_mask(self, sha: str, dense: DenseStore) -> Path:
        """A mask by hash: this chain's own, or the first mask it shares with its dense siblings."""
        own = self.mask_path(sha)
        return own if own.exists() else dense.mask_path(sha)
