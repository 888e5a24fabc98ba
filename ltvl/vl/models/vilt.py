"""ViLT (single stream over word tokens + image patches, no detector) via transformers ``ViltModel``.

The adversarial ``image_delta`` is added to the patch embeddings (the conv projection's
output), through a forward hook on the patch projection.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import ViltConfig, ViltModel

from ltvl.vl.models.base import VLBackbone, VLOutput, add_delta

# ImageNet-style normalisation ViLT was trained with (mean = std = 0.5)
_MEAN, _STD = 0.5, 0.5


class ViltBackbone(VLBackbone):
    uses_pixels = True
    has_regions = False

    def __init__(self, config: ViltConfig, model: ViltModel | None = None):
        super().__init__()
        self.vilt = model or ViltModel(config)
        self.config = self.vilt.config
        self.hidden_size = self.config.hidden_size
        self._delta: torch.Tensor | None = None
        self.vilt.embeddings.patch_embeddings.projection.register_forward_hook(self._add_delta)

    @classmethod
    def from_pretrained(cls, directory: str, num_layers: int | None = None,
                        allow_missing: str | None = None) -> ViltBackbone:
        """A transformers ViLT directory, optionally its first N layers (``ViltForMaskedLM``'s
        ``mlm_score`` head is dropped and counted)."""
        from ltvl.vl.models.convert import from_pretrained

        model, report = from_pretrained(ViltModel, directory, "vilt", num_layers, allow_missing)
        bb = cls(model.config, model)
        bb.load_report = report
        return bb

    def _add_delta(self, _mod, _inp, out):
        return add_delta(out, self._delta, "image")

    def word_embeddings(self) -> nn.Embedding:
        return self.vilt.embeddings.text_embeddings.word_embeddings

    def image_input_shape(self, batch: dict) -> torch.Size:
        conv = self.vilt.embeddings.patch_embeddings.projection
        b, _, h, w = batch["pixels"].shape
        return torch.Size((b, conv.out_channels, h // conv.stride[0], w // conv.stride[1]))

    def forward(self, batch: dict, text_delta: torch.Tensor | None = None,
                image_delta: torch.Tensor | None = None) -> VLOutput:
        words = add_delta(self.word_embeddings()(batch["input_ids"]), text_delta, "text")
        pixels = (batch["pixels"].to(words.dtype) / 255.0 - _MEAN) / _STD
        b, _, h, w = pixels.shape
        self._delta = image_delta
        try:
            out = self.vilt(inputs_embeds=words, attention_mask=batch["attention_mask"], pixel_values=pixels,
                            pixel_mask=torch.ones(b, h, w, dtype=torch.long, device=pixels.device), return_dict=True)
        finally:
            self._delta = None
        L = words.shape[1]
        seq = out.last_hidden_state
        image = seq[:, L:]
        return VLOutput(out.pooler_output, seq[:, :L], image,
                        torch.ones(image.shape[:2], dtype=batch["attention_mask"].dtype, device=seq.device))
