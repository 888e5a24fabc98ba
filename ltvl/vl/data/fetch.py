"""Datasets at a URI (``s3://``, ``gs://``, ``file://``; anything ``pyarrow.fs`` opens), fetched once
per node into ``$LTVL_HOME/cache/data/<content hash>/``.

The cache key is the dataset's content hash from its ``dataset.json`` (one small read), so a
re-published dataset is a new entry and an unchanged one is never fetched twice. Concurrent
trials on a node take one file lock: the first fetches into a temporary directory, checks
every file's size and sha256 against the manifest and renames it into place; the others wait
and then find it there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from filelock import FileLock

from ltvl.util.atomic import atomic_write_bytes
from ltvl.util.errors import LtvlError
from ltvl.util.home import home
from ltvl.util.safepath import inside
from ltvl.vl.data.info import FORMAT, DatasetInfo, check_fields, check_sealed


def cache_root() -> Path:
    return home() / "cache" / "data"


def fetch_dataset(uri: str) -> Path:
    return fetch(uri)[0]


MAX_MANIFEST = 64 << 20  # a dataset.json is kilobytes; a larger one is not ltvl's
CHUNK = 1 << 24


def fetch(uri: str) -> tuple[Path, bool]:
    """(local directory, whether this call copied it). Nothing the remote side says is trusted
    before it is checked: ``dataset.json`` must be sealed (its content hash matches it) and may name
    only ltvl's own files; each file is copied into a temporary directory inside the cache while
    its sha256 is computed, never past the size the manifest gives it, and the directory is put in
    place only when every file matches."""
    import pyarrow.fs as pafs

    try:
        fs, base = pafs.FileSystem.from_uri(uri.rstrip("/"))
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for unusable URIs
        raise LtvlError(f"cannot open {uri} ({e})", where="data",
                        fix="check the URI and the node's credentials (pyarrow.fs: s3://, gs://, file://)") from e
    raw, info = _remote_info(fs, base, uri)
    key = info.content_sha256[:32]  # 64 hex digits, checked: never a path
    root = cache_root()
    dest = root / key
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{key}.lock")):
        if (dest / "dataset.json").exists():
            return dest, False
        tmp = root / f".{key}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            for rel, meta in info.files.items():
                _copy_verified(fs, f"{base}/{rel}", inside(tmp, rel, f"{uri} dataset.json files"), meta, f"{uri}/{rel}")
            atomic_write_bytes(tmp / "dataset.json", raw)  # as sealed: re-serialising would change its hash
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest, True


def _remote_info(fs, base: str, uri: str) -> tuple[bytes, DatasetInfo]:
    try:
        with fs.open_input_stream(f"{base}/dataset.json") as f:
            raw = f.read(MAX_MANIFEST + 1)
        d = json.loads(raw)
    except (OSError, ValueError) as e:
        raise LtvlError(f"no readable dataset.json at {uri} ({e})", where="data",
                        fix="point data at a dataset directory written by ltvl (ltvl data import/synth)") from e
    if len(raw) > MAX_MANIFEST or not isinstance(d, dict):
        raise LtvlError(f"the dataset.json at {uri} is not one ltvl writes", where="data",
                        fix="point data at a dataset directory written by ltvl")
    if d.get("format") != FORMAT or not d.get("content_sha256") or not d.get("files"):
        raise LtvlError(f"dataset at {uri} has no format-{FORMAT} manifest to fetch by", where="data",
                        fix="convert it locally (ltvl data migrate) and upload the result")
    unknown = set(d) - set(DatasetInfo.__dataclass_fields__)
    if unknown:
        raise LtvlError(f"unknown keys {sorted(unknown)}", where=f"{uri}/dataset.json", fix="upload ltvl's own files")
    check_fields(d, f"{uri}/dataset.json")
    check_sealed(d, f"{uri}/dataset.json")
    return raw, DatasetInfo(**d)


def _copy_verified(fs, src: str, dst: Path, meta: dict, where: str) -> None:
    """Stream ``src`` into ``dst`` while hashing it; stop at once past the manifest's size."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    h, n = hashlib.sha256(), 0
    try:
        with fs.open_input_stream(src) as f, open(dst, "xb") as out:
            while chunk := f.read(CHUNK):
                n += len(chunk)
                if n > meta["bytes"]:
                    break
                h.update(chunk)
                out.write(chunk)
    except OSError as e:
        raise LtvlError(f"cannot copy ({e})", where=where,
                        fix="check the remote copy and the node's credentials") from e
    if n != meta["bytes"] or h.hexdigest() != meta["sha256"]:
        raise LtvlError("fetched file differs from the manifest (size or sha256)", where=where,
                        fix="the remote copy is damaged or was changed without its dataset.json: re-upload it")
