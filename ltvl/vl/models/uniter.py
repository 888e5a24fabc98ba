"""UNITER-style single-stream backbone on transformers' BERT modules (SPEC §1).

Text: transformers ``BertEmbeddings`` (word + position + type → LayerNorm).
Image: UNITER's image embeddings — region feature → Linear → LN, 7-d box → Linear → LN,
summed with the type-1 embedding → LN. The two sequences are concatenated and run
through transformers ``BertEncoder``; ``BertPooler`` reads the first text token.

Module names follow the UNITER repository (``embeddings``, ``img_embeddings.{img_linear,
img_layer_norm, pos_linear, pos_layer_norm, LayerNorm}``, ``encoder.layer.N``, ``pooler``),
so official checkpoints load by renaming ``uniter.`` (see ``ltvl.vl.models.convert``).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import BertConfig, BertModel
from transformers.masking_utils import create_bidirectional_mask

from ltvl.vl.data.schema import BOX_DIM
from ltvl.vl.models.base import POOLINGS, VLBackbone, VLOutput, add_delta, bert_init_

log = logging.getLogger(__name__)


class UniterImageEmbeddings(nn.Module):
    def __init__(self, config: BertConfig, img_dim: int):
        super().__init__()
        h = config.hidden_size
        self.img_linear = nn.Linear(img_dim, h)
        self.img_layer_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.pos_linear = nn.Linear(BOX_DIM, h)
        self.pos_layer_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        bert_init_(self, config.initializer_range)

    def forward(self, feats: torch.Tensor, boxes: torch.Tensor, type_embeddings: torch.Tensor) -> torch.Tensor:
        x = self.img_layer_norm(self.img_linear(feats)) + self.pos_layer_norm(self.pos_linear(boxes))
        return self.dropout(self.LayerNorm(x + type_embeddings))




class UniterBackbone(VLBackbone):
    """``pooling`` is what the pooler reads: the [CLS] state (UNITER), or [CLS] plus the mean image
    state. The second gives the image a direct path to the answer, which a text encoder that never
    saw an image needs: MiniLM fine-tuned with [CLS] alone answers easy-VQA from the question
    (bench/recipe_check.py)."""

    def __init__(self, config: BertConfig, img_dim: int, bert: BertModel | None = None, pooling: str = "cls"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")
        self.pooling = pooling
        bert = bert or BertModel(config, add_pooling_layer=True)
        self.config = bert.config
        self.hidden_size = self.config.hidden_size
        self.img_dim = img_dim
        self.embeddings, self.encoder, self.pooler = bert.embeddings, bert.encoder, bert.pooler
        self.img_embeddings = UniterImageEmbeddings(self.config, img_dim)

    @classmethod
    def from_bert(cls, directory: str, img_dim: int, num_layers: int | None = None,
                  pooling: str = "cls", allow_missing: str | None = None) -> UniterBackbone:
        """θ0 from a local BERT-architecture checkpoint directory (optionally the first N layers);
        ``load_report`` says what loaded, and a tensor the directory lacks is an error unless
        ``allow_missing`` names it."""
        from ltvl.vl.models.convert import from_pretrained

        bert, report = from_pretrained(BertModel, directory, "bert", num_layers, allow_missing, add_pooling_layer=True)
        bb = cls(bert.config, img_dim, bert, pooling)
        bb.load_report = report
        return bb

    def word_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def image_input_shape(self, batch: dict) -> torch.Size:
        return batch["features"].shape

    def forward(self, batch: dict, text_delta: torch.Tensor | None = None,
                image_delta: torch.Tensor | None = None) -> VLOutput:
        ids, tmask = batch["input_ids"], batch["attention_mask"]
        words = add_delta(self.embeddings.word_embeddings(ids), text_delta, "text")
        txt = self.embeddings(inputs_embeds=words, token_type_ids=torch.zeros_like(ids))
        feats = add_delta(batch["features"].to(txt.dtype), image_delta, "image")
        imask = batch["image_mask"]
        type_emb = self.embeddings.token_type_embeddings(torch.ones_like(imask, dtype=torch.long))
        img = self.img_embeddings(feats, batch["boxes"].to(txt.dtype), type_emb)
        hidden = torch.cat([txt, img], dim=1)
        mask = torch.cat([tmask, imask], dim=1)
        mask4 = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=mask)
        seq = self.encoder(hidden, attention_mask=mask4).last_hidden_state
        L = ids.shape[1]
        return VLOutput(self._pool(seq, L, imask), seq[:, :L], seq[:, L:], imask)

    def _pool(self, seq: torch.Tensor, L: int, imask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return self.pooler(seq)
        m = imask.to(seq.dtype).unsqueeze(-1)
        image_mean = (seq[:, L:] * m).sum(1) / m.sum(1).clamp(min=1)
        return self.pooler.activation(self.pooler.dense(seq[:, 0] + image_mean))
