"""Open a dataset split without copying it: Arrow IPC files through a memory map.

Opening reads only offsets, ids and region counts (a few MB for VQA v2); feature values stay
in the page cache, shared by every trial on the node, and a batch copies out just its own
images. Every check that can fail runs here, at open, before any compute: truncated or
corrupt files, a feature width that disagrees with dataset.json, examples whose image is
missing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from ltvl.util.errors import LtvlError
from ltvl.vl.data.info import MIGRATE_HINT, DatasetInfo
from ltvl.vl.data.schema import (
    BOX_DIM,
    IMAGE_COLUMNS,
    IMAGE_ID_COLUMNS,
    OPTIONAL_IMAGE_COLUMNS,
    check_columns,
    check_examples,
)
from ltvl.vl.data.writer import EXAMPLES, IMAGES

__all__ = ["DatasetInfo", "ImageTable", "Split", "open_split", "read_arrow"]


def _checked_path(directory: Path, info: DatasetInfo, rel: str) -> Path:
    path = directory / rel
    if not path.exists():
        if (directory / rel.replace(".arrow", ".parquet")).exists():
            raise LtvlError("old Parquet layout (format 0)", where=str(path.parent),
                            fix=MIGRATE_HINT.format(dir=directory))
        raise LtvlError(f"missing file {rel}", where=str(directory), fix="re-import or re-fetch the dataset")
    expect = info.files.get(rel)
    if expect is not None and path.stat().st_size != expect["bytes"]:
        raise LtvlError(f"file is {path.stat().st_size} bytes but the manifest says {expect['bytes']}: truncated or "
                        "replaced", where=str(path), fix="re-import or re-fetch the dataset (`ltvl data info "
                        f"{directory} --verify` checks every file's sha256)")
    return path


def read_arrow(path: Path) -> pa.Table:
    """An Arrow IPC file as a table whose buffers point into a memory map (no copy)."""
    try:
        return pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise LtvlError(f"not a readable Arrow IPC file ({e})", where=str(path),
                        fix="the file is truncated or corrupt: re-import or re-fetch the dataset") from e


class _Column:
    """A large_list / large_binary column across record batches: offsets and values as numpy views."""

    def __init__(self, chunks: list[pa.Array], dtype):
        self.offsets, self.values = [], []
        for c in chunks:
            if pa.types.is_large_binary(c.type):  # buffers: validity, int64 offsets, data
                off = np.frombuffer(c.buffers()[1], dtype=np.int64)[c.offset: c.offset + len(c) + 1]
                self.offsets.append(off)
                self.values.append(np.frombuffer(c.buffers()[2] or b"", dtype=np.uint8))
            else:
                self.offsets.append(c.offsets.to_numpy())
                self.values.append(c.values.to_numpy(zero_copy_only=False).view(dtype) if len(c.values)
                                   else np.zeros(0, dtype))

    def get(self, chunk: int, row: int) -> np.ndarray:
        o = self.offsets[chunk]
        return self.values[chunk][o[row]:o[row + 1]]

    def lengths(self) -> np.ndarray:
        return np.concatenate([np.diff(o) for o in self.offsets]) if self.offsets else np.zeros(0, np.int64)


class ImageTable:
    """The images of one split, memory-mapped; ``batch(ids)`` pads a batch to its largest image."""

    def __init__(self, path: Path, info: DatasetInfo):
        self.path, self.info = Path(path), info
        self._open()

    def __getstate__(self):  # loader workers under spawn re-map the file instead of pickling its bytes
        return {"path": self.path, "info": self.info}

    def __setstate__(self, state):
        self.path, self.info = state["path"], state["info"]
        self._open()

    def _open(self) -> None:
        where, d = str(self.path), self.info.feat_dim
        table = read_arrow(self.path)
        check_columns(table.schema, IMAGE_COLUMNS, where, OPTIONAL_IMAGE_COLUMNS)
        self.num_images = table.num_rows
        self.image_ids = table["image_id"].to_numpy()
        self.num_regions = table["num_regions"].to_numpy().astype(np.int64)
        chunk_rows = np.array([len(c) for c in table["image_id"].chunks], dtype=np.int64)
        self._chunk_start = np.concatenate([[0], np.cumsum(chunk_rows)])
        self._feats = _Column(table["features"].chunks, np.float16)
        self._boxes = _Column(table["boxes"].chunks, np.float32)
        self._image = _Column(table["image"].chunks, np.uint8) if "image" in table.schema.names else None
        self._labels = (_Column(table["region_labels"].chunks, np.int32)
                        if "region_labels" in table.schema.names else None)
        self._soft = (_Column(table["region_soft_labels"].chunks, np.float16)
                      if "region_soft_labels" in table.schema.names else None)
        widths = self._feats.lengths()
        bad = np.flatnonzero(widths != self.num_regions * d)
        if len(bad):
            i = int(bad[0])
            per = int(widths[i] // max(self.num_regions[i], 1))
            raise LtvlError(f"image_id {int(self.image_ids[i])} has {per}-d region features, dataset.json says "
                            f"feat_dim {d}", where=f"{where} features",
                            fix="fix feat_dim in dataset.json, or re-import with the right feature width")
        if (self._boxes.lengths() != self.num_regions * BOX_DIM).any():
            raise LtvlError(f"boxes must hold num_regions*{BOX_DIM} values per image", where=f"{where} boxes")
        self._order = np.argsort(self.image_ids, kind="stable")
        self._sorted = self.image_ids[self._order]
        if len(self._sorted) > 1 and (np.diff(self._sorted) == 0).any():
            dup = int(self._sorted[np.flatnonzero(np.diff(self._sorted) == 0)[0]])
            raise LtvlError(f"image_id {dup} appears twice", where=where)
        self._table = table  # keeps the memory map alive

    @property
    def has_images(self) -> bool:
        return self._image is not None

    @property
    def has_region_labels(self) -> bool:
        return self._labels is not None

    @property
    def has_soft_labels(self) -> bool:
        return self._soft is not None

    def rows(self, image_ids, where: str = "examples.image_id") -> np.ndarray:
        """Row numbers of ``image_ids``; names the first id that is not in the table."""
        ids = np.asarray(image_ids, dtype=np.int64)
        pos = np.searchsorted(self._sorted, ids)
        pos_c = np.minimum(pos, max(len(self._sorted) - 1, 0))
        found = (pos < len(self._sorted)) & (self._sorted[pos_c] == ids) if len(self._sorted) else np.zeros(
            len(ids), bool)
        if not found.all():
            raise LtvlError(f"image_id {int(ids[~found][0])} is not in the images table", where=where,
                            fix=f"add its features to {self.path}, or drop the examples that use it")
        return self._order[pos_c]

    def _locate(self, row: int) -> tuple[int, int]:
        chunk = int(np.searchsorted(self._chunk_start, row, side="right") - 1)
        return chunk, row - int(self._chunk_start[chunk])

    def features(self, image_id: int) -> np.ndarray:
        """(n_regions, D) float16 view of one image's features (no copy)."""
        c, r = self._locate(int(self.rows([image_id])[0]))
        return self._feats.get(c, r).reshape(-1, self.info.feat_dim)

    def encoded(self, image_id: int) -> bytes:
        c, r = self._locate(int(self.rows([image_id])[0]))
        return self._image.get(c, r).tobytes()

    def batch(self, image_ids, prefix: str = "") -> dict[str, torch.Tensor]:
        """Features (B, R, D) float16, boxes (B, R, 7), image_mask (B, R), pixels (B, 3, S, S) uint8
        and region_labels (B, R): R is the batch's largest region count, the rest is padding."""
        rows = self.rows(image_ids)
        nreg = self.num_regions[rows]
        b, r, d = len(rows), int(nreg.max(initial=1)), self.info.feat_dim
        feats = np.zeros((b, r, d), np.float16)
        boxes = np.zeros((b, r, BOX_DIM), np.float32)
        labels = np.zeros((b, r), np.int64) if self._labels is not None else None
        sdim = self.info.soft_label_dim or 0
        soft = np.zeros((b, r, sdim), np.float16) if self._soft is not None and sdim else None
        pixels = None
        if self._image is not None and self.info.image_size:
            s = self.info.image_size
            pixels = np.empty((b, s, s, 3), np.uint8)
        for i, row in enumerate(rows.tolist()):
            c, k = self._locate(row)
            n = int(nreg[i])
            feats[i, :n] = self._feats.get(c, k).reshape(n, d)
            boxes[i, :n] = self._boxes.get(c, k).reshape(n, BOX_DIM)
            if labels is not None:
                labels[i, :n] = self._labels.get(c, k)
            if soft is not None:
                soft[i, :n] = self._soft.get(c, k).reshape(n, sdim)
            if pixels is not None:
                pixels[i] = decode_image(self._image.get(c, k), s)
        out = {f"{prefix}features": torch.from_numpy(feats), f"{prefix}boxes": torch.from_numpy(boxes),
               f"{prefix}image_mask": torch.from_numpy((np.arange(r)[None, :] < nreg[:, None]).astype(np.int64))}
        if pixels is not None:
            out[f"{prefix}pixels"] = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
        if labels is not None:
            out[f"{prefix}region_labels"] = torch.from_numpy(labels)
        if soft is not None:
            out[f"{prefix}region_soft_labels"] = torch.from_numpy(soft)
        return out


def decode_image(data: np.ndarray, size: int) -> np.ndarray:
    """Encoded PNG/JPEG bytes -> (size, size, 3) uint8, resized when the stored image differs."""
    from PIL import Image

    with Image.open(io.BytesIO(memoryview(data))) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return np.asarray(im)


@dataclass
class Split:
    """One split of a dataset: its examples (a memory-mapped table) and images."""

    info: DatasetInfo
    examples: pa.Table
    images: ImageTable
    name: str
    directory: Path


def open_split(directory: str | Path, split: str, task: str | None = None) -> Split:
    directory = Path(directory)
    info = DatasetInfo.load(directory)
    task = task or info.task
    if split not in info.splits:
        raise LtvlError(f"split {split!r} not in {info.splits}", where=str(directory / "dataset.json"),
                        fix=f"use one of {info.splits}")
    ex_path = _checked_path(directory, info, f"{split}/{EXAMPLES}")
    ex = read_arrow(ex_path)
    check_examples(ex.schema, task, where=str(ex_path), pretokenized=info.tokenizer is not None)
    if ex.num_rows == 0:
        raise LtvlError(f"split {split!r} has no examples", where=str(ex_path),
                        fix="re-import it, or choose another split (train_split / eval_split)")
    images = ImageTable(_checked_path(directory, info, f"{split}/{IMAGES}"), info)
    for col in IMAGE_ID_COLUMNS:
        if col in ex.schema.names:
            images.rows(ex[col].to_numpy(), where=f"{ex_path} {col}")
    return Split(info, ex, images, split, directory)
