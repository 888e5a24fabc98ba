"""Flickr30k image-text retrieval: a matching score from [CLS]; contrastive loss over one positive
and ``n_neg`` sampled negative captions; R@1/5/10 for image retrieval (IR) and text retrieval (TR)."""

from __future__ import annotations

import torch
from torch import nn

from ltvl.vl.tasks.base import VLTask, column, image_batch, text_inputs


class RetrievalTask(VLTask):
    name = "flickr30k"

    def __init__(self, n_neg: int = 3, eval_images: int = 50):
        self.n_neg, self.eval_images = n_neg, eval_images

    def build_head(self, hidden, info):
        return nn.Linear(hidden, 1)

    def sequences_per_example(self) -> int:
        return self.n_neg + 1  # the caption and its sampled negatives, each with the image

    def prepare(self, split, tokenizer, max_len):
        ex = split.examples
        return {"rows": torch.arange(ex.num_rows), "image_id": column(ex, "image_id"),
                **text_inputs(tokenizer, ex, max_len)}

    def collate(self, prep, split, rows, gen):
        n, k = len(prep["rows"]), self.n_neg
        img_ids = torch.from_numpy(prep["image_id"])
        negs = torch.randint(0, n, (len(rows), k), generator=gen)
        clash = img_ids[negs] == img_ids[rows][:, None]
        negs = torch.where(clash, (negs + n // 2) % n, negs)  # a negative must describe another image
        texts = torch.cat([rows[:, None], negs], dim=1).flatten()
        img = image_batch(split.images, prep["image_id"][rows.numpy()])
        return {"input_ids": prep["input_ids"][texts], "attention_mask": prep["attention_mask"][texts],
                "group": k + 1, **{kk: v.repeat_interleave(k + 1, dim=0) for kk, v in img.items()}}

    def forward(self, backbone, head, batch, text_delta=None, image_delta=None):
        return head(backbone(batch, text_delta, image_delta).pooled).squeeze(-1)

    def kl_view(self, scores, batch):
        return [scores.view(-1, batch["group"])]  # a distribution over each positive's candidates

    def loss(self, scores, batch):
        s = scores.view(-1, batch["group"])
        return nn.functional.cross_entropy(s, torch.zeros(len(s), dtype=torch.long, device=s.device))

    def evaluate(self, model, prep, split, batch_size, limit):
        """Score every (image, caption) pair among the first ``eval_images`` images."""
        from ltvl.core.train import to_device
        dev = next(model.parameters()).device
        ids = prep["image_id"]
        images = list(dict.fromkeys(ids.tolist()))[: limit or self.eval_images]
        caps = [i for i, x in enumerate(ids.tolist()) if x in set(images)]
        owner = torch.tensor([images.index(ids[c]) for c in caps])
        scores = torch.empty(len(images), len(caps))
        for i, im in enumerate(images):
            for s in range(0, len(caps), batch_size):
                c = torch.tensor(caps[s: s + batch_size])
                img = image_batch(split.images, [im] * len(c))
                batch = to_device({"input_ids": prep["input_ids"][c], "attention_mask": prep["attention_mask"][c],
                                   **img}, dev)
                scores[i, s: s + len(c)] = model(batch).float().cpu()
        # IR: for each caption, rank of its image; TR: for each image, best rank of any of its captions
        ir_rank = (scores > scores[owner, torch.arange(len(caps))][None, :]).sum(0)
        tr_rank = torch.stack([(scores[i] > scores[i, owner == i].max()).sum() for i in range(len(images))])
        out = {}
        for k in (1, 5, 10):
            out[f"ir_r{k}"] = float((ir_rank < k).float().mean())
            out[f"tr_r{k}"] = float((tr_rank < k).float().mean())
        out["metric"] = (out["ir_r1"] + out["tr_r1"]) / 2
        out["n"] = float(len(caps))
        return out
