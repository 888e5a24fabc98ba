"""Write a dataset in bounded memory: record batch by record batch, into a temporary directory
that is renamed into place only when every split is complete, so a reader (or a concurrent
trial) never sees half a dataset and a failed import leaves nothing behind.

The disk is checked against the import's estimated size before anything is written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from ltvl.util.errors import LtvlError
from ltvl.vl.data.info import DatasetInfo
from ltvl.vl.data.schema import (
    BOX_DIM,
    IMAGE_COLUMNS,
    IMAGE_ID_COLUMNS,
    OPTIONAL_IMAGE_COLUMNS,
    SOURCE_ID,
    check_columns,
    example_columns,
)

IMAGES, EXAMPLES = "images.arrow", "examples.arrow"
DISK_MARGIN = 1.05  # Arrow metadata and padding on top of the raw bytes


def check_disk(out: Path, need_bytes: int, where: str) -> None:
    """Refuse an import that cannot fit, before it starts."""
    probe = out
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need_bytes * DISK_MARGIN > free:
        raise LtvlError(f"the import needs about {_gb(need_bytes * DISK_MARGIN)} but {probe} has {_gb(free)} free",
                        where=where, fix="free space, or write to a larger disk with --out")


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def encode_png(pixels: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes: lossless, so decoded batches equal the pixels written."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class _HashingFile:
    """A write-only file that hashes what passes through (no second read of a multi-GB file)."""

    def __init__(self, path: Path):
        self._f, self.sha = open(path, "wb"), hashlib.sha256()
        self.closed, self.bytes = False, 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.bytes += len(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self.closed = True


class _ArrowFileWriter:
    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.schema = path, schema
        self._sink = _HashingFile(path)
        self._w = pa.ipc.new_file(pa.PythonFile(self._sink, mode="w"), schema)
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self._w.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> dict:
        self._w.close()
        self._sink.close()
        return {"bytes": self._sink.bytes, "sha256": self._sink.sha.hexdigest(), "rows": self.rows}


def large_list(flat: np.ndarray, lengths: np.ndarray, typ: pa.DataType) -> pa.LargeListArray:
    """A ``large_list`` column from flat values and per-row lengths (64-bit offsets, zero-copy values)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat, type=typ))


class ImageWriter:
    """Appends images to ``<split>/images.arrow``; each ``write`` is one record batch."""

    def __init__(self, path: Path, feat_dim: int, encoded: bool, region_labels: bool, names: bool = False,
                 soft_labels: int = 0):
        fields = dict(IMAGE_COLUMNS)
        for col, on in (("image", encoded), ("region_labels", region_labels), ("name", names),
                        ("region_soft_labels", soft_labels)):
            if on:
                fields[col] = OPTIONAL_IMAGE_COLUMNS[col]
        self.feat_dim, self.encoded, self.labelled, self.named = feat_dim, encoded, region_labels, names
        self.soft = soft_labels
        self._file = _ArrowFileWriter(path, pa.schema(list(fields.items())))
        self.max_regions, self.min_regions = 0, None
        self.ids: list[np.ndarray] = []

    def write(self, image_ids, features: np.ndarray, boxes: np.ndarray, num_regions=None,
              images: list[bytes] | None = None, region_labels: np.ndarray | None = None,
              names: list[str] | None = None, soft_labels: np.ndarray | None = None) -> None:
        """``features`` (n, R, D), ``boxes`` (n, R, 7): padded arrays; image i keeps its first
        ``num_regions[i]`` rows (all R when not given)."""
        n, r, d = features.shape
        if d != self.feat_dim:
            raise LtvlError(f"features are {d}-d, the dataset declares feat_dim {self.feat_dim}",
                            where="features", fix="pass the right --feat-dim, or check the source files")
        if boxes.shape != (n, r, BOX_DIM):
            raise LtvlError(f"boxes have shape {boxes.shape}, expected {(n, r, BOX_DIM)}", where="boxes")
        nreg = np.full(n, r, dtype=np.int32) if num_regions is None else np.asarray(num_regions, dtype=np.int32)
        if len(nreg) and (nreg.min() < (0 if d == 0 else 1) or nreg.max() > r):
            raise LtvlError(f"num_regions must be in [1, {r}]", where="num_regions")
        keep = None if nreg.min(initial=r) == r else (np.arange(r)[None, :] < nreg[:, None])
        feats = features.astype(np.float16, copy=False)
        flat_f = (feats.reshape(-1) if keep is None else feats[keep].reshape(-1))
        flat_b = (boxes.astype(np.float32, copy=False).reshape(-1) if keep is None
                  else boxes.astype(np.float32, copy=False)[keep].reshape(-1))
        ids = np.asarray(image_ids, dtype=np.int64)
        cols = {"image_id": pa.array(ids), "num_regions": pa.array(nreg),
                "features": large_list(flat_f, nreg.astype(np.int64) * d, pa.float16()),
                "boxes": large_list(flat_b, nreg.astype(np.int64) * BOX_DIM, pa.float32())}
        if self.encoded:
            if images is None or len(images) != n:
                raise LtvlError("every image needs its encoded bytes", where="images")
            cols["image"] = pa.array(images, type=pa.large_binary())
        if self.labelled:
            lab = np.asarray(region_labels, dtype=np.int32)
            cols["region_labels"] = large_list(lab.reshape(-1) if keep is None else lab[keep], nreg, pa.int32())
        if self.named:
            cols["name"] = pa.array(names, type=pa.large_string())
        if self.soft:  # (n, R, S): each image keeps its own regions' rows
            sl = np.asarray(soft_labels, dtype=np.float16)
            if sl.shape != (n, r, self.soft):
                raise LtvlError(f"soft labels have shape {sl.shape}, expected {(n, r, self.soft)}", where="soft_labels")
            flat_s = sl.reshape(-1) if keep is None else sl[keep].reshape(-1)
            cols["region_soft_labels"] = large_list(flat_s, nreg.astype(np.int64) * self.soft, pa.float16())
        self._file.write(pa.record_batch(list(cols.values()), schema=self._file.schema))
        self.ids.append(ids)
        self.max_regions = max(self.max_regions, int(nreg.max(initial=0)))
        self.min_regions = min(self.min_regions or r, int(nreg.min(initial=r)))

    def close(self) -> dict:
        return self._file.close()


class DatasetWriter:
    """``with DatasetWriter(out, info, need_bytes) as w:`` write splits; on success the directory
    appears at ``out`` complete, with dataset.json and its manifest; on error nothing does."""

    def __init__(self, out: str | Path, info: DatasetInfo, need_bytes: int = 0, where: str = "--out",
                 overwrite: bool = False):
        self.out, self.info = Path(out).expanduser().absolute(), info
        if self.out.exists() and any(self.out.iterdir()) and not overwrite:
            raise LtvlError("the output directory exists and is not empty", where=str(self.out),
                            fix="choose a new --out, or delete it first")
        check_disk(self.out.parent, need_bytes, where)
        self.tmp = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        self._images: dict[str, ImageWriter] = {}
        self._files: dict[str, dict] = {}
        self._example_ids: dict[str, list[np.ndarray]] = {}

    def __enter__(self) -> DatasetWriter:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        return self

    def images(self, split: str, encoded: bool = False, region_labels: bool = False,
               names: bool = False, soft_labels: int = 0) -> ImageWriter:
        (self.tmp / split).mkdir(exist_ok=True)
        w = ImageWriter(self.tmp / split / IMAGES, self.info.feat_dim, encoded, region_labels, names, soft_labels)
        self._images[split] = w
        return w

    def examples(self, split: str, table: pa.Table | pa.RecordBatch) -> None:
        """Append examples of ``split`` (call repeatedly to stream)."""
        key = f"{split}/{EXAMPLES}"
        cols = example_columns(self.info.task, self.info.tokenizer is not None)
        check_columns(table.schema, cols, where=key)
        if SOURCE_ID in table.schema.names:
            cols[SOURCE_ID] = pa.string()
        table = table.select(list(cols))
        if key not in self._files:
            (self.tmp / split).mkdir(exist_ok=True)
            self._files[key] = _ArrowFileWriter(self.tmp / key, pa.schema(list(cols.items())))
        for batch in (table.to_batches() if isinstance(table, pa.Table) else [table]):
            self._files[key].write(batch)
        ids = [np.asarray(table[c].to_numpy(), dtype=np.int64) for c in IMAGE_ID_COLUMNS if c in table.schema.names]
        self._example_ids.setdefault(split, []).extend(ids)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:
            self._finish()
        except BaseException:
            self._abort()
            raise

    def _abort(self) -> None:
        for f in list(self._files.values()) + [w._file for w in self._images.values()]:
            try:
                f.close()
            except Exception:  # noqa: BLE001 - best effort: the directory is removed anyway
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _finish(self) -> None:
        manifest: dict[str, dict] = {}
        splits = sorted(set(self._images) | {k.split("/")[0] for k in self._files})
        if not splits:
            raise LtvlError("nothing was written", where=str(self.out))
        for split in splits:
            if split not in self._images or f"{split}/{EXAMPLES}" not in self._files:
                raise LtvlError(f"split {split!r} needs both images and examples", where=str(self.out))
            self._check_examples_have_images(split)
        for split, w in self._images.items():
            manifest[f"{split}/{IMAGES}"] = w.close()
        for key, f in self._files.items():
            manifest[key] = f.close()
        info = self.info
        info.files = manifest
        info.splits = info.splits if set(info.splits) == set(splits) else splits
        info.num_regions = max(w.max_regions for w in self._images.values())
        mins = [w.min_regions for w in self._images.values() if w.min_regions is not None]
        info.min_regions = min(mins) if mins else None
        info.seal()
        info.save(self.tmp)
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.tmp, self.out)

    def _check_examples_have_images(self, split: str) -> None:
        ids = np.concatenate(self._images[split].ids) if self._images[split].ids else np.zeros(0, np.int64)
        if len(np.unique(ids)) != len(ids):
            u, c = np.unique(ids, return_counts=True)
            raise LtvlError(f"image_id {int(u[c > 1][0])} appears twice", where=f"{split}/{IMAGES}")
        wanted = np.concatenate(self._example_ids.get(split, [np.zeros(0, np.int64)]))
        missing = wanted[~np.isin(wanted, ids)]
        if len(missing):
            raise LtvlError(f"{len(missing)} example(s) refer to images that are not in the split, e.g. image_id "
                            f"{int(missing[0])}", where=f"{split}/{EXAMPLES}",
                            fix="import the image features that go with these questions (same split)")
