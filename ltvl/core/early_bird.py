"""Early-bird masks: stop the dense phase once its magnitude mask has stopped moving.

IMP's first mask is the global magnitude mask of the trained dense weights. You et al. (2020)
and EarlyBERT observed that this mask settles long before training ends: the normalised
Hamming distance between masks drawn a few steps apart falls below a small threshold early.
:func:`train_until_early_bird` trains the dense run in segments of ``interval`` steps, draws the
mask after each, and stops at the first step where it moved less than ``threshold`` since the
last one. The dense phase then costs ``step`` steps instead of ``train.steps``.

Segments continue from the exact state the last one ended in (weights, optimizer, LR schedule,
and batches and dropout that are functions of (seed, step)), so the weights at step ``s`` equal
those of an uninterrupted run at step ``s``. The learning rate therefore has not decayed to zero
at the stop: the early-bird model is a model mid-training, and its metric is a weaker reference
than the full dense run's. Callers that judge tickets against it must say so.
Imports neither Ray nor MLflow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from ltvl.core.train import RewindPoint, Trainer
from ltvl.pruning.mask import Mask
from ltvl.pruning.prunable import PrunableSpec, select_prunable
from ltvl.pruning.prune import Method, Scope, prune_to_sparsity
from ltvl.util.errors import require


@dataclass
class EarlyBird:
    step: int  # the dense phase stopped here (train.steps when the mask never settled)
    settled: bool  # False: the threshold was never met and the dense phase ran to the end
    mask: Mask  # the magnitude mask at ``sparsity`` drawn from the weights at ``step``
    weights: dict[str, torch.Tensor]  # the prunable weights at ``step`` (what the first prune reads)
    distances: list[tuple[int, float]] = field(default_factory=list)  # (step, distance to the previous mask)
    captured: dict[int, RewindPoint] = field(default_factory=dict)  # θi for the requested rewind steps


def train_until_early_bird(trainer: Trainer, model: nn.Module, prunable: PrunableSpec, sparsity: float, *,
                           interval: int, threshold: float, capture_at: Iterable[int] = (),
                           scope: Scope = Scope.GLOBAL) -> EarlyBird:
    """Train ``model`` (θ0) densely until its magnitude mask at ``sparsity`` settles; the model is
    left at the stop step. ``capture_at`` steps (rewind points) are captured on the way."""
    steps = trainer.cfg.steps
    require(0 < interval <= steps, f"interval {interval} is not in (0, train.steps={steps}]",
            where="early_bird.interval", fix="e.g. a tenth of the training steps")
    require(0 <= threshold < 1, f"threshold {threshold} is not in [0, 1)", where="early_bird.threshold",
            fix="e.g. 0.05: masks that differ in under 5% of the prunable weights count as settled")
    wanted = set(capture_at)
    point: RewindPoint | None = None
    captured: dict[int, RewindPoint] = {}
    previous: Mask | None = None
    distances: list[tuple[int, float]] = []
    until = 0
    while until < steps:
        until = min(until + interval, steps)
        out = trainer.train(model, start=point, until=until,
                            capture_at={until} | {s for s in wanted if (point.step if point else 0) <= s <= until})
        captured.update({s: p for s, p in out.captured.items() if s in wanted})
        point = out.captured[until]
        weights = {n: p.detach().clone() for n, p in select_prunable(model, prunable).items()}
        mask = prune_to_sparsity(weights, None, sparsity, method=Method.MAGNITUDE, scope=scope,
                                 metadata={"early_bird_step": until})
        if previous is not None:
            distances.append((until, mask.hamming(previous)))
            if distances[-1][1] < threshold:
                return EarlyBird(until, True, mask, weights, distances, captured)
        previous = mask
    return EarlyBird(steps, False, mask, weights, distances, captured)
