"""Tokenise a split once per node, not once per trial.

``task.prepare`` (tokenisation, label extraction) of a split is cached as safetensors under
``$LTVL_HOME/cache/prep/<dataset content hash>/``, keyed by the split, the task, the
tokenizer's vocabulary and ``max_len``. Concurrent trials wait on one lock: the first
prepares, the rest load. The tokenizer fingerprint is also what checks that pre-tokenised
data (UNITER's txt_db) and a backbone speak the same vocabulary.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

from ltvl.util.atomic import atomic_write_bytes
from ltvl.util.errors import LtvlError

PREP_VERSION = 1  # bump when a task's prepare() output changes meaning


def vocab_sha256(vocab: dict[str, int] | list[str]) -> str:
    """Hash of a vocabulary as the list of tokens in id order (how a vocab.txt lists them)."""
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])] if isinstance(vocab, dict) else list(vocab)
    return hashlib.sha256("\n".join(tokens).encode()).hexdigest()


def tokenizer_fingerprint(tokenizer) -> dict:
    return {"vocab_size": len(tokenizer.get_vocab()), "vocab_sha256": vocab_sha256(tokenizer.get_vocab()),
            "cls": tokenizer.cls_token_id, "sep": tokenizer.sep_token_id, "pad": tokenizer.pad_token_id}


def check_tokenizer(dataset_tokenizer: dict | None, tokenizer, preset: str, where: str) -> None:
    """Text stored as ids must index the backbone tokenizer's vocabulary: same size, same tokens."""
    if not dataset_tokenizer:
        return
    own = tokenizer_fingerprint(tokenizer)
    name = dataset_tokenizer.get("name", "its tokenizer")
    if dataset_tokenizer.get("vocab_size") not in (None, own["vocab_size"]) or (
            dataset_tokenizer.get("vocab_sha256") not in (None, own["vocab_sha256"])):
        raise LtvlError(
            f"the dataset's text is word-piece ids of {name} (vocabulary of {dataset_tokenizer.get('vocab_size')} "
            f"tokens), but preset {preset!r} tokenises with a different vocabulary ({own['vocab_size']} tokens)",
            where=f"{where} tokenizer",
            fix="use a backbone whose tokenizer is the dataset's (e.g. a UNITER checkpoint with bert-base-cased), "
                "or import the text as strings")


class PrepCache:
    """``get(split, task, tokenizer, max_len, compute)``: the cached prep dict, or compute and store it."""

    def __init__(self, root: Path | None):
        self.root = root

    def get(self, split, task, tokenizer, max_len: int, compute: Callable[[], dict]) -> dict:
        if self.root is None or not split.info.content_sha256:
            return compute()
        key = hashlib.sha256(json.dumps({
            "v": PREP_VERSION, "split": split.name, "task": [type(task).__name__, task.name],
            "tok": tokenizer_fingerprint(tokenizer), "max_len": max_len}, sort_keys=True).encode()).hexdigest()[:24]
        path = self.root / split.info.content_sha256[:24] / f"{split.name}-{key}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if path.exists():
                try:
                    return _load(path)
                except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed, never trusted
                    path.unlink(missing_ok=True)
            prep = compute()
            atomic_write_bytes(path, _dump(prep))
            return prep


def _dump(prep: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    tensors, meta = {}, {}
    for k, v in prep.items():
        if torch.is_tensor(v):
            tensors[f"t.{k}"] = v.contiguous()
        elif isinstance(v, np.ndarray):
            tensors[f"n.{k}"] = torch.from_numpy(np.array(v))
        else:
            meta[k] = v
    return save(tensors, metadata={"scalars": json.dumps(meta)})


def _load(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    out: dict[str, Any] = {}
    with safe_open(str(path), framework="pt") as f:
        out.update(json.loads((f.metadata() or {}).get("scalars", "{}")))
        for name in f.keys():
            kind, key = name.split(".", 1)
            t = f.get_tensor(name)
            out[key] = t.numpy() if kind == "n" else t
    return out
