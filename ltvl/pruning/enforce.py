"""Exact masked training: pruned weights stay exactly 0 and never receive gradient.

Two hooks do it. A tensor hook zeroes the pruned entries of every gradient before
it is accumulated (so DDP all-reduces, clipping and AMP unscaling all see zeros),
and an optimizer step post-hook re-zeroes the pruned weights after each step, so
nothing an optimizer does (AdamW's decoupled weight decay, momentum carried over
from before the prune, a bf16 round-off) can revive them.
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
        # Store what is *pruned*: masked_fill_ wants True where we write zeros.
        self.pruned = {n: (~mask.tensors[n]).to(p.device) for n, p in self.params.items()}
        self._handles = [p.register_hook(self._grad_hook(n)) for n, p in self.params.items()]
        self._opt_handles: list = []
        self.apply_()

    def _grad_hook(self, name: str):
        pruned = self.pruned[name]
        return lambda g: g.masked_fill(pruned, 0)

    @torch.no_grad()
    def apply_(self) -> None:
        """Zero the pruned weights now."""
        for n, p in self.params.items():
            p.masked_fill_(self.pruned[n], 0)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Re-zero after every ``optimizer.step()`` and clear stale momentum at pruned entries."""
        self._opt_handles.append(optimizer.register_step_post_hook(lambda *_: self.apply_()))
        self.clear_optimizer_state(optimizer)

    @torch.no_grad()
    def clear_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Momentum restored from a rewind point predates this mask: zero it where pruned."""
        for n, p in self.params.items():
            for v in optimizer.state.get(p, {}).values():
                if torch.is_tensor(v) and v.shape == p.shape:
                    v.masked_fill_(self.pruned[n], 0)

    def remove_optimizer_hooks(self) -> None:
        """Detach from optimizers that are about to be discarded (the gradient hooks stay)."""
        for h in self._opt_handles:
            h.remove()
        self._opt_handles = []

    def remove(self) -> None:
        for h in self._handles + self._opt_handles:
            h.remove()
        self._handles, self._opt_handles = [], []
