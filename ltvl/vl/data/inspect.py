"""What a dataset directory holds (``ltvl data info``), and whether its files are intact."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ltvl.util.errors import LtvlError
from ltvl.util.safepath import inside, regular_file
from ltvl.vl.data.info import DatasetInfo
from ltvl.vl.data.writer import EXAMPLES, IMAGES


def file_sha256(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_files(directory: Path, info: DatasetInfo) -> None:
    """Every manifest file exists with its size and sha256; the first that does not is named."""
    for rel, meta in info.files.items():
        path = inside(directory, rel, f"{directory}/dataset.json files")
        if not path.exists():
            raise LtvlError(f"missing file {rel}", where=str(directory), fix="re-import or re-fetch the dataset")
        regular_file(path, str(path))  # a device or a pipe would be read forever
        if path.stat().st_size != meta["bytes"] or file_sha256(path) != meta["sha256"]:
            raise LtvlError("contents differ from the manifest's sha256: the file is corrupt or was replaced",
                            where=str(path), fix="re-import or re-fetch the dataset")


def describe(directory: Path, verify: bool = False) -> dict:
    info = DatasetInfo.load(directory)
    if verify:
        verify_files(directory, info)
    splits = {}
    for split in info.splits:
        img, ex = info.files.get(f"{split}/{IMAGES}", {}), info.files.get(f"{split}/{EXAMPLES}", {})
        splits[split] = {"images": img.get("rows", 0), "examples": ex.get("rows", 0),
                         "bytes": img.get("bytes", 0) + ex.get("bytes", 0)}
    return {"format": info.format, "task": info.task, "feat_dim": info.feat_dim, "num_regions": info.num_regions,
            "min_regions": info.min_regions, "image_size": info.image_size, "answers": len(info.answers),
            "tokenizer": info.tokenizer, "source": info.source, "bytes": info.total_bytes,
            "content_sha256": info.content_sha256, "splits": splits}
