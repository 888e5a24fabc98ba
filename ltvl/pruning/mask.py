"""A pruning mask: parameter name -> boolean tensor (True = weight kept).

Identity is content-addressed: ``sha256`` hashes names, shapes and the packed bits,
so the same subnetwork always has the same id, wherever and however it was made.
``fingerprint`` hashes only names and shapes: two masks (or a mask and a model)
can be combined only when their fingerprints match.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from ltvl.util.errors import LtvlError


def fingerprint_of(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """Hash of the ordered (name, shape) pairs: which model a mask belongs to."""
    canon = json.dumps([[n, list(s)] for n, s in shapes.items()], separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def pack_bits(t: torch.Tensor) -> np.ndarray:
    """1 bit per element, row-major, big-endian within each byte (numpy packbits)."""
    return np.packbits(t.detach().to("cpu", torch.bool).numpy().reshape(-1))


def unpack_bits(packed: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    n = int(np.prod(shape)) if shape else 1
    bits = np.unpackbits(packed, count=n).astype(bool)
    return torch.from_numpy(bits).reshape(shape)


@dataclass
class Mask:
    """Keep-mask over the prunable parameters of one model.

    ``parent`` is the sha256 of the mask this one was pruned from (None for the
    first); ``metadata`` is free-form JSON-serialisable provenance.
    """

    tensors: dict[str, torch.Tensor]
    parent: str | None = None
    metadata: dict = field(default_factory=dict)
    # False for a file of the legacy format without a header hash: its parent and metadata are not covered
    header_verified: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        for name, t in self.tensors.items():
            if t.dtype != torch.bool:
                self.tensors[name] = t.to(torch.bool)

    # ----------------------------------------------------------- construction
    @classmethod
    def ones(cls, shapes: Mapping[str, Iterable[int]], **kw) -> Mask:
        return cls({n: torch.ones(tuple(s), dtype=torch.bool) for n, s in shapes.items()}, **kw)

    @classmethod
    def dense_like(cls, params: Mapping[str, torch.Tensor], **kw) -> Mask:
        return cls({n: torch.ones(p.shape, dtype=torch.bool) for n, p in params.items()}, **kw)

    # ------------------------------------------------------------- properties
    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(t.shape) for n, t in self.tensors.items()}

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.shapes)

    @property
    def numel(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    @property
    def n_kept(self) -> int:
        return int(sum(int(t.sum()) for t in self.tensors.values()))

    @property
    def n_pruned(self) -> int:
        return self.numel - self.n_kept

    @property
    def sparsity(self) -> float:
        """Fraction of prunable weights that are pruned (0 = dense)."""
        return self.n_pruned / self.numel if self.numel else 0.0

    def per_tensor_sparsity(self) -> dict[str, float]:
        return {n: 1.0 - float(t.sum()) / t.numel() for n, t in self.tensors.items()}

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        h.update(self.fingerprint.encode())
        for name, t in self.tensors.items():
            h.update(name.encode())
            h.update(pack_bits(t).tobytes())
        return h.hexdigest()

    def summary(self) -> dict:
        """JSON-able report: what ``ltvl mask info --json`` prints."""
        return {
            "sha256": self.sha256,
            "fingerprint": self.fingerprint,
            "parent": self.parent,
            "numel": self.numel,
            "pruned": self.n_pruned,
            "sparsity": self.sparsity,
            "per_tensor": {
                n: {"shape": list(t.shape), "numel": t.numel(), "sparsity": s}
                for (n, t), s in zip(self.tensors.items(), self.per_tensor_sparsity().values())
            },
            "metadata": self.metadata,
            "header_verified": self.header_verified,
        }

    # ------------------------------------------------------------ set algebra
    def check_compatible(self, shapes: Mapping[str, tuple[int, ...]], *, what: str = "model") -> None:
        """Raise naming the first parameter whose name or shape differs."""
        mine, theirs = self.shapes, {n: tuple(s) for n, s in shapes.items()}
        for name, shape in mine.items():
            if name not in theirs:
                raise LtvlError(
                    f"mask parameter '{name}' does not exist in the {what}",
                    where=f"mask {self.sha256[:12]}",
                    fix="use a mask made for this architecture and prunable set (compare `ltvl mask info`)",
                )
            if theirs[name] != shape:
                raise LtvlError(
                    f"shape mismatch for '{name}': mask has {list(shape)}, {what} has {list(theirs[name])}",
                    where=f"mask {self.sha256[:12]}",
                    fix="use a mask made for this architecture and prunable set",
                )
        extra = [n for n in theirs if n not in mine]
        if extra:
            raise LtvlError(
                f"the {what} has prunable parameter '{extra[0]}' that the mask does not cover "
                f"({len(extra)} in all)",
                where=f"mask {self.sha256[:12]}",
                fix="select the same prunable set (include/exclude patterns) the mask was made with",
            )

    def _binary(self, other: Mask, op) -> Mask:
        self.check_compatible(other.shapes, what="other mask")
        return Mask({n: op(t, other.tensors[n]) for n, t in self.tensors.items()})

    def intersection(self, other: Mask) -> Mask:
        return self._binary(other, torch.logical_and)

    def union(self, other: Mask) -> Mask:
        return self._binary(other, torch.logical_or)

    def complement(self) -> Mask:
        """Keep exactly what this mask prunes, within the prunable set."""
        return Mask({n: ~t for n, t in self.tensors.items()}, parent=self.sha256)

    def iou(self, other: Mask) -> float:
        """|a ∩ b| / |a ∪ b| over kept weights (1.0 when both keep nothing)."""
        self.check_compatible(other.shapes, what="other mask")
        inter = union = 0
        for n, a in self.tensors.items():
            b = other.tensors[n]
            inter += int(torch.logical_and(a, b).sum())
            union += int(torch.logical_or(a, b).sum())
        return inter / union if union else 1.0

    def hamming(self, other: Mask) -> float:
        """Fraction of prunable weights whose keep bit differs: how far apart two masks are
        (the early-bird test of You et al. 2020 and EarlyBERT compares consecutive masks by it)."""
        self.check_compatible(other.shapes, what="other mask")
        differ = sum(int(torch.logical_xor(a, other.tensors[n]).sum()) for n, a in self.tensors.items())
        return differ / self.numel if self.numel else 0.0

    def equal(self, other: Mask) -> bool:
        return self.shapes == other.shapes and all(
            torch.equal(t, other.tensors[n]) for n, t in self.tensors.items()
        )
