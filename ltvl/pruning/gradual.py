"""Gradual magnitude pruning (GMP, Zhu & Gupta 2017) inside one training run: a :class:`MaskEnforcer`
whose mask tightens at the schedule's prune steps (:func:`ltvl.pruning.schedule.gradual_prunes`).

After the optimizer step that ends a prune step, the live weights are pruned to that step's
sparsity (already-pruned weights stay pruned), the new mask is written into the enforcer's own
keep/pruned buffers in place (the gradient hooks hold them), the weights are zeroed and the
optimizer's moments are cleared where newly pruned, so the pruned-weights-are-zero and
optimizer-state-masked guarantees hold at every step, as in IMP's rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ltvl.pruning.enforce import MaskEnforcer
from ltvl.pruning.mask import Mask

Prune = Callable[[Mapping[str, torch.Tensor], Mask, float], Mask]  # (weights, current mask, sparsity) -> mask


class GradualEnforcer(MaskEnforcer):
    def __init__(self, model: nn.Module, start: Mask, prunes: list[tuple[int, float]], prune: Prune):
        super().__init__(model, start)
        self.start, self.prune = start, prune
        self.at = dict(prunes)  # optimizer steps into the run -> sparsity
        self.steps = 0
        self.optimizers: list[torch.optim.Optimizer] = []

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        super().attach(optimizer)  # its re-zeroing post-hook runs first, then ours
        self.optimizers.append(optimizer)
        self._opt_handles.append(optimizer.register_step_post_hook(lambda *_: self._after_step()))

    @torch.no_grad()
    def _after_step(self) -> None:
        self.steps += 1
        sparsity = self.at.get(self.steps)
        if sparsity is None:
            return
        self.set_mask(self.prune({n: p.detach() for n, p in self.params.items()}, self.mask, sparsity))
        for opt in self.optimizers:
            self.clear_optimizer_state(opt)

    @torch.no_grad()
    def set_mask(self, mask: Mask) -> None:
        for n, p in self.params.items():
            self.keep[n].copy_(mask.tensors[n].to(p.device))
            self.pruned[n].copy_(~mask.tensors[n].to(p.device))
        self.mask = mask
        self.apply_()

    @property
    def target(self) -> float:
        """The sparsity the ramp ends at (what the round trains to; its mask starts dense)."""
        return max(self.at.values(), default=self.start.sparsity)

    def final_mask(self) -> Mask:
        """The run's last mask, its parent the mask the run started from (the steps between are not stored)."""
        meta = {**self.mask.metadata, "gradual_prunes": len(self.at), "pruned_at_steps": sorted(self.at)}
        return Mask(dict(self.mask.tensors), parent=self.start.sha256, metadata=meta)
