"""Stable locations. ``ray job submit --working-dir .`` runs from a temporary copy of the
directory, so anything that must outlive a run lives under an absolute home instead."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``$LTVL_HOME``, default ``~/.ltvl``."""
    return Path(os.environ.get("LTVL_HOME", "~/.ltvl")).expanduser().resolve()


def data_dir(name: str) -> Path:
    """Where a dataset ltvl prepares itself (easy-VQA, synthetic) lives."""
    return home() / "data" / name
