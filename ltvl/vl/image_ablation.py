"""Does a VQA model read its image? Score every evaluation question three ways: as is, shown
another question's image, and by the majority answer, broken down by question type.

A model that reads the image loses accuracy when shown the wrong one; a model that answers from
the question alone does not, however well it clears the controls. A question's type is its first
two words ("what color", "is there", …), VQA v2's notion of question type.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn

from ltvl.vl.tasks import TaskData
from ltvl.vl.tasks.base import ConstantAnswer

IMAGE_KEYS = ("features", "boxes", "image_mask", "pixels")
WAYS = ("model", "other image", "majority")


@dataclass
class Ablation:
    kinds: list[str]  # each question's type
    scores: dict[str, list[float]]  # way -> each question's score (VQA soft score of the argmax answer)

    def mean(self, way: str, kind: str | None = None) -> float:
        vals = [s for k, s in zip(self.kinds, self.scores[way]) if kind is None or k == kind]
        return sum(vals) / len(vals)

    def by_kind(self) -> dict[str, int]:
        """Question types, most frequent first, with their counts."""
        counts: dict[str, int] = defaultdict(int)
        for k in self.kinds:
            counts[k] += 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def question_type(text: str) -> str:
    return " ".join(text.lower().rstrip("?").split()[:2])


def image_ablation(model: nn.Module, data: TaskData) -> Ablation:
    """Score ``data``'s evaluation questions (its eval_limit) as is, with the image of the question
    half the evaluation set away (never its own), and by the training set's majority answer."""
    task, prep, split = data.task, data.eval_prep, data.eval
    n = len(prep["rows"]) if data.eval_limit is None else min(data.eval_limit, len(prep["rows"]))
    texts = split.examples.column("text").to_pylist()[:n]
    majority = ConstantAnswer(task.majority_class(data.train_prep), task.num_outputs(split.info))
    scores: dict[str, list[float]] = {w: [] for w in WAYS}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, n, data.eval_batch_size):
            rows = torch.arange(start, min(start + data.eval_batch_size, n))
            batch = task.collate(prep, split, rows, torch.Generator().manual_seed(start))
            other = task.collate(prep, split, (rows + n // 2) % n, torch.Generator().manual_seed(start))
            swapped = {**batch, **{k: other[k] for k in IMAGE_KEYS if k in other}}
            for way, m, b in zip(WAYS, (model, model, majority), (batch, swapped, batch)):
                picked = batch["targets"].gather(1, m(b).argmax(1, keepdim=True)).squeeze(1)
                scores[way] += picked.tolist()
    model.train(was_training)
    return Ablation([question_type(t) for t in texts], scores)
