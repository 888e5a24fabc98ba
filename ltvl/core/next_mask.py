"""How a chain chooses its next mask after each round: the strategies :func:`ltvl.core.imp.run_chain`
asks, so that its loop stays the same for every way of walking the sparsity levels.

- :class:`FollowSchedule`: IMP (or RP, …) on the schedule's levels, one level per round;
- :class:`SearchLevels`: ``schedule: adaptive``, jumping and bisecting over the levels
  (:mod:`ltvl.core.adaptive`), and, with ``masks_of_seed``, taking every try's mask from another
  seed's settled chain instead of pruning (:mod:`ltvl.core.lead_masks`).

A new strategy is one class with these methods and one line in :func:`strategy_for`. Its masks
must be functions of (spec, seed, trained weights), so a resumed chain chooses the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ltvl.core.adaptive import AdaptiveSearch
from ltvl.core.chain import ChainSpec, ChainStore, RoundResult
from ltvl.core.dense import DenseOutcome
from ltvl.core.lead_masks import LeadMasks
from ltvl.core.train import derive_seed
from ltvl.pruning.calibration import calibrated_inputs
from ltvl.pruning.mask import Mask
from ltvl.pruning.maskfile import load_mask
from ltvl.pruning.prune import prune_to_sparsity
from ltvl.util.errors import LtvlError

Weights = Mapping[str, torch.Tensor]
Calibrate = Callable[[nn.Module, int], None]  # (model, examples): the task's forward passes (Trainer.calibrate)


def prune_seed(spec: ChainSpec, r: int) -> int:
    return derive_seed(spec.train.seed, "prune", r)


Inputs = Callable[[], dict[str, torch.Tensor]]  # calibration input norms, computed on demand


def shared_first_mask(spec: ChainSpec, got: DenseOutcome, dense_mask: Mask,
                      dense_inputs: Inputs | None = None) -> tuple[Mask, Path]:
    """The mask after round 0: shared by every chain with this dense run, first sparsity, method and
    scope (an adaptive chain's first try is its first jump's level). ``dense_inputs``: the trained
    dense model's calibration norms, for a method that reads activations (:func:`dense_inputs`)."""
    level = AdaptiveSearch.of(spec.schedule).first() if spec.schedule.adaptive else 1
    return got.store.first_mask(got.final_weights, dense_mask, spec.sparsities()[level - 1], spec.method,
                                spec.scope, prune_seed(spec, level - 1), dense_inputs, spec.calibration_examples)


def require_calibrate(spec: ChainSpec, calibrate: Calibrate | None) -> Calibrate:
    if calibrate is None:
        raise LtvlError(f"method {spec.method!r} reads activations, but no calibration function was given",
                        where="run_chain", fix="pass calibrate_fn (run_chain_with_trainer passes Trainer.calibrate)")
    return calibrate


def dense_inputs(spec: ChainSpec, got: DenseOutcome, model_factory: Callable[[], nn.Module],
                 calibrate: Calibrate | None) -> Inputs | None:
    """The trained dense model (θT's full state, kept by the dense run for such chains) calibrated
    once, on first call; None when the chain's method reads no activations."""
    if not spec.reads_inputs:
        return None
    require_calibrate(spec, calibrate)
    memo: dict[str, dict[str, torch.Tensor]] = {}

    def norms() -> dict[str, torch.Tensor]:
        if "norms" not in memo:
            model = model_factory()
            model.load_state_dict(got.theta(spec.train.steps).model)
            memo["norms"] = calibrated_inputs(spec.method, model, got.record.names,
                                              lambda m: calibrate(m, spec.calibration_examples))
        return memo["norms"]

    return norms


class FollowSchedule:
    """One schedule level per round, each mask pruned from the round's trained weights."""

    def __init__(self, spec: ChainSpec, chain_sha: str):
        self.spec, self.chain_sha = spec, chain_sha
        self.levels = [0.0] + spec.sparsities()

    def finished(self, done: list[dict]) -> bool:
        return len(done) == len(self.levels)

    def first(self, got: DenseOutcome, dense_mask: Mask,
              inputs: Inputs | None = None) -> tuple[Mask | None, dict[str, Any]]:
        """The mask round 1 trains, and what round 0's record adds (a gradual round starts dense)."""
        if self.spec.schedule.gradual:
            return dense_mask, {}
        return (shared_first_mask(self.spec, got, dense_mask, inputs)[0] if len(self.levels) > 1 else None), {}

    def start(self, rounds: list[RoundResult], dense_weights: Callable[[], Weights]) -> None:
        """Called once round 0 is known (computed or replayed), before the first pruned round."""

    def next(self, r: int, mask: Mask, weights: Weights, metrics: dict,
             inputs: Inputs | None = None) -> tuple[Mask | None, dict[str, Any]]:
        """The mask round r + 1 trains (None: the chain is done), and what round r's record adds.
        ``inputs``: the trained model's calibration norms, for a method that reads activations."""
        if r + 1 >= len(self.levels):
            return None, {}
        return prune_to_sparsity(weights, mask, self.levels[r + 1], method=self.spec.method, scope=self.spec.scope,
                                 seed=prune_seed(self.spec, r), metadata={"round": r + 1, "chain": self.chain_sha},
                                 inputs=inputs() if inputs is not None else None), {}


class SearchLevels:
    """``schedule: adaptive``: each round tries one level; the search decides the next from whether
    the try kept ``keep`` of dense. A kept try's weights are stored, so a later failed try can prune
    from that level again, on resume too."""

    def __init__(self, spec: ChainSpec, done: list[dict], store: ChainStore, root: str | Path, chain_sha: str):
        self.spec, self.store, self.chain_sha = spec, store, chain_sha
        self.levels = [0.0] + spec.sparsities()
        self.search = AdaptiveSearch.of(spec.schedule, done)
        self.lead = LeadMasks(root, spec) if spec.schedule.masks_of_seed is not None else None
        self.kept_weights: dict[int, dict[str, torch.Tensor]] = {}  # kept tries' weights computed here, by round

    def finished(self, done: list[dict]) -> bool:
        return len(done) > 1 and done[-1]["next_mask_sha256"] is None  # the search has settled its answer

    def first(self, got: DenseOutcome, dense_mask: Mask,
              inputs: Inputs | None = None) -> tuple[Mask | None, dict[str, Any]]:
        if self.lead is not None:
            mask = self.lead.mask_at(self.search.first())
            self.store.put_mask(mask)  # before the record names it
        else:
            mask = shared_first_mask(self.spec, got, dense_mask)[0] if len(self.levels) > 1 else None
        return mask, {"level": 0, "next_level": self.search.first()}

    def start(self, rounds: list[RoundResult], dense_weights: Callable[[], Weights]) -> None:
        self.rounds, self.dense_weights = rounds, dense_weights
        self.level = rounds[-1].next_level  # the level the next round tries
        self.dense_metric = rounds[0].metrics["metric"]

    def weights_of_round(self, r: int) -> tuple[Mask, Weights]:
        """The mask and trained weights of round ``r`` (0 = the dense run), to prune from again."""
        rec = self.rounds[r]
        rmask = load_mask(rec.mask_path)
        if r in self.kept_weights:
            return rmask, self.kept_weights[r]
        if r == 0:
            return rmask, self.dense_weights()
        return rmask, self.store.get_weights(rec.weights_sha256, rmask.names)

    def next(self, r: int, mask: Mask, weights: Weights, metrics: dict,
             inputs: Inputs | None = None) -> tuple[Mask | None, dict[str, Any]]:
        search, level = self.search, self.level
        parent_level, kept = search.good, search.kept(metrics["metric"], self.dense_metric)
        if self.lead is not None:  # the lead's mask: its parent is on the lead's path
            parent_level = self.lead.source_level(level)
        search.add(level, kept, r)
        nxt = search.next()
        weights_sha = None
        if self.lead is None and kept and nxt is not None:  # a later failed try prunes from this level again
            self.kept_weights = {r: {n: w.clone() for n, w in weights.items()}}
            weights_sha = self.store.put_weights(weights)
        next_mask = None
        if nxt is not None and self.lead is not None:
            next_mask = self.lead.mask_at(nxt)
        elif nxt is not None:
            pmask, pweights = (mask, weights) if kept else self.weights_of_round(search.good_round)
            next_mask = prune_to_sparsity(pweights, pmask, self.levels[nxt], method=self.spec.method,
                                          scope=self.spec.scope, seed=prune_seed(self.spec, nxt - 1),
                                          metadata={"round": r + 1, "chain": self.chain_sha, "level": nxt,
                                                    "parent_level": search.good})
        self.level = nxt
        return next_mask, {"level": level, "parent_level": parent_level, "kept": kept, "next_level": nxt,
                           "weights_sha256": weights_sha}


def strategy_for(spec: ChainSpec, done: list[dict], store: ChainStore, root: str | Path) -> Any:
    if spec.schedule.adaptive:
        return SearchLevels(spec, done, store, root, store.sha256)
    return FollowSchedule(spec, store.sha256)
