"""Crash-safe file writes: a reader sees either the old file or the complete new one."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temp file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; shared storage needs the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def json_sha256(d: dict) -> str:
    """The content hash of a JSON-able spec (key order does not matter): how stores are named."""
    import json
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def claim_spec_dir(directory: str | os.PathLike, spec: dict, writer: bool, what: str) -> None:
    """A store directory named by a hash prefix: write its ``spec.json`` once, and refuse one that
    holds a different spec (a prefix collision, or a hand-edited directory)."""
    import json

    from ltvl.util.errors import LtvlError
    f = Path(directory) / "spec.json"
    if f.exists():
        if json.loads(f.read_text()) != json.loads(json.dumps(spec)):
            raise LtvlError(f"{what} directory holds a different spec (hash prefix collision?)", where=str(directory),
                            fix="use a different root directory")
    elif writer:
        atomic_write_text(f, json.dumps(spec, indent=2, sort_keys=True))
