"""Reading and writing VL datasets (see ``ltvl.vl.data.schema``) with pyarrow.

Tables are read with ``memory_map=True`` so several trials on one node share the
page cache; columns become torch tensors once, at open, in one vectorised copy.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ltvl.util.atomic import atomic_write_bytes, atomic_write_text
from ltvl.util.errors import LtvlError
from ltvl.vl.data.schema import BOX_DIM, IMAGE_COLUMNS, OPTIONAL_IMAGE_COLUMNS, check_columns, check_examples


def write_table(table: pa.Table, path: str | Path) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    atomic_write_bytes(path, buf.getvalue())


def read_table(path: str | Path) -> pa.Table:
    path = Path(path)
    if not path.exists():
        raise LtvlError(f"missing file {path.name}", where=str(path.parent),
                        fix="prepare the dataset first, e.g. `ltvl data prepare easy-vqa --out DIR`")
    return pq.read_table(path, memory_map=True)


@dataclass
class DatasetInfo:
    """``dataset.json``: what a model needs to know before it sees a batch."""

    task: str
    feat_dim: int
    num_regions: int
    answers: list[str] = field(default_factory=list)  # VQA/GQA-style answer vocabulary
    num_labels: int | None = None
    image_size: int | None = None  # side of the square pixel image, when pixels are stored
    source: str = ""
    splits: list[str] = field(default_factory=lambda: ["train", "test"])

    def save(self, directory: str | Path) -> None:
        atomic_write_text(Path(directory) / "dataset.json", json.dumps(self.__dict__, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> DatasetInfo:
        p = Path(directory) / "dataset.json"
        if not p.exists():
            raise LtvlError("not a dataset directory (no dataset.json)", where=str(directory),
                            fix="prepare one with `ltvl data prepare easy-vqa --out DIR` or see README 'Data format'")
        d = json.loads(p.read_text())
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise LtvlError(f"unknown keys {sorted(unknown)}", where=str(p))
        return cls(**d)


@dataclass
class ImageStore:
    """All images of one split as tensors, indexed by image_id."""

    features: torch.Tensor  # (N, R, D) float16
    boxes: torch.Tensor  # (N, R, 7) float32
    num_regions: torch.Tensor  # (N,)
    index: dict[int, int]
    pixels: torch.Tensor | None = None  # (N, 3, H, W) uint8
    region_labels: torch.Tensor | None = None  # (N, R) int64, for masked-region classification

    @classmethod
    def from_table(cls, table: pa.Table, info: DatasetInfo, where: str) -> ImageStore:
        check_columns(table.schema, IMAGE_COLUMNS, where, OPTIONAL_IMAGE_COLUMNS)
        n, r, d = table.num_rows, info.num_regions, info.feat_dim
        feats = _flat(table["features"], np.float16)
        if feats.size != n * r * d:
            per = feats.size // max(n, 1)
            raise LtvlError(f"features hold {per} values per image, expected num_regions*feat_dim = {r}*{d} = {r * d}",
                            where=where, fix="fix feat_dim/num_regions in dataset.json or pad regions to a fixed count")
        boxes = _flat(table["boxes"], np.float32)
        if boxes.size != n * r * BOX_DIM:
            raise LtvlError(f"boxes must hold {r}*7 values per image", where=where)
        pixels = None
        if "pixels" in table.schema.names and info.image_size:
            s = info.image_size
            pixels = torch.from_numpy(_flat(table["pixels"], np.uint8).reshape(n, s, s, 3)).permute(0, 3, 1, 2)
        labels = None
        if "region_labels" in table.schema.names:
            labels = torch.from_numpy(_flat(table["region_labels"], np.int32).reshape(n, r).astype(np.int64))
        ids = table["image_id"].to_numpy()
        return cls(torch.from_numpy(feats.reshape(n, r, d)), torch.from_numpy(boxes.reshape(n, r, BOX_DIM)),
                   torch.from_numpy(table["num_regions"].to_numpy().astype(np.int64)),
                   {int(i): k for k, i in enumerate(ids)}, pixels, labels)

    def rows(self, image_ids) -> torch.Tensor:
        try:
            return torch.tensor([self.index[int(i)] for i in image_ids])
        except KeyError as e:
            raise LtvlError(f"image_id {e.args[0]} is not in the images table", where="examples.image_id") from e


def _flat(col: pa.ChunkedArray, dtype) -> np.ndarray:
    """The values of a list<…> column as one writable numpy array (one copy, no Python loop)."""
    values = pa.concat_arrays([c.flatten() for c in col.chunks]) if col.num_chunks else pa.array([], pa.float32())
    arr = values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return arr if arr.flags.writeable else arr.copy()


@dataclass
class Split:
    """One split of a dataset: its examples table and images."""

    info: DatasetInfo
    examples: pa.Table
    images: ImageStore
    name: str


def open_split(directory: str | Path, split: str, task: str | None = None) -> Split:
    directory = Path(directory)
    info = DatasetInfo.load(directory)
    task = task or info.task
    if split not in info.splits:
        raise LtvlError(f"split {split!r} not in {info.splits}", where=str(directory / "dataset.json"))
    ex = read_table(directory / split / "examples.parquet")
    check_examples(ex.schema, task, where=str(directory / split / "examples.parquet"))
    img = read_table(directory / split / "images.parquet")
    return Split(info, ex, ImageStore.from_table(img, info, str(directory / split / "images.parquet")), split)


def save_split(directory: str | Path, split: str, images: pa.Table, examples: pa.Table) -> None:
    write_table(images, Path(directory) / split / "images.parquet")
    write_table(examples, Path(directory) / split / "examples.parquet")


def image_table(image_ids, features: np.ndarray, boxes: np.ndarray, pixels: np.ndarray | None = None,
                region_labels: np.ndarray | None = None) -> pa.Table:
    """Build an images table from dense arrays: features (N,R,D), boxes (N,R,7), pixels (N,H,W,3)."""
    n, r, _ = features.shape
    cols = {
        "image_id": pa.array(np.asarray(image_ids, dtype=np.int64)),
        "features": _list_array(features.reshape(n, -1).astype(np.float16), pa.float16()),
        "boxes": _list_array(boxes.reshape(n, -1).astype(np.float32), pa.float32()),
        "num_regions": pa.array(np.full(n, r, dtype=np.int32)),
    }
    if pixels is not None:
        cols["pixels"] = _list_array(pixels.reshape(n, -1).astype(np.uint8), pa.uint8())
    if region_labels is not None:
        cols["region_labels"] = _list_array(region_labels.reshape(n, -1).astype(np.int32), pa.int32())
    return pa.table(cols)


def _list_array(mat: np.ndarray, typ: pa.DataType) -> pa.ListArray:
    n, width = mat.shape
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(mat.reshape(-1), type=typ))
