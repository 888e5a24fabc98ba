"""The winning sparsity in few trainings: a bracket search over IMP's sparsity levels.

Naive IMP trains every level of its schedule, yet the question most sweeps ask is one number:
the highest level whose ticket keeps p of dense. Each try trains one ticket (mask ⊙ θi, from
step i to t) and tells whether it kept p, so the cost of an answer is its number of tries.

:func:`bracket_search` asks for levels in this order:

* **jumps** of ``jump`` levels while tickets keep p: the last good level's trained weights are
  pruned straight to the target level (one IMP round at a larger rate);
* **bisection** between the last good level and the first bad one, once a ticket falls below p;
* a ``start`` level (e.g. another seed's answer) caps the jumps: they stop at ``start``, the
  level above it is tried next, and jumps resume from there while tickets keep p. A seed that
  agrees with the first is settled without overshooting it. (Trying ``start`` first, a one-shot
  prune from the dense weights, lost tickets that the iterative path keeps: bench/RESULTS.md.)

``jump=1`` with no ``start`` is IMP with early abandonment: every level in order, stopping at the
first that falls below p. Larger jumps prune more per round than the schedule's rate, which can
move the answer; the search does not hide that, its :class:`SearchResult` lists every try with
its parent level, so the path is a schedule like any other and can be replayed.
Imports neither Ray nor MLflow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ltvl.core.train import RewindPoint, Trainer, derive_seed
from ltvl.pruning.enforce import MaskEnforcer
from ltvl.pruning.mask import Mask
from ltvl.pruning.prune import Method, Scope, prune_to_sparsity
from ltvl.util.errors import require


@dataclass(frozen=True)
class Try:
    level: int  # 1..n_levels: the schedule's sparsity index
    parent: int  # the level whose trained weights were pruned to get this mask (0 = the dense run)
    sparsity: float
    metric: float
    kept: bool  # metric >= p x dense
    steps: int  # optimizer steps this try trained
    wall_s: float
    mask_sha256: str


@dataclass
class SearchResult:
    answer: int  # the highest level found to keep p (0: not even the first level)
    tries: list[Try]

    @property
    def steps(self) -> int:
        return sum(t.steps for t in self.tries)

    @property
    def wall_s(self) -> float:
        return sum(t.wall_s for t in self.tries)


def next_level(good: int, bad: int | None, n_levels: int, jump: int, start: int | None = None) -> int | None:
    """The level to try after ``good`` (highest kept so far) and ``bad`` (lowest that fell below
    p, None if none has yet); None when the answer is settled. Jumps stop at ``start``, and the
    level above it is tried before they resume."""
    if good >= n_levels or (bad is not None and bad - good <= 1):
        return None
    if bad is not None:
        return (good + bad) // 2
    if start is not None and good < start:
        return min(good + jump, start)
    if start is not None and good == start:
        return good + 1
    return min(good + jump, n_levels)


def walk_level(good: int, bad: int | None, n_levels: int, start: int) -> int | None:
    """A walk one level at a time from ``start`` (the search of a seed that takes another seed's
    masks, :mod:`ltvl.core.lead_masks`): up while tickets keep p, down until one does; None once
    settled. ``good``/``bad`` as in :func:`next_level`."""
    if bad is None:
        return start if good == 0 else (good + 1 if good < n_levels else None)
    if good > 0 or bad <= 1:  # the level below a loss kept p (either way), or nothing did
        return None
    return bad - 1


def bracket_search(n_levels: int, try_level: Callable[[int, int], Try], *, jump: int = 1,
                   start: int | None = None) -> SearchResult:
    """Find the highest level that keeps p. ``try_level(level, parent)`` trains the ticket at
    ``level`` pruned from ``parent``'s trained weights and returns its :class:`Try`."""
    require(n_levels >= 1, f"n_levels {n_levels} must be >= 1", where="n_levels")
    require(jump >= 1, f"jump {jump} must be >= 1", where="jump", fix="1 is plain IMP with early abandonment")
    require(start is None or 1 <= start <= n_levels, f"start level {start} is not in [1, {n_levels}]",
            where="start")
    good, bad, tries = 0, None, []
    level = next_level(good, bad, n_levels, jump, start)
    while level is not None:
        t = try_level(level, good)
        tries.append(t)
        if t.kept:
            good = level
        else:
            bad = level
        level = next_level(good, bad, n_levels, jump, start)
    return SearchResult(good, tries)


class ImpLevels:
    """``try_level`` for IMP tickets: prune a kept level's trained weights to a level's sparsity,
    train ``mask ⊙ θi`` from step i to t, evaluate, and judge against ``p x reference``.

    Pruning from level k-1 to level k is exactly an IMP round, so ``bracket_search(jump=1)``
    draws the same masks as :func:`ltvl.core.imp.run_chain` until its first failure. Only kept
    levels keep their weights (a search never prunes from a level that fell below p).
    """

    def __init__(self, sparsities: list[float], model_factory: Callable[[], nn.Module], trainer: Trainer,
                 rewind: RewindPoint | None, dense_weights: Mapping[str, torch.Tensor], reference: float, p: float,
                 *, method: Method = Method.MAGNITUDE, scope: Scope = Scope.GLOBAL, seed: int = 0):
        require(0 < p <= 1, f"p {p} is not in (0, 1]", where="p", fix="e.g. 0.99: keep 99% of dense")
        self.sparsities, self.model_factory, self.trainer, self.rewind = sparsities, model_factory, trainer, rewind
        self.threshold, self.method, self.scope, self.seed = p * reference, method, scope, seed
        weights = {n: w.detach() for n, w in dense_weights.items()}
        self.kept: dict[int, tuple[Mask, dict[str, torch.Tensor]]] = {0: (Mask.dense_like(weights), weights)}
        self.masks: dict[int, Mask] = {}  # every mask tried, by level

    def __call__(self, level: int, parent: int) -> Try:
        t0 = time.perf_counter()
        parent_mask, weights = self.kept[parent]
        # the seed IMP's round `level - 1` prunes with (ltvl.core.imp.run_chain), so jump=1 matches it
        mask = prune_to_sparsity(weights, parent_mask, self.sparsities[level - 1], method=self.method,
                                 scope=self.scope, seed=derive_seed(self.seed, "prune", level - 1),
                                 metadata={"level": level, "parent_level": parent})
        model = self.model_factory()
        enforcer = MaskEnforcer(model, mask)
        out = self.trainer.train(model, enforcer=enforcer, start=self.rewind, capture_at=[])
        metric = float(self.trainer.evaluate(model)["metric"])
        enforcer.remove()
        kept = metric >= self.threshold
        if kept:
            params = dict(model.named_parameters())
            self.kept[level] = (mask, {n: params[n].detach().clone() for n in mask.names})
        self.masks[level] = mask
        return Try(level, parent, mask.sparsity, metric, kept, out.steps_run, time.perf_counter() - t0, mask.sha256)
