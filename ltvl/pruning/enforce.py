"""Exact masked training: pruned weights stay exactly 0 and never receive gradient.

Two hooks do it. A post-accumulate-grad hook zeroes the pruned entries of ``p.grad``
in place as soon as it is accumulated (so clipping and AMP unscaling see zeros, and
no gradient-sized tensor is allocated per step), and an optimizer step post-hook
re-zeroes the pruned weights after each step, so nothing an optimizer does
(AdamW's decoupled weight decay, momentum carried over from before the prune, a
bf16 round-off) can revive them. Measured cost: see bench/RESULTS.md.
"""

from __future__ import annotations

import torch
from torch import nn

from ltvl.pruning.mask import Mask


class MaskEnforcer:
    """Binds a mask to a model's parameters; ``attach`` it to each optimizer you build."""

    def __init__(self, model: nn.Module, mask: Mask):
        params = dict(model.named_parameters())
        mask.check_compatible({n: tuple(params[n].shape) for n in mask.names if n in params})
        self.mask = mask
        self.params = {n: params[n] for n in mask.names}
        # 0/1 in the parameter's dtype: mul_ is ~8x faster than masked_fill_ with a bool
        # mask on CPU (bench/RESULTS.md), at the cost of one param-sized buffer per tensor.
        self.keep = {n: mask.tensors[n].to(device=p.device, dtype=p.dtype) for n, p in self.params.items()}
        self.pruned = {n: ~mask.tensors[n].to(p.device) for n, p in self.params.items()}
        self._plist = list(self.params.values())
        self._klist = [self.keep[n] for n in self.params]
        self._handles = [p.register_post_accumulate_grad_hook(self._grad_hook(n)) for n, p in self.params.items()]
        self._opt_handles: list = []
        self.apply_()

    def _grad_hook(self, name: str):
        keep = self.keep[name]

        def zero_pruned_grad(p: torch.Tensor) -> None:
            p.grad.mul_(keep)
        return zero_pruned_grad

    @torch.no_grad()
    def _mask_grads(self) -> None:
        grads = [p.grad for p in self._plist if p.grad is not None]
        if len(grads) == len(self._plist):
            torch._foreach_mul_(grads, self._klist)
        else:
            for p, k in zip(self._plist, self._klist):
                if p.grad is not None:
                    p.grad.mul_(k)

    @torch.no_grad()
    def apply_(self) -> None:
        """Zero the pruned weights now."""
        torch._foreach_mul_(self._plist, self._klist)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Re-zero after every ``optimizer.step()`` and clear stale momentum at pruned entries.

        Under DDP the all-reduce may write averaged gradients back after the per-parameter
        hook ran, so gradients are masked once more just before the step."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self._opt_handles.append(optimizer.register_step_pre_hook(lambda *_: self._mask_grads()))
        self._opt_handles.append(optimizer.register_step_post_hook(lambda *_: self.apply_()))
        self.clear_optimizer_state(optimizer)

    @torch.no_grad()
    def clear_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Momentum restored from a rewind point predates this mask: zero it where pruned."""
        for n, p in self.params.items():
            for v in optimizer.state.get(p, {}).values():
                if torch.is_tensor(v) and v.shape == p.shape:
                    v.masked_fill_(self.pruned[n], 0)

    @torch.no_grad()
    def state_masked(self, optimizer: torch.optim.Optimizer) -> bool:
        """Every optimizer state tensor shaped like a pruned parameter (Adam's moments) is zero where
        the mask prunes: nothing the optimizer carries could move a pruned weight."""
        for n, p in self.params.items():
            for v in optimizer.state.get(p, {}).values():
                if torch.is_tensor(v) and v.shape == p.shape and bool(v[self.pruned[n]].any()):
                    return False
        return True

    def remove_optimizer_hooks(self) -> None:
        """Detach from optimizers that are about to be discarded (the gradient hooks stay)."""
        for h in self._opt_handles:
            h.remove()
        self._opt_handles = []

    def remove(self) -> None:
        for h in self._handles + self._opt_handles:
            h.remove()
        self._handles, self._opt_handles = [], []
