"""Paths that come from files ltvl did not write (a remote ``dataset.json``, a manifest, a config)
can name any place on the machine. Everything ltvl writes or reads by such a name goes through
here: the name must be relative, may not climb out with ``..``, and may not pass through a
symbolic link that leads out of the directory it is meant to stay in; what is read must be a
regular file (a device such as ``/dev/zero`` never ends)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path, PurePosixPath

from ltvl.util.errors import LtvlError

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def inside(root: str | os.PathLike, rel: str, where: str) -> Path:
    """``root/rel``, refusing a ``rel`` that is absolute, climbs with ``..``, or resolves (through
    symbolic links, existing or not yet) to a place outside ``root``."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel:
        raise LtvlError(f"file name {rel!r} is not a plain relative path", where=where,
                        fix="the manifest may name only files inside the dataset directory")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or any(part in ("..", "") for part in rel.split("/")):
        raise LtvlError(f"file name {rel!r} leaves its directory", where=where,
                        fix="the manifest may name only files inside the dataset directory")
    base = Path(os.path.realpath(root))
    target = Path(os.path.realpath(os.path.join(base, *pure.parts)))
    if target != base and base not in target.parents:
        raise LtvlError(f"file name {rel!r} leads outside {base} (through a symbolic link)", where=where,
                        fix="remove the link, or re-create the directory")
    return base.joinpath(*pure.parts)


def regular_file(path: str | os.PathLike, where: str) -> Path:
    """``path`` if it is a regular file (not a device, a pipe or a socket)."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise LtvlError(f"missing file {p.name}", where=str(p), fix="re-import or re-fetch the dataset") from None
    if not stat.S_ISREG(st.st_mode):
        raise LtvlError(f"{p} is not a regular file", where=where, fix="a dataset holds regular files only")
    return p


def content_hash(value: object, where: str) -> str:
    """A 64-hex sha256, as ltvl writes them; anything else (a path, say) is refused."""
    if not isinstance(value, str) or not HEX64.match(value):
        raise LtvlError(f"{value!r} is not a sha256 (64 hex digits)", where=where,
                        fix="the file was not written by ltvl, or it was edited: re-create it")
    return value
