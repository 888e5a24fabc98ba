"""Masks and pruning: pure torch, no Ray, no MLflow."""

from ltvl.pruning.enforce import MaskEnforcer
from ltvl.pruning.inits import load_matching, reinitialise, shuffle_within_tensors, snapshot
from ltvl.pruning.mask import Mask
from ltvl.pruning.maskfile import load_mask, save_mask
from ltvl.pruning.prunable import PrunableSpec, describe, select_from_state, select_prunable
from ltvl.pruning.prune import (
                                Method,
                                Scope,
                                high_magnitude_mask,
                                matched_random,
                                prune_fraction_of_remaining,
                                prune_to_sparsity,
                                random_mask,
)
from ltvl.pruning.schedule import Schedule

__all__ = [
    "Mask", "MaskEnforcer", "Method", "PrunableSpec", "Schedule", "Scope", "describe",
    "high_magnitude_mask", "load_mask", "load_matching", "matched_random", "prune_fraction_of_remaining",
    "prune_to_sparsity", "random_mask", "reinitialise", "save_mask", "select_from_state", "select_prunable",
    "shuffle_within_tensors", "snapshot",
]
