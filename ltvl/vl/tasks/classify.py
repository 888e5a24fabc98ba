"""VQA (soft-score BCE, VQA accuracy), GQA and SNLI-VE (cross-entropy, accuracy)."""

from __future__ import annotations

import torch
from torch import nn

from ltvl.util.errors import LtvlError
from ltvl.vl.data.store import DatasetInfo, Split
from ltvl.vl.tasks.base import CrossEntropyAccuracy, VLTask, column, image_batch, padded_lists, text_inputs


class VQATask(VLTask):
    """UNITER's VQA: MLP over [CLS] → |answers| logits; BCE against soft scores x |answers|."""

    name = "vqa"

    def num_outputs(self, info: DatasetInfo) -> int:
        if not info.answers:
            raise LtvlError("VQA needs an answer vocabulary", where="dataset.json answers")
        return len(info.answers)

    def prepare(self, split: Split, tokenizer, max_len: int) -> dict:
        ex = split.examples
        n_ans = self.num_outputs(split.info)
        ids, scores = padded_lists(ex["answer_ids"], -1), padded_lists(ex["answer_scores"], 0.0)
        bad = ids[(ids >= n_ans) | (ids < -1)]
        if len(bad):
            raise LtvlError(f"answer id {int(bad[0])} is outside the {n_ans}-answer vocabulary",
                            where="examples.answer_ids", fix="answer_ids index dataset.json 'answers'")
        return {"rows": torch.arange(ex.num_rows), "image_id": column(ex, "image_id"),
                "answer_ids": torch.from_numpy(ids.astype("int64")), "answer_scores": torch.from_numpy(scores),
                **text_inputs(tokenizer, ex, max_len)}

    def collate(self, prep: dict, split: Split, rows: torch.Tensor, gen: torch.Generator) -> dict:
        ids, scores = prep["answer_ids"][rows], prep["answer_scores"][rows]
        target = torch.zeros(len(rows), self.num_outputs(split.info))
        hit = ids >= 0
        target[torch.arange(len(rows))[:, None].expand_as(ids)[hit], ids[hit]] = scores[hit]
        return {"input_ids": prep["input_ids"][rows], "attention_mask": prep["attention_mask"][rows],
                "targets": target, **image_batch(split.images, prep["image_id"][rows.numpy()])}

    def loss(self, logits, batch):
        return nn.functional.binary_cross_entropy_with_logits(logits, batch["targets"]) * logits.shape[1]

    def score(self, logits, batch):
        picked = batch["targets"].gather(1, logits.argmax(1, keepdim=True)).squeeze(1)
        return {"vqa_score": float(picked.sum()), "n": float(len(picked))}

    def majority_class(self, train_prep: dict) -> int | None:
        ids, scores = train_prep["answer_ids"], train_prep["answer_scores"]
        hit = ids >= 0
        if not hit.any():
            return None
        totals = torch.zeros(int(ids.max()) + 1).index_add_(0, ids[hit], scores[hit].float())
        return int(totals.argmax())  # the answer with the most VQA credit over the training split

    def finalize(self, s):
        acc = s["vqa_score"] / s["n"]
        return {"metric": acc, "vqa_accuracy": acc, "n": s["n"]}


NO_ANSWER = -1  # a question whose answers are all outside the vocabulary (LXMERT's GQA): scored wrong, no loss


class LabelTask(CrossEntropyAccuracy, VLTask):
    """Single-label classification over [CLS]: GQA (answer vocabulary) and SNLI-VE (3-way)."""

    def __init__(self, name: str, n_labels: int | None = None):
        self.name, self.n_labels = name, n_labels

    def num_outputs(self, info: DatasetInfo) -> int:
        n = self.n_labels or (len(info.answers) if info.answers else info.num_labels)
        if not n:
            raise LtvlError(f"{self.name} needs 'answers' or 'num_labels'", where="dataset.json")
        return n

    def prepare(self, split: Split, tokenizer, max_len: int) -> dict:
        ex = split.examples
        labels = torch.from_numpy(column(ex, "label").astype("int64"))
        n = self.num_outputs(split.info)
        if len(labels) and (labels.min() < NO_ANSWER or labels.max() >= n):
            raise LtvlError(f"labels must be in [0, {n}) (or -1: no answer in the vocabulary), found "
                            f"{int(labels.min())}..{int(labels.max())}", where="examples.label")
        return {"rows": torch.arange(ex.num_rows), "image_id": column(ex, "image_id"), "labels": labels,
                **text_inputs(tokenizer, ex, max_len)}

    def collate(self, prep, split, rows, gen):
        return {"input_ids": prep["input_ids"][rows], "attention_mask": prep["attention_mask"][rows],
                "labels": prep["labels"][rows], **image_batch(split.images, prep["image_id"][rows.numpy()])}

    def loss(self, logits, batch):
        y = batch[self.label_key]
        if (y == NO_ANSWER).any():  # GQA questions whose answers are all outside the vocabulary: no target
            known = y != NO_ANSWER
            if not known.any():
                return logits.sum() * 0.0
            return nn.functional.cross_entropy(logits[known], y[known])
        return nn.functional.cross_entropy(logits, y)

    def majority_class(self, train_prep: dict) -> int | None:
        labels = train_prep["labels"]
        labels = labels[labels != NO_ANSWER]
        return int(torch.bincount(labels).argmax()) if len(labels) else None
