"""RefCOCO+: a score per image region; cross-entropy over regions; accuracy of the argmax region."""

from __future__ import annotations

import torch
from torch import nn

from ltvl.util.errors import LtvlError
from ltvl.vl.tasks.base import CrossEntropyAccuracy, VLTask, column, image_batch, text_inputs


class RefCOCOTask(CrossEntropyAccuracy, VLTask):
    name = "refcoco_plus"
    label_key = "target"
    needs_regions = True

    def build_head(self, hidden, info):
        return nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=1e-12), nn.Linear(hidden, 1)
        )

    def prepare(self, split, tokenizer, max_len):
        ex = split.examples
        target = torch.from_numpy(column(ex, "target_region").astype("int64"))
        if len(target) and (target.min() < 0 or target.max() >= split.info.num_regions):
            raise LtvlError(f"target_region must be in [0, {split.info.num_regions})", where="examples.target_region")
        return {
            "rows": torch.arange(ex.num_rows),
            "image_id": column(ex, "image_id"),
            "target": target,
            **text_inputs(tokenizer, ex, max_len),
        }

    def collate(self, prep, split, rows, gen):
        return {
            "input_ids": prep["input_ids"][rows],
            "attention_mask": prep["attention_mask"][rows],
            "target": prep["target"][rows],
            **image_batch(split.images, prep["image_id"][rows.numpy()]),
        }

    def forward(self, backbone, head, batch, text_delta=None, image_delta=None):
        out = backbone(batch, text_delta, image_delta)
        logits = head(out.image).squeeze(-1)
        return logits.masked_fill(out.image_mask == 0, torch.finfo(logits.dtype).min)
