"""Turn a chain's ``data`` value into a dataset directory: a path as given, a dataset ltvl
prepares itself on first use (``easy-vqa``, ``synthetic:<task>``) under ``$LTVL_HOME/data``,
or a URI (``s3://``, ``gs://``, ``file://``) fetched once per node (``ltvl.vl.data.fetch``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from ltvl.util.errors import LtvlError
from ltvl.util.home import data_dir
from ltvl.vl.data.info import FORMAT, DatasetInfo

URI_SCHEMES = ("s3://", "gs://", "file://")


def resolve_dataset(data: str) -> Path:
    """A dataset directory, or the name of an importable dataset, prepared on first use."""
    if data == "easy-vqa":
        from ltvl.vl.data.easy_vqa import prepare_easy_vqa, source_of
        return ensure_prepared(data_dir("easy-vqa"), prepare_easy_vqa, source=source_of())
    if data.startswith("synthetic:"):  # e.g. synthetic:nlvr2 — the generator's default size, seed 0
        return ensure_synthetic(data.removeprefix("synthetic:"))
    if data.startswith(URI_SCHEMES):
        from ltvl.vl.data.fetch import fetch_dataset
        return fetch_dataset(data)
    return Path(data).expanduser()


def local_info(data: str) -> DatasetInfo | None:
    """The dataset.json of ``data`` where it is already on this machine (prepared or a directory), without
    preparing or fetching anything; None otherwise."""
    if data.startswith(URI_SCHEMES):
        return None
    if data == "easy-vqa":
        directory = data_dir("easy-vqa")
    elif data.startswith("synthetic:"):
        directory = data_dir(f"synthetic-{data.removeprefix('synthetic:')}")
    else:
        directory = Path(data).expanduser()
    if not is_current(directory):
        return None
    try:
        return DatasetInfo.load(directory)
    except LtvlError:
        return None


def prepared_elsewhere(data: str) -> bool:
    """``data`` names a dataset the workers prepare or fetch (not a directory on this machine)."""
    return data == "easy-vqa" or data.startswith(("synthetic:", *URI_SCHEMES))


def is_current(directory: Path, source: str | None = None) -> bool:
    """A complete dataset in the format this ltvl reads (and from ``source``, when given)."""
    try:
        d = json.loads((directory / "dataset.json").read_text())
    except (OSError, ValueError):
        return False
    return d.get("format") == FORMAT and (source is None or d.get("source") == source)


def ensure_prepared(out: Path, build: Callable[[Path], object], source: str | None = None) -> Path:
    """Build ``out`` once. Concurrent trials on a node wait on one lock and one build; a copy in an
    older format, or prepared differently (``source``), is rebuilt (ltvl made it, so nothing is lost)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out.parent / f".{out.name}.lock")):
        if not is_current(out, source):
            build(out)
    return out


def ensure_synthetic(task: str) -> Path:
    """A synthetic ``task`` dataset under LTVL_HOME, made once."""
    from ltvl.vl.data.schema import TASK_COLUMNS
    from ltvl.vl.data.synthetic import make_synthetic

    if task not in TASK_COLUMNS:  # before any lock or directory exists
        raise LtvlError(f"no synthetic generator for task {task!r}", where="data",
                        fix=f"synthetic:<task> with one of {', '.join(TASK_COLUMNS)}")
    return ensure_prepared(data_dir(f"synthetic-{task}"), lambda out: make_synthetic(task, out))
