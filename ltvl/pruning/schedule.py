"""Pruning schedules: the sparsity each IMP round prunes to.

* geometric: prune ``rate`` of the remaining weights each round, so sparsity after
  round k is 1 - (1 - rate)^k (SPEC §2, Algorithm 1 with rate 0.1);
* linear: sparsity after round k is k * step of the *original* weights (10%, 20%, …),
  as reported in the paper's tables (BERT-ticket code: prune 1/(10-k) of the rest).

Either stops at ``target_sparsity`` (the last round reaches at least it) or after
``rounds`` rounds. Sparsities are turned into exact counts by the pruner.

* one_shot: one round, the trained dense model pruned straight to ``target_sparsity``;
* gradual: one round that starts dense and ramps the sparsity to ``target_sparsity`` while it
  trains (gradual magnitude pruning, Zhu & Gupta 2017: s_k = s_f·(1 − (1 − k/n)³) at n evenly
  spaced prunes over the first ``GRADUAL_RAMP`` of the round's steps, then training at s_f);

* adaptive: the geometric schedule's sparsities are *levels*, and the chain searches them for the
  highest level whose ticket keeps ``keep`` of dense (:mod:`ltvl.core.adaptive`): jumps of
  ``jump`` levels while tickets keep it, then bisection between the last good and first bad
  level. A ``start`` level (another seed's answer) caps the jumps. Each try is one round, pruned
  from the last good level's trained weights, and its parent is recorded with it. With
  ``masks_of_seed`` the chain prunes nothing itself: its tries take the masks of that seed's
  settled chain of the same recipe and walk one level at a time from ``start``
  (:mod:`ltvl.core.lead_masks`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ltvl.util.errors import LtvlError

_EPS = 1e-9
KINDS = ("geometric", "linear", "adaptive", "one_shot", "gradual")
GRADUAL_PRUNES = 10  # prunes of a gradual round (Zhu & Gupta's n), fewer when the ramp has fewer steps
GRADUAL_RAMP = 0.75  # the share of the round's steps the ramp spans; the rest trains at the target


@dataclass(frozen=True)
class Schedule:
    # Identity anchors: a store's hash covers only fields that differ from these defaults, so they are
    # never changed. Users never see them: the defaults users get are the parameter schema's
    # (ltvl/params/schema.py, docs/reference/parameters.md), which resolve_chain passes in full.
    kind: Literal["geometric", "linear", "adaptive", "one_shot", "gradual"] = "geometric"
    rate: float = 0.2  # geometric/adaptive: fraction of remaining; linear: step of the original
    target_sparsity: float | None = 0.9
    rounds: int | None = None
    # adaptive only (defaults leave other schedules' hashes unchanged)
    jump: int = 4  # levels per jump while tickets keep `keep` of dense
    keep: float = 0.99  # a ticket keeps p when its metric >= keep x the dense metric
    start: int | None = None  # cap the jumps at this level (e.g. another seed's answer), then go on
    masks_of_seed: int | None = None  # take that seed's masks and walk from ``start`` (ltvl.core.lead_masks)

    @property
    def adaptive(self) -> bool:
        return self.kind == "adaptive"

    @property
    def one_shot(self) -> bool:
        """One round that prunes the trained dense model straight to the target (one-shot magnitude
        pruning, then rewinding: the one-shot ticket that IMP's iterations are compared with)."""
        return self.kind == "one_shot"

    @property
    def gradual(self) -> bool:
        """One round whose sparsity ramps from 0 to the target while it trains (GMP)."""
        return self.kind == "gradual"

    @property
    def single_round(self) -> bool:
        """One round straight to ``target_sparsity``: the rate acts nowhere."""
        return self.one_shot or self.gradual

    def validate(self, where: str = "schedule") -> None:
        if self.kind not in KINDS:
            raise LtvlError(
                f"unknown schedule kind {self.kind!r}", where=f"{where}.kind",
                fix="use one of " + ", ".join(f"'{k}'" for k in KINDS)
            )
        if self.single_round and (self.target_sparsity is None or self.rounds is not None):
            raise LtvlError(f"a {self.kind} schedule prunes to target_sparsity in one round", where=f"{where}.rounds",
                            fix="give target_sparsity and leave rounds unset")
        if self.jump < 1:
            raise LtvlError(f"adaptive jump {self.jump} must be >= 1", where=f"{where}.jump",
                            fix="1 tries every level in order (IMP with early abandonment); e.g. 4")
        if self.masks_of_seed is not None and (not self.adaptive or self.start is None):
            raise LtvlError(f"masks_of_seed {self.masks_of_seed} needs schedule: adaptive with a start level",
                            where=f"{where}.masks_of_seed", fix="the walk starts at the lead seed's answer: set "
                            "start_level to it (a sweep's share_masks does), or leave masks_of_seed unset")
        if not (0.0 < self.keep <= 1.0):
            raise LtvlError(f"adaptive keep {self.keep} is outside (0, 1]", where=f"{where}.keep",
                            fix="e.g. 0.99: a ticket must keep 99% of the dense metric")
        if not (0.0 < self.rate < 1.0):
            raise LtvlError(
                f"pruning rate {self.rate} is outside (0, 1)",
                where=f"{where}.rate",
                fix="e.g. 0.2 (geometric: 20% of the remaining weights per round)",
            )
        if (self.target_sparsity is None) == (self.rounds is None):
            raise LtvlError(
                "give exactly one of target_sparsity and rounds",
                where=f"{where}.target_sparsity/{where}.rounds",
                fix="set one, leave the other unset",
            )
        if self.target_sparsity is not None and not (0.0 < self.target_sparsity < 1.0):
            raise LtvlError(
                f"target sparsity {self.target_sparsity} is outside (0, 1)",
                where=f"{where}.target_sparsity",
                fix="e.g. 0.9",
            )
        if self.rounds is not None and self.rounds < 1:
            raise LtvlError(f"rounds must be >= 1, got {self.rounds}", where=f"{where}.rounds")
        if self.kind == "linear":
            if self.rounds is not None and self.rounds * self.rate >= 1.0 - _EPS:
                raise LtvlError(
                    f"a linear schedule with step {self.rate} reaches sparsity "
                    f"{self.rounds * self.rate:.3f} >= 1 after {self.rounds} rounds",
                    where=f"{where}.rounds",
                    fix="use fewer rounds or a smaller step",
                )
            if self.target_sparsity is not None:
                k = math.ceil(self.target_sparsity / self.rate - _EPS)
                if k * self.rate >= 1.0 - _EPS:
                    raise LtvlError(
                        f"target sparsity {self.target_sparsity} is unreachable with linear step "
                        f"{self.rate}: the round that reaches it would prune {k * self.rate:.2f} >= 1",
                        where=f"{where}.target_sparsity",
                        fix="lower the target or pick a step that divides it",
                    )
        if self.start is not None:
            n = len(self._levels())
            if not 1 <= self.start <= n:
                raise LtvlError(f"adaptive start level {self.start} is not in [1, {n}]", where=f"{where}.start_level",
                                fix=f"a level of the schedule: 1..{n} (its sparsities run to the target)")

    def sparsities(self) -> list[float]:
        """Sparsity after each pruning round: round k prunes to ``sparsities()[k-1]`` (adaptive:
        the levels a chain searches)."""
        self.validate()
        return self._levels()

    def _levels(self) -> list[float]:
        if self.single_round:
            return [float(self.target_sparsity)]  # type: ignore[arg-type]
        out: list[float] = []
        k = 0
        while True:
            k += 1
            s = k * self.rate if self.kind == "linear" else 1.0 - (1.0 - self.rate) ** k
            out.append(s)
            if self.rounds is not None and k >= self.rounds:
                return out
            if self.target_sparsity is not None and s >= self.target_sparsity - _EPS:
                return out
            if k > 10_000:  # unreachable in practice: rates are validated above
                raise LtvlError("schedule does not terminate", where="schedule")

    @property
    def n_rounds(self) -> int:
        return len(self.sparsities())


def rounds_needed(rate: float, target: float) -> int:
    """Geometric rounds to reach ``target``: ceil(log(1-target) / log(1-rate))."""
    return max(1, math.ceil(math.log(1.0 - target) / math.log(1.0 - rate) - _EPS))


def gradual_prunes(round_steps: int, target: float) -> list[tuple[int, float]]:
    """(optimizer steps into the round, sparsity) of each prune of a gradual round: Zhu & Gupta's
    cubic s_k = s_f·(1 − (1 − k/n)³), k = 1..n, every Δ steps over the first GRADUAL_RAMP of it."""
    ramp = max(1, math.floor(GRADUAL_RAMP * round_steps))
    n = min(GRADUAL_PRUNES, ramp)
    every = ramp // n
    return [(k * every, target * (1.0 - (1.0 - k / n) ** 3)) for k in range(1, n + 1)]
