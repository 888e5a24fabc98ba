"""Convert a format-0 dataset (Parquet, ``list<>`` columns, raw pixels) to the current layout.

Format 0 padded every image to ``num_regions`` and stored pixels raw; this re-encodes pixels
as PNG (lossless, so batches are unchanged) and streams each split in record batches.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ltvl.util.errors import LtvlError
from ltvl.vl.data.info import DatasetInfo
from ltvl.vl.data.writer import DatasetWriter, encode_png

BATCH = 4096


def _flat(batch, name: str, dtype) -> np.ndarray:
    return batch[name].flatten().to_numpy(zero_copy_only=False).astype(dtype)


def migrate(src: str | Path, out: str | Path) -> DatasetInfo:
    src = Path(src)
    meta_path = src / "dataset.json"
    if not meta_path.exists():
        raise LtvlError("not a dataset directory (no dataset.json)", where=str(src))
    meta = json.loads(meta_path.read_text())
    if "format" in meta:
        raise LtvlError(f"already in format {meta['format']}", where=str(meta_path), fix="nothing to migrate")
    info = DatasetInfo(**meta)
    r, d = info.num_regions, info.feat_dim
    need = sum(p.stat().st_size for p in src.rglob("*.parquet")) * 2
    with DatasetWriter(out, info, need) as w:
        for split in info.splits:
            images = pq.ParquetFile(src / split / "images.parquet")
            has_pix = "pixels" in images.schema_arrow.names and info.image_size
            has_lab = "region_labels" in images.schema_arrow.names
            writer = w.images(split, encoded=bool(has_pix), region_labels=has_lab)
            for batch in images.iter_batches(BATCH):
                n = batch.num_rows
                flat = functools.partial(_flat, batch)
                encoded = None
                if has_pix:
                    s = info.image_size
                    encoded = [encode_png(p) for p in flat("pixels", np.uint8).reshape(n, s, s, 3)]
                writer.write(batch["image_id"].to_numpy(), flat("features", np.float16).reshape(n, r, d),
                             flat("boxes", np.float32).reshape(n, r, 7), batch["num_regions"].to_numpy(), encoded,
                             flat("region_labels", np.int32).reshape(n, r) if has_lab else None)
            for batch in pq.ParquetFile(src / split / "examples.parquet").iter_batches(BATCH):
                w.examples(split, batch)
    return DatasetInfo.load(out)
