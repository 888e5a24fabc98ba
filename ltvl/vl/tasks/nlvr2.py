"""NLVR2: the statement is paired with each image; the two [CLS] outputs go to a binary MLP."""

from __future__ import annotations

import torch

from ltvl.vl.tasks.base import image_batch, mlp_head, subset
from ltvl.vl.tasks.classify import LabelTask


class NLVR2Task(LabelTask):
    def __init__(self):
        super().__init__("nlvr2", 2)

    def build_head(self, hidden, info):
        return mlp_head(2 * hidden, 2)

    def sequences_per_example(self) -> int:
        return 2  # the statement with each of its two images

    def prepare(self, split, tokenizer, max_len):
        prep = super().prepare(split, tokenizer, max_len)
        prep["image_id_2"] = split.examples["image_id_2"].to_numpy()
        return prep

    def collate(self, prep, split, rows, gen):
        batch = super().collate(prep, split, rows, gen)
        batch.update(image_batch(split.images, prep["image_id_2"][rows.numpy()], prefix="img2_"))
        return batch

    def forward(self, backbone, head, batch, text_delta=None, image_delta=None):
        a = backbone(subset(batch, ""), text_delta, image_delta).pooled
        b = backbone(subset(batch, "img2_"), text_delta, image_delta).pooled
        return head(torch.cat([a, b], dim=1))
