"""Datasets at a URI (``s3://``, ``gs://``, ``file://``; anything ``pyarrow.fs`` opens), fetched once
per node into ``$LTVL_HOME/cache/data/<content hash>/``.

The cache key is the dataset's content hash from its ``dataset.json`` (one small read), so a
re-published dataset is a new entry and an unchanged one is never fetched twice. Concurrent
trials on a node take one file lock: the first fetches into a temporary directory, checks
every file's size and sha256 against the manifest and renames it into place; the others wait
and then find it there.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from filelock import FileLock

from ltvl.util.errors import LtvlError
from ltvl.util.home import home
from ltvl.vl.data.info import FORMAT, DatasetInfo


def cache_root() -> Path:
    return home() / "cache" / "data"


def fetch_dataset(uri: str) -> Path:
    return fetch(uri)[0]


def fetch(uri: str) -> tuple[Path, bool]:
    """(local directory, whether this call copied it)."""
    import pyarrow.fs as pafs

    try:
        fs, base = pafs.FileSystem.from_uri(uri.rstrip("/"))
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for unusable URIs
        raise LtvlError(f"cannot open {uri} ({e})", where="data",
                        fix="check the URI and the node's credentials (pyarrow.fs: s3://, gs://, file://)") from e
    info = _remote_info(fs, base, uri)
    key = info.content_sha256[:32]
    dest = cache_root() / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.parent / f".{key}.lock")):
        if (dest / "dataset.json").exists():
            return dest, False
        tmp = dest.parent / f".{key}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            local = pafs.LocalFileSystem()
            for rel in info.files:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                pafs.copy_files(f"{base}/{rel}", str(tmp / rel), source_filesystem=fs, destination_filesystem=local)
            _verify(tmp, info, uri)
            info.save(tmp)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest, True


def _remote_info(fs, base: str, uri: str) -> DatasetInfo:
    try:
        with fs.open_input_stream(f"{base}/dataset.json") as f:
            d = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise LtvlError(f"no readable dataset.json at {uri} ({e})", where="data",
                        fix="point data at a dataset directory written by ltvl (ltvl data import/synth)") from e
    if d.get("format") != FORMAT or not d.get("content_sha256") or not d.get("files"):
        raise LtvlError(f"dataset at {uri} has no format-{FORMAT} manifest to fetch by", where="data",
                        fix="convert it locally (ltvl data migrate) and upload the result")
    return DatasetInfo(**d)


def _verify(directory: Path, info: DatasetInfo, uri: str) -> None:
    from ltvl.vl.data.inspect import file_sha256

    for rel, meta in info.files.items():
        path = directory / rel
        if path.stat().st_size != meta["bytes"] or file_sha256(path) != meta["sha256"]:
            raise LtvlError("fetched file differs from the manifest (size or sha256)", where=f"{uri}/{rel}",
                            fix="the remote copy is damaged or was changed without its dataset.json: re-upload it")
