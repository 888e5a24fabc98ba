"""What every VL task shares: text tokenisation once per split, image batching, the model
wrapper, and ``TaskData`` — the bridge to ``ltvl.core.train.Trainer``'s TrainTask protocol."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from ltvl.core.train import batch_indices, derive_seed
from ltvl.vl.data.loader import auto_workers, stream
from ltvl.vl.data.schema import TOKEN_COLUMN
from ltvl.vl.data.store import DatasetInfo, ImageTable, Split
from ltvl.vl.data.tokens import PrepCache
from ltvl.vl.models.base import VLBackbone


def tokenize(
    tokenizer, texts: Sequence[str], max_len: int, pairs: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    enc = tokenizer(
        list(texts),
        list(pairs) if pairs is not None else None,
        padding="max_length",
        truncation=True,
        max_length=max_len,
        return_tensors="pt",
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def text_inputs(tokenizer, examples: pa.Table, max_len: int) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask for the examples' ``text``, or, for text imported already
    tokenised (UNITER's txt_db), from its word-piece ids: [CLS] ids [SEP], padded."""
    if TOKEN_COLUMN not in examples.schema.names:
        return tokenize(tokenizer, examples["text"].to_pylist(), max_len)
    return join_ids(tokenizer, [[ids] for ids in examples[TOKEN_COLUMN].to_pylist()], max_len)


def join_ids(tokenizer, segments: list[list[list[int]]], max_len: int) -> dict[str, torch.Tensor]:
    """Pre-tokenised segments per row -> [CLS] s1 [SEP] s2 [SEP] …, cut to ``max_len`` (ending in
    [SEP]) and padded."""
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    ids = np.full((len(segments), max_len), pad, dtype=np.int64)
    lengths = np.zeros(len(segments), dtype=np.int64)
    for i, parts in enumerate(segments):
        row = [cls]
        for p in parts:
            row.extend(p)
            row.append(sep)
        if len(row) > max_len:
            row = row[: max_len - 1] + [sep]
        ids[i, : len(row)], lengths[i] = row, len(row)
    mask = (np.arange(max_len)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}


def column(table: pa.Table, name: str) -> np.ndarray:
    return np.array(table[name].to_numpy())  # a writable copy: torch.from_numpy warns on Arrow's read-only view


def list_column(table: pa.Table, name: str) -> list[list]:
    return table[name].to_pylist()


def padded_lists(col: pa.ChunkedArray, fill) -> np.ndarray:
    """A list<number> column as a (rows, longest) array, padded with ``fill`` (vectorised)."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    off = arr.offsets.to_numpy()
    lengths = np.diff(off)
    values = arr.values.to_numpy(zero_copy_only=False)[off[0]:off[-1]] if len(arr) else np.zeros(0)
    width = int(lengths.max(initial=0))
    out = np.full((len(arr), max(width, 1)), fill, dtype=values.dtype if values.size else np.float32)
    out[np.arange(width)[None, :] < lengths[:, None]] = values
    return out


def image_batch(images: ImageTable, image_ids, prefix: str = "") -> dict[str, torch.Tensor]:
    """Image inputs for ``image_ids`` (features stay float16: the backbone casts on its device)."""
    return images.batch(image_ids, prefix)


def mlp_head(hidden: int, out: int) -> nn.Sequential:
    """UNITER's classifier: Linear(h, 2h) → GELU → LayerNorm → Linear(2h, out)."""
    return nn.Sequential(
        nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.LayerNorm(2 * hidden, eps=1e-12), nn.Linear(2 * hidden, out)
    )


def subset(batch: dict, prefix: str) -> dict:
    """Backbone inputs of image ``prefix`` (e.g. the second NLVR2 image) + the shared text."""
    keys = ("features", "boxes", "image_mask", "pixels")
    out = {k: batch[k] for k in ("input_ids", "attention_mask")}
    out.update({k: batch[prefix + k] for k in keys if prefix + k in batch})
    return out


class VLTask:
    """One task: how to prepare a split, batch it, run the model, score it."""

    name: str = ""
    needs_regions: bool = False  # per-region outputs: needs a detector-region backbone

    def sequences_per_example(self) -> int | None:
        """Backbone passes one training example costs (the plan's FLOPs estimate); None: not a fixed number."""
        return 1

    def num_outputs(self, info: DatasetInfo) -> int:
        raise NotImplementedError

    def build_head(self, hidden: int, info: DatasetInfo) -> nn.Module:
        return mlp_head(hidden, self.num_outputs(info))

    def prepare(self, split: Split, tokenizer, max_len: int) -> dict:
        """Tokenise and extract labels once per split."""
        raise NotImplementedError

    def collate(self, prep: dict, split: Split, rows: torch.Tensor, gen: torch.Generator) -> dict:
        raise NotImplementedError

    def forward(self, backbone: VLBackbone, head: nn.Module, batch: dict, text_delta=None, image_delta=None):
        return head(backbone(batch, text_delta, image_delta).pooled)

    def loss(self, out, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def kl_view(self, out, batch: dict) -> list[torch.Tensor]:
        """The logits R_kl compares (softmax over the last dim); see ltvl.core.adversarial."""
        from ltvl.core.adversarial import distributions

        return distributions(out)

    def score(self, out, batch: dict) -> dict[str, float]:
        """Sums to accumulate over the eval set (``n`` = examples)."""
        raise NotImplementedError

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        raise NotImplementedError

    def majority_class(self, train_prep: dict) -> int | None:
        """The answer a model that learned nothing but the label prior would give every question
        (the training split's most frequent one); None where the task has no such control."""
        return None

    def evaluate(self, model: VLModel, prep: dict, split: Split, batch_size: int, limit: int | None) -> dict:
        n = len(prep["rows"]) if limit is None else min(limit, len(prep["rows"]))
        sums: dict[str, float] = {}
        dev = next(model.parameters()).device
        from ltvl.core.train import to_device

        for start in range(0, n, batch_size):
            rows = torch.arange(start, min(start + batch_size, n))
            batch = to_device(self.collate(prep, split, rows, torch.Generator().manual_seed(start)), dev)
            for k, v in self.score(model(batch), batch).items():
                sums[k] = sums.get(k, 0.0) + v
        return self.finalize(sums)


class CrossEntropyAccuracy:
    """Loss and metric for tasks with one integer target per example under ``label_key``."""

    label_key = "labels"

    def loss(self, logits, batch):
        return nn.functional.cross_entropy(logits, batch[self.label_key])

    def score(self, logits, batch):
        y = batch[self.label_key]
        return {"correct": float((logits.argmax(1) == y).sum()), "n": float(len(y))}

    def finalize(self, s):
        return {"metric": s["correct"] / s["n"], "accuracy": s["correct"] / s["n"], "n": s["n"]}


class VLModel(nn.Module):
    """Backbone + task head; ``forward`` runs the task's forward so DDP can wrap it whole."""

    def __init__(self, backbone: VLBackbone, head: nn.Module, task: VLTask):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.task = task  # a plain object, not a Module: holds no parameters

    def forward(self, batch: dict, text_delta=None, image_delta=None):
        return self.task.forward(self.backbone, self.head, batch, text_delta, image_delta)


@dataclass
class TaskData:
    """Binds a task to its train/eval splits: implements ltvl.core.train.TrainTask.

    Tokenised splits come from the prep cache (``ltvl.vl.data.tokens``) when one is given: the
    first trial on a node tokenises, the others load the result.
    """

    task: VLTask
    train: Split
    eval: Split
    tokenizer: object
    max_len: int = 32
    eval_batch_size: int = 128
    eval_limit: int | None = None
    loader_workers: int | None = None  # None: auto (0 on CPU)
    pin_memory: bool | None = None  # None: when CUDA is available
    prep_cache: PrepCache | None = None

    def __post_init__(self) -> None:
        self._majority: float | None | bool = False  # False: not computed yet
        cache = self.prep_cache or PrepCache(None)
        self.train_prep = cache.get(self.train, self.task, self.tokenizer, self.max_len,
                                    lambda: self.task.prepare(self.train, self.tokenizer, self.max_len))
        self.eval_prep = cache.get(self.eval, self.task, self.tokenizer, self.max_len,
                                   lambda: self.task.prepare(self.eval, self.tokenizer, self.max_len))
        self.workers = auto_workers(self.loader_workers)
        self.pin = torch.cuda.is_available() if self.pin_memory is None else self.pin_memory

    def batch(self, slot: int, batch_size: int, seed: int) -> dict:
        rows = batch_indices(len(self.train_prep["rows"]), batch_size, slot, seed)
        gen = torch.Generator().manual_seed(derive_seed(seed, "collate", slot))
        return self.task.collate(self.train_prep, self.train, rows, gen)

    def batches(self, slots: Iterable[int], batch_size: int, seed: int) -> Iterator[dict]:
        """The batches of ``slots`` in order, built ahead by loader workers (see ltvl.vl.data.loader)."""
        return stream(functools.partial(self.batch, batch_size=batch_size, seed=seed), slots, self.workers, self.pin)

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return self.task.loss(model(batch), batch)

    def adversarial_parts(self, model: nn.Module, batch: dict):
        """(forward with deltas, the task's own loss, the logits R_kl compares) for ltvl.core.adversarial."""
        return (
            lambda text_delta=None, image_delta=None: model(batch, text_delta, image_delta),
            lambda out: self.task.loss(out, batch),
            lambda out: self.task.kl_view(out, batch),
        )

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """The task's metrics, plus ``majority_metric`` (the majority-answer control on the same
        questions) where the task has one, so every record can be read against it."""
        out = self.task.evaluate(model, self.eval_prep, self.eval, self.eval_batch_size, self.eval_limit)
        if self._majority is False:
            self._majority = self.majority_control()
        if self._majority is not None:
            out["majority_metric"] = self._majority
        return out

    @torch.no_grad()
    def majority_control(self) -> float | None:
        """SPEC §7's majority-answer control, computed from the data: the metric of always giving
        the training split's most frequent answer, scored on the same evaluation questions as
        every model. A dense run that does not beat it learned nothing."""
        answer = self.task.majority_class(self.train_prep)
        if answer is None:
            return None
        n = self.task.num_outputs(self.train.info)
        return self.task.evaluate(ConstantAnswer(answer, n), self.eval_prep, self.eval, self.eval_batch_size,
                                  self.eval_limit)["metric"]


class ConstantAnswer(nn.Module):
    """A "model" that gives the same answer to every example (its logits one-hot)."""

    def __init__(self, answer: int, n_outputs: int):
        super().__init__()
        self.logits = nn.Parameter(nn.functional.one_hot(torch.tensor(answer), n_outputs).float(),
                                   requires_grad=False)

    def forward(self, batch: dict, *_deltas) -> torch.Tensor:
        return self.logits.expand(len(batch["input_ids"]), -1)
