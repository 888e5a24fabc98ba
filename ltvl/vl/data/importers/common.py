"""What every importer shares: examples that name their images, image ids assigned once, images
written in chunks as the source yields them, and every missing image reported before the
dataset is renamed into place."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from ltvl.util.errors import LtvlError
from ltvl.vl.data.schema import SOURCE_ID, TOKEN_COLUMN, example_columns
from ltvl.vl.data.writer import DatasetWriter

CHUNK = 1024  # images per record batch


@dataclass
class Region:
    """One image's regions: features (n, D), 7-d normalised boxes (n, 7), optional detector classes
    (0-based over the 1,600 Visual Genome objects) and the detector's soft labels (n, 1601)."""

    name: str
    features: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray | None = None
    encoded: bytes | None = None
    soft: np.ndarray | None = None


@dataclass
class Examples:
    """A split's examples as columns, with image *names*; ids are assigned when written."""

    task: str
    rows: dict[str, list] = field(default_factory=dict)
    unlabelled: bool = False  # the split was published without labels (they are filled with -1 / empty)
    log: list[str] = field(default_factory=list)  # what reading it skipped or changed, counted

    def add(self, **values) -> None:
        for k, v in values.items():
            self.rows.setdefault(k, []).append(v)

    def __len__(self) -> int:
        return len(next(iter(self.rows.values()), []))

    def image_names(self) -> list[str]:
        """Every image the examples use, in order of first use."""
        keys = [k for k in ("image", "image_2") if k in self.rows]
        return list(dict.fromkeys(n for k in keys for n in self.rows[k]))

    def table(self, ids: dict[str, int], pretokenized: bool, first_qid: int = 0) -> pa.Table:
        cols = example_columns(self.task, pretokenized)
        data = {"qid": np.arange(first_qid, first_qid + len(self), dtype=np.int64)}
        for key, image_key in (("image_id", "image"), ("image_id_2", "image_2")):
            if key in cols:
                data[key] = np.array([ids[n] for n in self.rows[image_key]], dtype=np.int64)
        for k in cols:
            if k not in data:
                data[k] = self.rows["text" if k == TOKEN_COLUMN else k]
        out = {k: pa.array(data[k], type=t) for k, t in cols.items()}
        out[SOURCE_ID] = pa.array([str(x) for x in self.rows[SOURCE_ID]], pa.string())
        return pa.table(out)


def norm_boxes(xyxy: np.ndarray, width: float, height: float) -> np.ndarray:
    """Pixel [x1, y1, x2, y2] -> UNITER's 7-d [x1, y1, x2, y2, w, h, w*h], normalised to [0, 1]."""
    b = np.asarray(xyxy, np.float32).reshape(-1, 4) / np.array([width, height, width, height], np.float32)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return np.concatenate([b, w[:, None], h[:, None], (w * h)[:, None]], axis=1)


def write_split(w: DatasetWriter, split: str, examples: Examples, regions: Iterable[Region], feat_dim: int,
                sources: str, labelled: bool = False, soft_dim: int = 0) -> None:
    """Write the images the examples use (from ``regions``, in any order; others are skipped) and
    then the examples. An image the examples use but no source holds is an error naming it."""
    names = examples.image_names()
    ids = {n: i for i, n in enumerate(names)}
    writer = w.images(split, region_labels=labelled, names=True, soft_labels=soft_dim)
    seen: set[str] = set()
    for chunk in _chunks((r for r in regions if r.name in ids and r.name not in seen), CHUNK):
        seen.update(r.name for r in chunk)
        _write_chunk(writer, chunk, ids, feat_dim, labelled, False, soft_dim)
    missing = [n for n in names if n not in seen]
    if missing:
        raise LtvlError(f"{len(missing)} image(s) used by {split!r} examples are in none of the image sources, "
                        f"e.g. {missing[0]!r}", where=sources,
                        fix="pass the feature files that hold them (e.g. both train2014 and val2014 for VQA)")
    w.examples(split, examples.table(ids, w.info.tokenizer is not None))


def write_stream(w: DatasetWriter, split: str, batches: Iterable[tuple[Examples, list[Region]]],
                 feat_dim: int) -> None:
    """Sources that carry each example's images beside it (ViLT's Arrow rows): write batch by batch."""
    writer = w.images(split, encoded=True, names=True)
    ids: dict[str, int] = {}
    written = 0
    for examples, images in batches:
        new = [r for r in images if r.name not in ids]
        for r in new:
            ids[r.name] = len(ids)
        if new:
            _write_chunk(writer, new, ids, feat_dim, False, True)
        if len(examples):
            w.examples(split, examples.table(ids, w.info.tokenizer is not None, written))
            written += len(examples)


def _write_chunk(writer, chunk: list[Region], ids: dict[str, int], feat_dim: int, labelled: bool,
                 encoded: bool, soft_dim: int = 0) -> None:
    n, r = len(chunk), max(max(len(x.features) for x in chunk), 1)
    feats = np.zeros((n, r, feat_dim), np.float16)
    boxes = np.zeros((n, r, 7), np.float32)
    labels = np.zeros((n, r), np.int32)
    soft = np.zeros((n, r, soft_dim), np.float16) if soft_dim else None
    for i, x in enumerate(chunk):
        k = len(x.features)
        if feat_dim and x.features.shape[1] != feat_dim:
            raise LtvlError(f"image {x.name!r} has {x.features.shape[1]}-d features, the others {feat_dim}-d",
                            where="features", fix="import one feature extractor's output at a time")
        feats[i, :k], boxes[i, :k] = x.features, x.boxes
        if labelled:
            if x.labels is None:
                raise LtvlError(f"image {x.name!r} has no detector classes, the others do", where="features",
                                fix="import features from one extraction at a time")
            labels[i, :k] = x.labels
        if soft is not None:
            if x.soft is None or x.soft.shape != (k, soft_dim):
                raise LtvlError(f"image {x.name!r} has no {soft_dim}-class soft labels, the others do",
                                where="features", fix="import features from one extraction at a time")
            soft[i, :k] = x.soft
    nreg = np.array([len(x.features) for x in chunk])
    writer.write([ids[x.name] for x in chunk], feats, boxes, nreg, [x.encoded for x in chunk] if encoded else None,
                 labels if labelled else None, [x.name for x in chunk], soft)


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    buf = []
    for x in items:
        buf.append(x)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def parse_splits(specs: list[str], where: str = "--split") -> dict[str, list[Path]]:
    """``NAME=PATH[,PATH…]`` pairs -> {name: [paths]}; each path must exist."""
    out: dict[str, list[Path]] = {}
    for spec in specs:
        name, sep, paths = spec.partition("=")
        if not sep or not name or not paths:
            raise LtvlError(f"{spec!r} is not NAME=PATH", where=where, fix="e.g. --split train=/data/vqa_train.db")
        out[name] = [Path(p).expanduser() for p in paths.split(",")]
        for p in out[name]:
            if not p.exists():
                raise LtvlError(f"no such file or directory: {p}", where=f"{where} {name}")
    if not out:
        raise LtvlError("no splits given", where=where, fix="e.g. --split train=... --split test=...")
    return out


def source_bytes(paths: Iterable[Path]) -> int:
    """Apparent size of the sources: a conservative bound on what the import writes."""
    total = 0
    for p in paths:
        total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    return total
