"""The one interface every backbone offers the tasks, adversarial training and pruning."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

POOLINGS = ("cls", "cls+image")  # what a UNITER-style pooler reads: [CLS], or [CLS] + the mean image state


@dataclass
class VLOutput:
    pooled: torch.Tensor  # (B, H): the [CLS] summary every classification head reads
    text: torch.Tensor  # (B, L, H) hidden states of the text tokens
    image: torch.Tensor  # (B, R, H) hidden states of the regions / patches
    image_mask: torch.Tensor  # (B, R) 1 for real regions


class VLBackbone(nn.Module):
    """Subclasses implement ``forward(batch, text_delta=None, image_delta=None) -> VLOutput``.

    ``text_delta`` is added to the word embeddings (before position/type embeddings and
    LayerNorm); ``image_delta`` to the image inputs (region features before the image
    Linear; ViLT: patch embeddings). That is where VILLA-style adversarial training
    perturbs (SPEC §4).
    """

    hidden_size: int
    uses_pixels: bool = False
    has_regions: bool = True  # False for ViLT: patches, not detector regions
    load_report = None  # what loading its checkpoint did (ltvl.vl.models.convert.LoadReport); None: random init

    def word_embeddings(self) -> nn.Embedding:
        raise NotImplementedError

    def add_word_embeddings(self, n: int, std: float = 0.02) -> None:
        """Grow the vocabulary by ``n`` tokens (VCR's person tags), as UNITER's
        ``init_word_embedding``: the old rows kept, the new ones drawn from N(0, std)."""
        old = self.word_embeddings()
        new = nn.Embedding(old.num_embeddings + n, old.embedding_dim, padding_idx=old.padding_idx,
                           device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight.normal_(0.0, std)
            new.weight[: old.num_embeddings] = old.weight
        parent, attr = next((m, name) for m in self.modules() for name, child in m.named_children() if child is old)
        setattr(parent, attr, new)

    def image_input_shape(self, batch: dict) -> torch.Size:
        """Shape of the tensor ``image_delta`` perturbs for this batch."""
        raise NotImplementedError


def add_delta(x: torch.Tensor, delta, kind: str) -> torch.Tensor:
    """x + δ, where δ is a tensor, None, or a provider called as ``delta(kind, x)`` (ltvl.core.adversarial)."""
    if delta is None:
        return x
    d = delta(kind, x) if callable(delta) else delta
    return x if d is None else x + d


def bert_init_(module: nn.Module, std: float) -> None:
    """BERT's initialisation for freshly added layers (image embeddings, heads)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
