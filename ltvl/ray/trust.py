"""The resume trust boundary: Tune's state is unpickled on ``--resume`` only as this driver left it.

``Tuner.restore`` unpickles files under the sweep's storage: ``tuner.pkl``, the trials' ``params.pkl``
and ``error.pkl``, and cloudpickled fields inside ``experiment_state-*.json`` and the searcher's
``*-state-*.json``. Whoever can write the storage (on a cloud, anyone with write access to its
bucket prefix) could plant one and run code on the head. So the driver records the sha256 of
every such file as Tune writes it (a Tune callback, each step) in a manifest under
``$LTVL_HOME/sweeps/<name>/`` (mode 0600, never in the storage), and ``--resume`` refuses a stage
whose state files differ from it or include one it never recorded. ltvl's own stores hold no
pickles at all (safetensors and JSON, found by hash).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import time
from pathlib import Path

from ray import tune

from ltvl.util.errors import LtvlError

PATTERNS = ("*.pkl", "experiment_state*.json", "*-state-*.json")  # what Tune's restore unpickles


def _fs(path: str):
    import pyarrow.fs as pafs

    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def state_files(stage_path: str) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime ns)} of the state files under a stage, [] if it has none yet."""
    import pyarrow.fs as pafs

    fs, base = _fs(stage_path)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except OSError:
        return {}
    out = {}
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        name = info.path.rsplit("/", 1)[-1]
        if any(fnmatch.fnmatch(name, p) for p in PATTERNS):
            mtime = info.mtime_ns if info.mtime_ns is not None else 0
            out[info.path[len(base):].lstrip("/")] = (info.size or 0, mtime)
    return out


def _sha256(stage_path: str, rel: str) -> str:
    fs, base = _fs(stage_path)
    h = hashlib.sha256()
    with fs.open_input_stream(f"{base}/{rel}") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Manifest:
    """``{stage path: {relative path: sha256}}``, in a file only this user can read or write."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict[str, dict[str, str]]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise LtvlError(f"the resume manifest is damaged ({e})", where=str(self.path),
                            fix="delete the stage's directory in the storage and run again without --resume "
                                "(finished rounds are kept in the stores)") from e
        return doc if isinstance(doc, dict) else {}

    def save(self, doc: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(doc, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class RecordState(tune.Callback):
    """Keeps the manifest up to date with the state files of one stage as Tune writes them."""

    def __init__(self, manifest: Path, stage_path: str, every_s: float = 1.0):
        self.manifest, self.stage_path, self.every_s = Manifest(manifest), stage_path, every_s
        self._seen: dict[str, tuple[int, int]] = {}
        self._last = 0.0

    def record(self) -> None:
        self._last = time.monotonic()
        files = state_files(self.stage_path)
        changed = {rel: st for rel, st in files.items() if self._seen.get(rel) != st}
        if not changed:
            return
        doc = self.manifest.load()
        entry = doc.setdefault(self.stage_path, {})
        for rel in changed:
            try:
                entry[rel] = _sha256(self.stage_path, rel)
            except OSError:
                continue  # being replaced right now: the next step records it
        self.manifest.save(doc)
        self._seen.update(changed)

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self._last >= self.every_s:  # Tune steps many times a second: list at most once
            self.record()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.record()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.record()

    def on_experiment_end(self, trials, **info):
        self.record()

    def __getstate__(self):  # Tune pickles its callbacks with the run config: keep only the paths
        return {"manifest": self.manifest, "stage_path": self.stage_path, "every_s": self.every_s, "_seen": {},
                "_last": 0.0}


def verify(manifest: Path, stage_path: str) -> None:
    """Refuse to restore a stage whose state files are not exactly those this driver recorded."""
    recorded = Manifest(manifest).load().get(stage_path)
    where = stage_path
    fix = (f"if nobody else writes this storage, delete {stage_path} and run the sweep again without --resume: "
           "its finished rounds are kept in the chain stores and replay")
    if recorded is None:
        raise LtvlError("there is no record of this stage's Tune state, so it cannot be trusted to unpickle",
                        where=where, fix=fix)
    for rel in sorted(state_files(stage_path)):
        if rel not in recorded:
            raise LtvlError(f"{rel} was not written by this sweep's driver (it is not in its record)", where=where,
                            fix=fix)
        if _sha256(stage_path, rel) != recorded[rel]:
            raise LtvlError(f"{rel} changed since this sweep's driver wrote it", where=where, fix=fix)


def set_aside(manifest: Path, stage_path: str) -> str:
    """Move a stage's Tune state that cannot be trusted out of the way, unread, and forget its
    record, so the stage can run afresh: its finished rounds replay from the chain stores, which
    hold no pickles. A driver killed between Tune's write of its state and the record of it (the
    record follows each write by up to a step) leaves such a state behind as surely as a stranger
    does; neither is ever unpickled. Returns where the state went."""
    fs, base = _fs(stage_path)
    dest = f"{base}.untrusted-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    fs.move(base, dest)
    doc = Manifest(manifest).load()
    if doc.pop(stage_path, None) is not None:
        Manifest(manifest).save(doc)
    return dest if "://" not in stage_path else stage_path.split("://", 1)[0] + "://" + dest
