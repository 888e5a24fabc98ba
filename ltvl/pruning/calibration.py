"""Calibration for pruning methods that read activations: the ℓ2 norm of every input feature of each
prunable Linear weight (Wanda), or the Gram matrix of its inputs (SparseGPT), over a fixed set of
calibration batches.

The forward passes are the task's own (``calibrate(model)`` runs them, in eval mode, without
gradients); forward pre-hooks on the Linear modules whose weights are pruned sum the squared
inputs. The sums are float64, so the order of batches does not move the norms, and
calibration batches are the same on every DDP rank (slots 0..n-1 whatever the rank), so every rank
prunes the same weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from ltvl.util.errors import LtvlError

Calibrate = Callable[[nn.Module], None]  # runs the model forward over the calibration batches


def _accumulate(model: nn.Module, names: Iterable[str], calibrate: Calibrate,
                statistic: Callable[[int], torch.Tensor],
                add: Callable[[torch.Tensor, torch.Tensor], None]) -> dict[str, torch.Tensor]:
    """Run the calibration passes with a forward pre-hook on each Linear whose weight is in ``names``;
    ``add(sum, x)`` folds its inputs (tokens × features, float64 on CPU) into ``statistic(in_features)``."""
    modules = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:
        mod_name = name.removesuffix(".weight")
        mod = modules.get(mod_name)
        if not name.endswith(".weight") or not isinstance(mod, nn.Linear):
            raise LtvlError(f"activation-aware pruning reads the inputs of Linear layers; {name} is not the weight "
                            "of one", where=name, fix="prune Linear weights only (the default prunable set)")
        sums[name] = statistic(mod.in_features)

        def hook(_mod: nn.Module, args: tuple, key: str = name) -> None:
            x = args[0].detach()
            add(sums[key], x.reshape(-1, x.shape[-1]).to(torch.float64).cpu())

        hooks.append(mod.register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            calibrate(model)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return sums


def input_norms(model: nn.Module, names: Iterable[str], calibrate: Calibrate) -> dict[str, torch.Tensor]:
    """‖X_j‖₂ per input feature j of each weight in ``names`` (``<module>.weight`` of an nn.Linear): Wanda's."""
    sums = _accumulate(model, names, calibrate, lambda d: torch.zeros(d, dtype=torch.float64),
                       lambda acc, x: acc.add_(x.square().sum(0)))
    return {n: s.sqrt().to(torch.float32) for n, s in sums.items()}


def input_grams(model: nn.Module, names: Iterable[str], calibrate: Calibrate) -> dict[str, torch.Tensor]:
    """H = XᵀX (float64, in_features²) of each weight's inputs over the calibration tokens: SparseGPT's."""
    return _accumulate(model, names, calibrate, lambda d: torch.zeros(d, d, dtype=torch.float64),
                       lambda acc, x: acc.addmm_(x.T, x))


STATISTICS = {"norms": input_norms, "gram": input_grams}  # PruningMethod.calibration names one


def calibrated_inputs(method: str, model: nn.Module, names: Iterable[str], calibrate: Calibrate
                      ) -> dict[str, torch.Tensor]:
    """What ``method`` reads of the activations (its registry entry's ``calibration``)."""
    from ltvl.pruning.methods import get_method

    return STATISTICS[get_method(method).calibration](model, names, calibrate)
