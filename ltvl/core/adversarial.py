"""VILLA / FreeLB-style adversarial training in the embedding space (SPEC §4).

    min E[ L_std + R_at + α·R_kl ],  R_at = max_{‖δ‖≤ε} L(f(x+δ), y),
                                     R_kl = max_{‖δ‖≤ε} KL(f(x+δ)‖f(x)) + KL(f(x)‖f(x+δ))

δ lives on the word embeddings (before position/type embeddings and LayerNorm) and/or the
image inputs (region features before the image Linear; ViLT: patch embeddings). K steps of
normalised gradient ascent, δ ← Π_ε(δ + η·g/‖g‖_F), per example. Parameter gradients of
every step accumulate ("free" AT): the caller makes one optimizer step afterwards.

Pure torch: the backbones call back into a :class:`Perturbations` object to get δ for each
forward pass, so tasks with several forwards (NLVR2, VCR, pre-training) get one δ each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ltvl.util.errors import LtvlError, require


@dataclass(frozen=True)
class AdvConfig:
    """Defaults are VILLA's base configs: K=3, η=1e-3, α=1.5, δ0=0, ε=0 (unbounded)."""

    enabled: bool = False
    modality: str = "both"  # text | image | both
    epsilon: float = 0.0  # Frobenius radius per example; 0 = unbounded (VILLA's configs)
    step_size: float = 1e-3  # η (VILLA: 1e-3 for VQA/NLVR2/VE, 1e-2 for VCR)
    steps: int = 3  # K
    kl_weight: float = 1.5  # α
    init: str = "zero"  # zero | random
    init_magnitude: float = 0.0  # for init=random: δ0 ~ U(-m, m), then projected

    def validate(self, where: str = "adversarial", sep: str = ".") -> None:
        """``where``/``sep`` name the keys as the user wrote them (``adversarial.epsilon``, ``adv_epsilon``)."""
        require(
            self.modality in ("text", "image", "both"),
            f"unknown modality {self.modality!r}",
            where=f"{where}{sep}modality",
            fix="use text, image or both",
        )
        require(
            self.epsilon >= 0, f"epsilon must be >= 0 (0 = unbounded), got {self.epsilon}", where=f"{where}{sep}epsilon"
        )
        require(self.step_size >= 0, f"step_size must be >= 0, got {self.step_size}", where=f"{where}{sep}step_size")
        require(
            isinstance(self.steps, int) and self.steps >= 0,
            f"steps (K) must be an integer >= 0, got {self.steps}",
            where=f"{where}{sep}steps",
        )
        require(
            self.kl_weight >= 0,
            f"kl_weight must be >= 0, got {self.kl_weight}",
            where=f"{where}{sep}kl_weight" if sep == "." else f"{where}{sep}kl",
        )
        require(
            self.init in ("zero", "random"),
            f"unknown init {self.init!r}",
            where=f"{where}{sep}init",
            fix="use zero or random",
        )
        require(self.init_magnitude >= 0, "init_magnitude must be >= 0", where=f"{where}{sep}init_magnitude")

    @property
    def active(self) -> bool:
        return self.enabled and self.steps > 0


def per_example_norm(t: torch.Tensor) -> torch.Tensor:
    """‖t_b‖_F for each example b, shaped to broadcast against t."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def project(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Π onto the per-example Frobenius ball of radius eps (eps = 0: unbounded, no-op)."""
    if eps <= 0:
        return delta
    return delta * torch.clamp(eps / (per_example_norm(delta) + 1e-12), max=1.0)


class Perturbations:
    """Hands each backbone forward its δ, creating it on first use (zero or random init).

    Backbones call ``provider(kind, like)`` with ``kind`` in {"text", "image"} and the tensor
    δ will be added to; the n-th call of a kind always maps to the n-th δ of that kind.
    """

    def __init__(self, cfg: AdvConfig, generator: torch.Generator | None = None):
        self.cfg, self.gen = cfg, generator
        self.deltas: dict[tuple[str, int], torch.Tensor] = {}
        self._calls: dict[str, int] = {}

    def wants(self, kind: str) -> bool:
        return self.cfg.modality in (kind, "both")

    def start_pass(self) -> None:
        self._calls = {}

    def __call__(self, kind: str, like: torch.Tensor) -> torch.Tensor | None:
        if not self.wants(kind):
            return None
        i = self._calls.get(kind, 0)
        self._calls[kind] = i + 1
        key = (kind, i)
        if key not in self.deltas:
            d = torch.zeros(like.shape, dtype=torch.float32, device=like.device)
            if self.cfg.init == "random" and self.cfg.init_magnitude > 0:
                r = torch.rand(like.shape, generator=self.gen, dtype=torch.float32)
                d = project((2 * r - 1).to(like.device) * self.cfg.init_magnitude, self.cfg.epsilon)
            self.deltas[key] = d.requires_grad_()
        return self.deltas[key].to(like.dtype)

    def ascend(self) -> None:
        """δ ← Π_ε(δ + η · g / ‖g‖_F) for every δ, per example; then detach for the next step."""
        for key, d in self.deltas.items():
            g = d.grad if d.grad is not None else torch.zeros_like(d)
            step = self.cfg.step_size * g / (per_example_norm(g) + 1e-12)
            self.deltas[key] = project(d.detach() + step, self.cfg.epsilon).requires_grad_()

    def check_used(self) -> None:
        if self.cfg.modality in ("image", "both") and not any(k == "image" for k, _ in self.deltas):
            raise LtvlError(
                "image perturbation was requested but the batch has no image input",
                where="adversarial.modality",
                fix="use modality=text for text-only batches",
            )


def symmetric_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) + KL(q‖p) between softmax distributions over the last dim, mean over the rest."""
    lp, lq = F.log_softmax(p_logits.float(), -1), F.log_softmax(q_logits.float(), -1)
    kl = (lp.exp() * (lp - lq)).sum(-1) + (lq.exp() * (lq - lp)).sum(-1)
    return kl.mean()


def distributions(out: Any) -> list[torch.Tensor]:
    """The logits a task's output holds, for R_kl (regression outputs such as MRFR are skipped)."""
    if torch.is_tensor(out):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in distributions(o)]
    if isinstance(out, dict):
        return [t for k, v in out.items() if k != "mrfr" for t in distributions(v)]
    return []


def adversarial_backward(
    forward: Callable[..., Any],
    criterion: Callable[[Any], torch.Tensor],
    cfg: AdvConfig,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
    kl_view: Callable[[Any], list[torch.Tensor]] = distributions,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
) -> dict[str, float]:
    """One AT step's backward passes. ``forward(text_delta=…, image_delta=…)`` runs the model on
    the batch; ``criterion(out)`` is the task's own loss. Gradients are scaled by ``scale``
    (1/grad_accum); ``backward`` lets AMP's GradScaler scale the loss. Returns the clean,
    adversarial and KL losses (for logging)."""
    clean = forward(text_delta=None, image_delta=None)
    loss_std = criterion(clean)
    backward(loss_std * scale)
    stats = {"loss": float(loss_std.detach()), "adv_loss": float("nan"), "kl": float("nan")}
    if not cfg.active:
        return stats
    clean_logits = [t.detach() for t in kl_view(clean)]
    pert = Perturbations(cfg, generator)
    for k in range(cfg.steps):
        pert.start_pass()
        out = forward(text_delta=pert, image_delta=pert)
        if k == 0:
            pert.check_used()
        l_at = criterion(out)
        l_kl = sum(symmetric_kl(a, c) for a, c in zip(kl_view(out), clean_logits)) if clean_logits else 0.0
        backward((l_at + cfg.kl_weight * l_kl) * (scale / cfg.steps))  # free AT: parameter grads accumulate
        stats["adv_loss"], stats["kl"] = float(l_at.detach()), float(torch.as_tensor(l_kl).detach())
        if k + 1 < cfg.steps:
            pert.ascend()
    return stats
