"""One error type for bad input, so the CLI can print it cleanly and exit non-zero.

Every message says what was wrong, where (key, file, parameter) and how to fix it.
"""

from __future__ import annotations


class LtvlError(ValueError):
    """Bad input detected before any compute. ``where`` names the key/file/param."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        parts = [f"{where}: {what}" if where else what]
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__("\n".join(parts))


def require(cond: bool, what: str, *, where: str | None = None, fix: str | None = None) -> None:
    """Raise :class:`LtvlError` unless ``cond`` holds."""
    if not cond:
        raise LtvlError(what, where=where, fix=fix)


def os_error(e: OSError) -> LtvlError:
    """An operating-system refusal (a path that does not exist or cannot be written, a full disk)
    as ltvl's one-paragraph error: what, where, and what to do."""
    import errno

    where = e.filename if e.filename else None
    fixes = {errno.ENOSPC: "free space on that disk; finished work is kept and a re-run (or --resume) goes on",
             errno.EACCES: "choose a directory you can write (e.g. LTVL_HOME, --root, --out), or fix its permissions",
             errno.EROFS: "the file system is read-only: choose a writable directory (e.g. LTVL_HOME, --root)",
             errno.ENOENT: "check the path: a parent directory does not exist",
             errno.EPERM: "choose a directory you can write, or fix its permissions"}
    return LtvlError(e.strerror or str(e), where=str(where) if where else None,
                     fix=fixes.get(e.errno, "check the path and the disk"))
