"""Initialisations a ticket can be trained from (SPEC §3).

* θ0 — the given pre-trained state (``snapshot``)
* θi — a snapshot at rewind step i (captured by the trainer, see ``ltvl.core.train``)
* θ'0 — another checkpoint in the same architecture (``load_matching``, e.g. BERT init)
* θ''0 — θ0 with each prunable tensor's elements shuffled (``shuffle_within_tensors``)
* random — a fresh seeded initialisation (``reinitialise``)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the full state dict (what θ0 / θi mean in code)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class InitReport:
    """What ``load_matching`` did, so a θ'0 run can say exactly which weights came from where."""

    loaded: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)  # in model, not in checkpoint
    unused: list[str] = field(default_factory=list)  # in checkpoint, not in model

    def summary(self) -> str:
        return (f"loaded {len(self.loaded)}, shape-mismatched {len(self.shape_mismatch)}, "
                f"freshly initialised {len(self.initialised)}, unused from checkpoint {len(self.unused)}")


def load_matching(model: nn.Module, state: Mapping[str, torch.Tensor]) -> InitReport:
    """θ'0: copy every tensor that matches by name and shape; keep the model's own init elsewhere."""
    own = model.state_dict()
    rep = InitReport()
    with torch.no_grad():
        for name, t in own.items():
            if name not in state:
                rep.initialised.append(name)
            elif tuple(state[name].shape) != tuple(t.shape):
                rep.shape_mismatch.append(name)
            else:
                t.copy_(state[name])
                rep.loaded.append(name)
    rep.unused = [n for n in state if n not in own]
    return rep


def _seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"shuffle:{seed}:{name}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


def shuffle_within_tensors(model: nn.Module, names: Iterable[str], seed: int) -> None:
    """θ''0: permute the elements of each named tensor in place; same seed, same permutation."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in names:
            p = params[name]
            g = torch.Generator().manual_seed(_seed(seed, name))
            perm = torch.randperm(p.numel(), generator=g).to(p.device)
            p.copy_(p.reshape(-1)[perm].reshape(p.shape))


def reinitialise(model: nn.Module, seed: int) -> None:
    """A fresh random init: every submodule's own ``reset_parameters``, under a fixed seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for mod in model.modules():
            if hasattr(mod, "reset_parameters") and callable(mod.reset_parameters):
                mod.reset_parameters()
