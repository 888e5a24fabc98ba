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
