"""Stable locations. ``ray job submit --working-dir .`` runs from a temporary copy of the
directory, so anything that must outlive a run lives under an absolute home instead."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``$LTVL_HOME``, default ``~/.ltvl``."""
    return Path(os.environ.get("LTVL_HOME", "~/.ltvl")).expanduser().resolve()


def data_dir(name: str) -> Path:
    return home() / "data" / name


def resolve_dataset(data: str) -> Path:
    """A dataset directory, or the name of an importable dataset, prepared on first use."""
    if data == "easy-vqa":
        from ltvl.data.easy_vqa import ensure_easy_vqa
        return ensure_easy_vqa(data_dir("easy-vqa"))
    return Path(data).expanduser()
