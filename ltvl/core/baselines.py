"""Evaluate a ticket: reset to an initialisation, apply a mask, re-train, report (SPEC §3).

The baselines of the paper are (init, mask) pairs around an IMP mask ``m``:

| baseline        | weights                       | mask                           |
|-----------------|-------------------------------|--------------------------------|
| imp             | θ0 (or θi when rewinding)     | m                              |
| random (RP)     | θ0                            | random, same sparsity as m     |
| theta0_prime    | θ'0 (another checkpoint)      | m                              |
| theta0_shuffled | θ0 shuffled within tensors    | m                              |
| high_magnitude  | θ0                            | prune the largest |θ0|, same count as m |
| random_init     | a fresh random init           | m                              |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from ltvl.util.errors import require
from ltvl.pruning.enforce import MaskEnforcer
from ltvl.pruning.inits import InitReport, load_matching, reinitialise, shuffle_within_tensors
from ltvl.pruning.mask import Mask
from ltvl.pruning.prune import high_magnitude_mask, matched_random
from ltvl.core.train import RewindPoint, Trainer


class Baseline(str, Enum):
    IMP = "imp"
    RANDOM = "random"
    THETA0_PRIME = "theta0_prime"
    THETA0_SHUFFLED = "theta0_shuffled"
    HIGH_MAGNITUDE = "high_magnitude"
    RANDOM_INIT = "random_init"


@dataclass
class TicketRun:
    baseline: Baseline
    mask: Mask
    metrics: dict[str, float]
    train_loss: float
    init_report: InitReport | None = None


def prepare(baseline: Baseline | str, mask: Mask, model_factory: Callable[[], nn.Module], *, seed: int = 0,
            other_state: Mapping[str, torch.Tensor] | None = None) -> tuple[nn.Module, Mask, InitReport | None]:
    """Build the model and the mask a baseline trains (weights not yet masked)."""
    baseline = Baseline(baseline)
    model = model_factory()
    report = None
    if baseline is Baseline.RANDOM:
        mask = matched_random(mask, seed)
    elif baseline is Baseline.THETA0_PRIME:
        require(other_state is not None, "the θ'0 baseline needs another checkpoint", where="other_state",
                fix="pass the state dict of e.g. the plain BERT checkpoint")
        report = load_matching(model, other_state)
    elif baseline is Baseline.THETA0_SHUFFLED:
        shuffle_within_tensors(model, mask.names, seed)
    elif baseline is Baseline.HIGH_MAGNITUDE:
        params = dict(model.named_parameters())
        mask = high_magnitude_mask({n: params[n].detach() for n in mask.names}, mask)
    elif baseline is Baseline.RANDOM_INIT:
        reinitialise(model, seed)
    return model, mask, report


def train_ticket(baseline: Baseline | str, mask: Mask, model_factory: Callable[[], nn.Module], trainer: Trainer, *,
                 seed: int = 0, theta_i: RewindPoint | None = None,
                 other_state: Mapping[str, torch.Tensor] | None = None) -> TicketRun:
    """Fully re-train a (baseline) ticket and evaluate it. ``theta_i`` rewinds the IMP ticket to step i."""
    model, mask, report = prepare(baseline, mask, model_factory, seed=seed, other_state=other_state)
    enforcer = MaskEnforcer(model, mask)
    start = theta_i if Baseline(baseline) is Baseline.IMP else None
    out = trainer.train(model, enforcer=enforcer, start=start)
    metrics = trainer.evaluate(model)
    enforcer.remove()
    return TicketRun(Baseline(baseline), mask, metrics, out.mean_loss, report)
