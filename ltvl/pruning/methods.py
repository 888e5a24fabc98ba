"""Pruning methods by name. One registry, read by pruning itself, the parameter schema's choices,
the chain spec's checks, the MLflow tags and the arm names a report shows. A new score-based method
is one :class:`PruningMethod` and one ``register(...)`` line; its name is part of every chain's
identity that uses it, so a registered name is never renamed.

A method scores each weight lazily, per tensor; the lowest scores are pruned first
(:func:`ltvl.pruning.kselect.select_smallest`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ltvl.pruning.kselect import ScoreFn
from ltvl.util.errors import LtvlError

ScoreMaker = Callable[..., ScoreFn]  # (weights, seed) -> scores; (weights, seed, inputs) when needs_inputs


@dataclass(frozen=True)
class PruningMethod:
    name: str  # the value a config, a chain spec and a mask's metadata hold
    help: str  # one line: the schema's and the CLI's help
    arm: str  # its line in MLflow run names, the sweep summary and reports
    init_label: str  # the older ``ltvl.init`` tag (stores written before ``ltvl.arm`` carry only this)
    scores: ScoreMaker | None  # None: prunes every prunable weight at once (the 100%-sparse control)
    needs_seed: bool = False  # its scores are random: a seed makes them reproducible
    reads_weights: bool = True  # its scores read the weights, so NaN/inf weights are refused first
    # its scores read each weight's input activations (Wanda): prune_to_sparsity needs ``inputs``,
    # the ‖X_j‖₂ of every input feature over calibration batches (ltvl.pruning.calibration)
    needs_inputs: bool = False
    default_scope: str = "global"  # the comparison group when a config names none (Wanda: per output row)
    calibration: str = "norms"  # what needs_inputs reads: "norms" (‖X_j‖₂) or "gram" (XᵀX): calibration.STATISTICS
    # (weights, mask, inputs) -> the kept weights corrected for the pruned ones (SparseGPT's OBS update):
    # applied where the model continues from the pruned weights (retrain: finetune); a rewind discards it
    reconstruct: Callable[..., dict[str, torch.Tensor]] | None = None


METHODS: dict[str, PruningMethod] = {}


def register(method: PruningMethod) -> PruningMethod:
    if method.name in METHODS:
        raise ValueError(f"pruning method {method.name!r} is registered twice")
    METHODS[method.name] = method
    return method


def get_method(name: object) -> PruningMethod:
    key = getattr(name, "value", name)  # a Method enum member or its value
    if key not in METHODS:
        raise LtvlError(f"unknown pruning method {key!r}", where="method", fix=", ".join(METHODS))
    return METHODS[key]  # type: ignore[index]


def seed_for(seed: int, name: str) -> int:
    """A tensor's own random stream: the same weights draw the same numbers in any order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


def magnitude_scores(weights: Mapping[str, torch.Tensor], seed: int | None, sign: float = 1.0) -> ScoreFn:
    def magnitude(name: str, out: torch.Tensor) -> torch.Tensor:
        w = weights[name].detach()
        torch.abs(w, out=out) if w.dtype == torch.float32 else out.copy_(w).abs_()
        return out.mul_(sign) if sign < 0 else out

    magnitude.nonnegative = sign > 0  # type: ignore[attr-defined]  # lets the selector skip the sign-flip pass
    return magnitude


def high_magnitude_scores(weights: Mapping[str, torch.Tensor], seed: int | None) -> ScoreFn:
    return magnitude_scores(weights, seed, sign=-1.0)


def random_scores(weights: Mapping[str, torch.Tensor], seed: int | None) -> ScoreFn:
    if seed is None:
        raise LtvlError("random pruning needs a seed", where="seed", fix="pass --seed N")

    def rand(name: str, out: torch.Tensor) -> torch.Tensor:
        g = torch.Generator(device="cpu").manual_seed(seed_for(seed, name))
        if out.device.type != "cpu":
            return out.copy_(torch.rand(out.shape, generator=g))
        return torch.rand(out.shape, generator=g, out=out)

    return rand


def wanda_scores(weights: Mapping[str, torch.Tensor], seed: int | None,
                 inputs: Mapping[str, torch.Tensor]) -> ScoreFn:
    """Wanda (Sun et al., ICLR 2024): |W_ij| · ‖X_j‖₂, the weight's magnitude times the norm of the
    input feature it multiplies, over the calibration tokens."""
    missing = [n for n in weights if n not in inputs]
    if missing:
        raise LtvlError(f"no calibration activations for {len(missing)} prunable tensor(s), e.g. {missing[0]}",
                        where="inputs", fix="calibrate the model whose weights are pruned (input_norms)")

    def wanda(name: str, out: torch.Tensor) -> torch.Tensor:
        w, x = weights[name].detach(), inputs[name].to(weights[name].device, torch.float32)
        if w.ndim != 2 or x.shape != (w.shape[1],):
            raise LtvlError(f"Wanda scores 2-D weights by their input features; {name} has shape {tuple(w.shape)} "
                            f"and {tuple(x.shape)} input norms", where=name, fix="prune Linear weights only")
        return out.copy_(w).abs_().mul_(x)

    wanda.nonnegative = True  # type: ignore[attr-defined]
    return wanda


def _grams_for(weights: Mapping[str, torch.Tensor], inputs: Mapping[str, torch.Tensor]) -> None:
    missing = [n for n in weights if n not in inputs]
    if missing:
        raise LtvlError(f"no calibration Gram matrices for {len(missing)} prunable tensor(s), e.g. {missing[0]}",
                        where="inputs", fix="calibrate the model whose weights are pruned (input_grams)")
    for n, w in weights.items():
        if w.ndim != 2 or tuple(inputs[n].shape) != (w.shape[1], w.shape[1]):
            raise LtvlError(f"SparseGPT prunes 2-D weights with their inputs' Gram matrix; {n} has shape "
                            f"{tuple(w.shape)} and a {tuple(inputs[n].shape)} Gram matrix", where=n,
                            fix="prune Linear weights only")


def sparsegpt_scores(weights: Mapping[str, torch.Tensor], seed: int | None,
                     inputs: Mapping[str, torch.Tensor]) -> ScoreFn:
    """SparseGPT's OBS saliency W_rj² / [H_F⁻¹]_jj (ltvl.pruning.obs), from each layer's input Gram matrix."""
    from ltvl.pruning.obs import inverse_cholesky_upper, saliency

    _grams_for(weights, inputs)

    uppers: dict[str, torch.Tensor] = {}  # the selector may score a tensor twice

    def obs_saliency(name: str, out: torch.Tensor) -> torch.Tensor:
        if name not in uppers:
            uppers[name] = inverse_cholesky_upper(inputs[name])
        upper = uppers[name]
        return out.copy_(saliency(weights[name].detach().cpu(), upper).to(out.device, torch.float32))

    obs_saliency.nonnegative = True  # type: ignore[attr-defined]
    return obs_saliency


def sparsegpt_reconstruct(weights: Mapping[str, torch.Tensor], mask, inputs: Mapping[str, torch.Tensor]
                          ) -> dict[str, torch.Tensor]:
    """Every pruned tensor with its kept weights corrected by the OBS update for ``mask``."""
    from ltvl.pruning.obs import inverse_cholesky_upper, reconstruct

    _grams_for(weights, inputs)
    return {n: reconstruct(weights[n].detach().cpu(), inverse_cholesky_upper(inputs[n]), mask.tensors[n].cpu())
            for n in mask.names}


register(PruningMethod("magnitude", "prune the smallest |w| (IMP)", "IMP", "theta0", magnitude_scores))
register(PruningMethod("random", "prune uniformly at random (RP)", "RP", "RP", random_scores, needs_seed=True,
                       reads_weights=False))
register(PruningMethod("high_magnitude", "prune the largest |w|", "high-magnitude", "high_magnitude",
                       high_magnitude_scores))
register(PruningMethod("wanda", "prune the smallest |w|·‖x‖₂ (Wanda: weight times its input's norm over "
                       "calibration batches), per output row unless scope says otherwise", "Wanda", "wanda",
                       wanda_scores, needs_inputs=True, default_scope="row"))
register(PruningMethod("sparsegpt", "prune the smallest OBS saliency w²/[H⁻¹]_jj from each layer's input Gram "
                       "matrix over calibration batches (SparseGPT), per layer unless scope says otherwise; with "
                       "retrain: finetune the kept weights start corrected by SparseGPT's OBS update",
                       "SparseGPT", "sparsegpt", sparsegpt_scores, needs_inputs=True, default_scope="layerwise",
                       calibration="gram", reconstruct=sparsegpt_reconstruct))
register(PruningMethod("all", "the 100%-sparse control: one round, every prunable weight pruned, the rest trained",
                       "100%-sparse control", "sparse100", None))
