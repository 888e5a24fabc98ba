"""Turn a chain's ``data`` value into a dataset directory: a path as given, or a dataset ltvl
prepares itself on first use (``easy-vqa``, ``synthetic:<task>``) under ``$LTVL_HOME/data``."""

from __future__ import annotations

import os
from pathlib import Path

from ltvl.util.home import data_dir


def resolve_dataset(data: str) -> Path:
    """A dataset directory, or the name of an importable dataset, prepared on first use."""
    if data == "easy-vqa":
        from ltvl.vl.data.easy_vqa import ensure_easy_vqa
        return ensure_easy_vqa(data_dir("easy-vqa"))
    if data.startswith("synthetic:"):  # e.g. synthetic:nlvr2 — the generator's default size, seed 0
        return ensure_synthetic(data.removeprefix("synthetic:"))
    return Path(data).expanduser()


def ensure_synthetic(task: str) -> Path:
    """A synthetic ``task`` dataset under LTVL_HOME, made once (in a temp dir, then renamed, so
    concurrent trials never see half a dataset)."""
    import shutil
    import tempfile

    from ltvl.vl.data.synthetic import make_synthetic
    out = data_dir(f"synthetic-{task}")
    if not (out / "dataset.json").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".synthetic-{task}.", dir=out.parent))
        try:
            make_synthetic(task, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            os.rename(tmp, out)
        except OSError:  # another trial made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return out
