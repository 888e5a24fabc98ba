"""LXMERT (two-stream) via transformers ``LxmertModel``; boxes use the first 4 of the 7 box dims."""

from __future__ import annotations

import torch
from torch import nn
from transformers import LxmertConfig, LxmertModel

from ltvl.vl.models.base import VLBackbone, VLOutput, add_delta


class LxmertBackbone(VLBackbone):
    def __init__(self, config: LxmertConfig, model: LxmertModel | None = None):
        super().__init__()
        self.lxmert = model or LxmertModel(config)
        self.config = self.lxmert.config
        self.hidden_size = self.config.hidden_size
        self.img_dim = self.config.visual_feat_dim

    @classmethod
    def from_pretrained(cls, directory: str, allow_missing: str | None = None) -> LxmertBackbone:
        """A transformers LXMERT directory (``LxmertForPreTraining``'s heads are dropped and counted)."""
        from ltvl.vl.models.convert import from_pretrained

        model, report = from_pretrained(LxmertModel, directory, "lxmert", allow_missing=allow_missing)
        bb = cls(model.config, model)
        bb.load_report = report
        return bb

    def word_embeddings(self) -> nn.Embedding:
        return self.lxmert.embeddings.word_embeddings

    def image_input_shape(self, batch: dict) -> torch.Size:
        return batch["features"].shape

    def forward(self, batch: dict, text_delta: torch.Tensor | None = None,
                image_delta: torch.Tensor | None = None) -> VLOutput:
        words = add_delta(self.word_embeddings()(batch["input_ids"]), text_delta, "text")
        feats = add_delta(batch["features"].to(words.dtype), image_delta, "image")
        out = self.lxmert(inputs_embeds=words, attention_mask=batch["attention_mask"], visual_feats=feats,
                          visual_pos=batch["boxes"][..., :4].to(words.dtype),
                          visual_attention_mask=batch["image_mask"], return_dict=True)
        return VLOutput(out.pooled_output, out.language_output, out.vision_output, batch["image_mask"])
