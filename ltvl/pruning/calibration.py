"""Calibration for pruning methods that read activations (Wanda): the ℓ2 norm of every input
feature of each prunable Linear weight, over a fixed set of calibration batches.

The forward passes are the task's own (``calibrate(model)`` runs them, in eval mode, without
gradients); forward pre-hooks on the Linear modules whose weights are pruned sum the squared
inputs per feature. The sums are float64, so the order of batches does not move the norms, and
calibration batches are the same on every DDP rank (slots 0..n-1 whatever the rank), so every rank
prunes the same weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from ltvl.util.errors import LtvlError

Calibrate = Callable[[nn.Module], None]  # runs the model forward over the calibration batches


def input_norms(model: nn.Module, names: Iterable[str], calibrate: Calibrate) -> dict[str, torch.Tensor]:
    """‖X_j‖₂ per input feature j of each weight in ``names`` (``<module>.weight`` of an nn.Linear)."""
    modules = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    hooks = []
    for name in names:
        mod_name = name.removesuffix(".weight")
        mod = modules.get(mod_name)
        if not name.endswith(".weight") or not isinstance(mod, nn.Linear):
            raise LtvlError(f"activation-aware pruning reads the inputs of Linear layers; {name} is not the weight "
                            "of one", where=name, fix="prune Linear weights only (the default prunable set)")
        sums[name] = torch.zeros(mod.in_features, dtype=torch.float64)

        def add(_mod: nn.Module, args: tuple, key: str = name) -> None:
            x = args[0].detach()
            sums[key] += x.reshape(-1, x.shape[-1]).to(torch.float64).square().sum(0).cpu()

        hooks.append(mod.register_forward_pre_hook(add))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            calibrate(model)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {n: s.sqrt().to(torch.float32) for n, s in sums.items()}
