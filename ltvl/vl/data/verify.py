"""Files and values checked before compute, once per node per dataset: every file's sha256 against
the (sealed) manifest, then every feature and box finite.

A full scan of VQA v2's 9e9 fp16 values takes seconds, not per trial: the verdict is cached
under ``$LTVL_HOME/cache/verified/`` keyed by the dataset's content hash and its files' sizes
and modification times (so a file edited in place is scanned again), behind a file lock so
concurrent trials on a node wait for one scan.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from filelock import FileLock

from ltvl.util.atomic import atomic_write_text
from ltvl.util.errors import LtvlError
from ltvl.util.home import home
from ltvl.vl.data.info import DatasetInfo
from ltvl.vl.data.inspect import verify_files
from ltvl.vl.data.writer import IMAGES

BLOCK = 1 << 26  # values scanned at a time: bounded scratch memory
FP16_EXPONENT = 0x7C00  # all exponent bits set: inf or nan


def check_values(directory: Path, info: DatasetInfo) -> None:
    """Raise naming the file whose content is not the manifest's, or the split, file and first image
    whose features or boxes hold a nan or inf. The content hash is recomputed here, not trusted:
    a file replaced under the same manifest would otherwise replay stores trained on the old one."""
    stats = sorted((rel, (directory / rel).stat().st_size, (directory / rel).stat().st_mtime_ns)
                   for rel in info.files if (directory / rel).exists())
    key = hashlib.sha256(json.dumps([info.content_sha256, stats]).encode()).hexdigest()[:32]
    marker = home() / "cache" / "verified" / f"{key}.json"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(marker) + ".lock"):
        if marker.exists():
            return
        verify_files(directory, info)
        for split in info.splits:
            _scan(directory / split / IMAGES, split)
        atomic_write_text(marker, json.dumps({"dataset": str(directory), "content_sha256": info.content_sha256,
                                              "finite": True}))


def _scan(path: Path, split: str) -> None:
    """Record batch by record batch through plain reads, not the memory map: a trial that scans
    9e9 values should not end up holding every page of the file in its resident set."""
    import pyarrow as pa

    try:
        reader = pa.ipc.open_file(pa.OSFile(str(path)))
    except (pa.ArrowInvalid, OSError) as e:
        raise LtvlError(f"not a readable Arrow IPC file ({e})", where=str(path),
                        fix="the file is truncated or corrupt: re-import or re-fetch the dataset") from e
    row0 = 0
    for b in range(reader.num_record_batches):
        batch = reader.get_batch(b)
        for column, nonfinite in (("features", _fp16_nonfinite), ("boxes", lambda v: ~np.isfinite(v))):
            chunk = batch.column(column)
            values = chunk.values.to_numpy(zero_copy_only=False)
            for start in range(0, len(values), BLOCK):
                bad = np.flatnonzero(nonfinite(values[start:start + BLOCK]))
                if len(bad):
                    row = int(np.searchsorted(chunk.offsets.to_numpy(), start + bad[0], side="right") - 1)
                    image_id = batch.column("image_id")[row].as_py()
                    raise LtvlError(f"image_id {image_id} (row {row0 + row}) has a non-finite {column[:-1]} value "
                                    f"(nan or inf)", where=f"{path} {column} (split {split!r})",
                                    fix="re-extract or drop that image's regions; training on it would diverge")
        row0 += batch.num_rows
        del batch


def _fp16_nonfinite(values: np.ndarray) -> np.ndarray:
    bits = values.view(np.uint16)
    return (bits & FP16_EXPONENT) == FP16_EXPONENT
