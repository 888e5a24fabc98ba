"""Magnitude, random and high-magnitude pruning, globally or per tensor, to exact counts.

Every function takes the current mask and returns a new one whose ``parent`` is the
old mask's sha256; already-pruned weights stay pruned. Counts are exact: a global
prune to sparsity ``s`` prunes ``round(s * N)`` weights, no more, no fewer.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

import torch

from ltvl.pruning.kselect import ScoreFn, select_smallest
from ltvl.pruning.mask import Mask
from ltvl.pruning.methods import get_method
from ltvl.util.errors import LtvlError


class Method(str, Enum):
    MAGNITUDE = "magnitude"  # prune the smallest |w| (IMP)
    RANDOM = "random"  # prune uniformly at random (RP baseline)
    HIGH_MAGNITUDE = "high_magnitude"  # prune the largest |w| (LXMERT study's complement baseline)
    ALL = "all"  # prune every prunable weight: the 100%-sparse control (SPEC §7), one round at sparsity 1


class Scope(str, Enum):
    GLOBAL = "global"  # one comparison over every prunable weight
    LAYERWISE = "layerwise"  # each tensor pruned to the sparsity
    ROW = "row"  # each output row of each tensor pruned to the sparsity (Wanda's comparison group)


def check_finite(weights: Mapping[str, torch.Tensor], where: str = "weights") -> None:
    """Magnitude pruning of NaN/inf weights is meaningless: refuse before any work."""
    for name, w in weights.items():
        if not torch.isfinite(w).all():
            bad = int((~torch.isfinite(w)).sum())
            raise LtvlError(
                f"parameter '{name}' has {bad} NaN/inf values",
                where=where,
                fix="the checkpoint is damaged or training diverged; use a finite checkpoint",
            )


def score_fn(weights: Mapping[str, torch.Tensor], method: Method | str, seed: int | None,
             inputs: Mapping[str, torch.Tensor] | None = None) -> ScoreFn:
    """Lazy per-tensor scores of a registered method; lowest score = pruned first. Deterministic for a seed."""
    info = get_method(method)
    if info.scores is None:
        raise LtvlError(f"method {info.name!r} prunes everything: it has no scores", where="method")
    if not info.needs_inputs:
        return info.scores(weights, seed)
    if inputs is None:
        raise LtvlError(f"method {info.name!r} scores weights by their input activations, and none were given",
                        where="method",
                        fix="pass its calibration statistics (ltvl.pruning.calibration.calibrated_inputs)")
    return info.scores(weights, seed, inputs)


def _validate_sparsity(s: float, where: str) -> None:
    if not (0.0 <= s < 1.0):
        raise LtvlError(
            f"sparsity {s} is outside [0, 1)",
            where=where,
            fix="give the fraction of weights to prune, e.g. 0.7 for 70%",
        )


def prune_to_sparsity(
    weights: Mapping[str, torch.Tensor],
    mask: Mask | None,
    sparsity: float,
    *,
    method: Method | str = Method.MAGNITUDE,
    scope: Scope | str = Scope.GLOBAL,
    seed: int | None = None,
    metadata: dict | None = None,
    inputs: Mapping[str, torch.Tensor] | None = None,
) -> Mask:
    """Prune more weights until exactly ``round(sparsity * N)`` are pruned (per tensor if layerwise,
    per output row if row). ``inputs``: calibration input norms, for a method that reads them."""
    info, scope = get_method(method), Scope(scope)
    if info.scores is None:
        return _all_pruned(weights, mask, sparsity, metadata)
    _validate_sparsity(sparsity, "sparsity")
    if info.reads_weights:
        check_finite(weights)
    mask = mask or Mask.dense_like(weights)
    mask.check_compatible({n: tuple(w.shape) for n, w in weights.items()}, what="weights")
    device = next(iter(weights.values())).device
    scores = score_fn(weights, method, seed, inputs)
    shapes = {n: w.shape for n, w in weights.items()}
    alive = {n: t.to(device) for n, t in mask.tensors.items()}
    meta = {
        "method": info.name,
        "scope": scope.value,
        "sparsity_target": sparsity,
        **({"seed": seed} if seed is not None else {}),
        **(metadata or {}),
    }
    if scope is Scope.ROW:
        return Mask({n: mask.tensors[n] & ~prune_rows(n, shapes[n], scores, alive[n], sparsity).cpu()
                     for n in shapes}, parent=mask.sha256, metadata=meta)
    if scope is Scope.GLOBAL:
        groups = [list(shapes)]
    else:
        groups = [[n] for n in shapes]
    new = {}
    for names in groups:
        total = sum(shapes[n].numel() for n in names)
        already = sum(int((~mask.tensors[n]).sum()) for n in names)
        target = round(sparsity * total)
        if target < already:
            raise LtvlError(
                f"target sparsity {sparsity:.4f} is below the mask's current sparsity "
                f"({already / total:.4f}{' in ' + names[0] if scope is Scope.LAYERWISE else ''})",
                where="sparsity",
                fix="pruning only removes weights; ask for a higher sparsity",
            )
        chosen = select_smallest(
            {n: shapes[n] for n in names}, scores, {n: alive[n] for n in names}, target - already, device=device
        )
        for n in names:
            new[n] = mask.tensors[n] & ~chosen[n]
    return Mask(new, parent=mask.sha256, metadata=meta)


def prune_rows(name: str, shape: torch.Size, scores: ScoreFn, alive: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The weights to prune so that every output row keeps exactly ``round(sparsity * columns)`` pruned:
    each row's lowest live scores, ties by column (a stable sort). Rows are dim 0 of a 2-D weight."""
    if len(shape) != 2:
        raise LtvlError(f"scope row compares the weights of each output row; {name} has shape {tuple(shape)}",
                        where="scope", fix="prune 2-D (Linear) weights only, or use scope global or layerwise")
    rows, cols = shape
    target = round(sparsity * cols)
    already = (~alive).sum(dim=1)
    if bool((already > target).any()):
        raise LtvlError(f"target sparsity {sparsity:.4f} is below the current sparsity of a row of {name} "
                        f"({int(already.max())}/{cols} pruned)", where="sparsity",
                        fix="pruning only removes weights; ask for a higher sparsity")
    s = scores(name, torch.empty(shape, dtype=torch.float32, device=alive.device)).to(torch.float32)
    s = s.masked_fill(~alive, float("inf"))  # pruned weights sort last and are never chosen again
    order = torch.sort(s, dim=1, stable=True).indices
    take = torch.arange(cols, device=alive.device).expand(rows, cols) < (target - already).unsqueeze(1)
    return torch.zeros(shape, dtype=torch.bool, device=alive.device).scatter_(1, order, take)


def _all_pruned(weights: Mapping[str, torch.Tensor], mask: Mask | None, sparsity: float,
                metadata: dict | None) -> Mask:
    """The 100%-sparse control's mask: nothing prunable is kept, so only the unpruned parameters
    (embeddings, norms, heads) can learn; what that scores is the floor a ticket must beat."""
    if sparsity != 1.0:
        raise LtvlError(f"method 'all' prunes to sparsity 1, not {sparsity}", where="sparsity",
                        fix="use method magnitude or random for a partial sparsity")
    mask = mask or Mask.dense_like(weights)
    mask.check_compatible({n: tuple(w.shape) for n, w in weights.items()}, what="weights")
    return Mask({n: torch.zeros_like(t) for n, t in mask.tensors.items()}, parent=mask.sha256,
                metadata={"method": Method.ALL.value, "sparsity_target": 1.0, **(metadata or {})})


def prune_fraction_of_remaining(weights: Mapping[str, torch.Tensor], mask: Mask | None, rate: float, **kw) -> Mask:
    """One IMP step: prune ``rate`` of the weights still alive (counted globally)."""
    if not (0.0 < rate < 1.0):
        raise LtvlError(
            f"pruning rate {rate} is outside (0, 1)", where="rate", fix="e.g. 0.2 prunes 20% of what remains"
        )
    mask = mask or Mask.dense_like(weights)
    n, pruned = mask.numel, mask.n_pruned
    return prune_to_sparsity(weights, mask, (pruned + round(rate * (n - pruned))) / n, **kw)


def random_mask(
    shapes: Mapping[str, tuple[int, ...]],
    sparsity: float,
    seed: int,
    *,
    scope: Scope | str = Scope.GLOBAL,
    metadata: dict | None = None,
) -> Mask:
    """The RP baseline: a random mask with exactly the requested number of pruned weights."""
    fake = {n: torch.empty(tuple(s), device="meta") for n, s in shapes.items()}
    _validate_sparsity(sparsity, "sparsity")
    scores = score_fn(fake, Method.RANDOM, seed)
    groups = [list(shapes)] if Scope(scope) is Scope.GLOBAL else [[n] for n in shapes]
    new = {}
    for names in groups:
        total = sum(int(torch.Size(shapes[n]).numel()) for n in names)
        chosen = select_smallest({n: torch.Size(shapes[n]) for n in names}, scores, None, round(sparsity * total))
        new.update({n: ~chosen[n] for n in names})
    return Mask(
        new,
        parent=None,
        metadata={
            "method": "random",
            "scope": Scope(scope).value,
            "sparsity_target": sparsity,
            "seed": seed,
            **(metadata or {}),
        },
    )


def matched_random(mask: Mask, seed: int, scope: Scope | str = Scope.GLOBAL) -> Mask:
    """RP at the same sparsity as ``mask`` (per tensor too, if layerwise)."""
    if Scope(scope) is Scope.GLOBAL:
        return random_mask(mask.shapes, mask.n_pruned / mask.numel, seed, metadata={"matched_to": mask.sha256})
    out = {}
    for n, t in mask.tensors.items():
        sub = random_mask({n: tuple(t.shape)}, 1.0 - float(t.sum()) / t.numel(), seed)
        out[n] = sub.tensors[n]
    return Mask(out, metadata={"method": "random", "scope": "layerwise", "seed": seed, "matched_to": mask.sha256})


def high_magnitude_mask(weights: Mapping[str, torch.Tensor], like: Mask) -> Mask:
    """Keep the *smallest* weights, pruning as many as ``like`` prunes (LXMERT study)."""
    return prune_to_sparsity(
        weights, None, like.n_pruned / like.numel, method=Method.HIGH_MAGNITUDE, metadata={"matched_to": like.sha256}
    )
