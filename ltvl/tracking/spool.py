"""Lineage records not yet delivered to MLflow, kept on local disk in the order they were made.

Every record goes through the spool, whether MLflow is up or not: the Tune callback only appends
(a local, fsynced write: microseconds, never a network wait), and one sender drains it from the
front. Two files under the sweep's root, named by the sweep (two sweeps may share a root, never
a spool):

- ``mlflow-spool.<sweep>.jsonl``: the records, one JSON object per line, append-only, each naming
  the experiment it belongs to;
- ``mlflow-spool.<sweep>.sent``: how many of those lines MLflow has taken, rewritten atomically after each.

A crash between sending a record and counting it re-sends that record on the next run; records
are idempotent (keyed, see :mod:`ltvl.tracking.mlflow_lineage`), so it lands once. When every line
is sent, both files are removed (the records file first: a count without records means nothing).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from ltvl.util.atomic import atomic_write_text
from ltvl.util.errors import LtvlError


def spool_path(root: str | Path, sweep: str) -> Path:
    return Path(root) / f"mlflow-spool.{sweep}.jsonl"


LEGACY = "mlflow-spool.jsonl"  # before 2026-12: one spool per root, records naming no experiment


class Spool:
    def __init__(self, path: str | Path, experiment: str | None = None):
        self.path = Path(path)
        self.experiment = experiment  # stamped on every record; a record of another one is refused
        self.sent_path = self.path.with_suffix(".sent")
        self._lock = threading.Lock()  # the callback appends while the sender drains
        self._records: list[dict[str, Any]] = []
        self._sent = 0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            self.sent_path.unlink(missing_ok=True)
            return
        text = self.path.read_text()
        lines = text.splitlines()
        self._records = []
        for i, line in enumerate(lines):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if i < len(lines) - 1:  # damage inside the file: never drop the records behind it
                    raise LtvlError(f"line {i + 1} of {len(lines)} is not a lineage record", where=str(self.path),
                                    fix="repair or remove that line (the records are JSON, one per line), "
                                        "then run again") from None
                continue
            if self.experiment and isinstance(rec, dict) and rec.get("experiment", self.experiment) != self.experiment:
                raise LtvlError(f"line {i + 1} is a record of experiment {rec['experiment']!r}, not "
                                f"{self.experiment!r}", where=str(self.path),
                                fix="send it with `ltvl lineage --sync` and its own experiment's name")
            self._records.append(rec)
        if len(self._records) < len(lines) or (text and not text.endswith("\n")):
            # a torn last line (killed mid-append) was never acknowledged to anyone: drop it now, or
            # the next append would be glued onto it
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self._records))
        try:
            self._sent = min(int(self.sent_path.read_text().strip() or 0), len(self._records))
        except (FileNotFoundError, ValueError):
            self._sent = 0  # unknown: re-send all; idempotent records make that harmless

    def reject(self, record: dict[str, Any], error: Exception) -> Path:
        """Set aside a record MLflow can never take, beside the spool, so the ones behind it go on."""
        rejected = self.path.with_name(self.path.stem + ".rejected.jsonl")
        with self._lock, rejected.open("a") as f:
            f.write(json.dumps({"error": f"{type(error).__name__}: {error}", "record": record}) + "\n")
        return rejected

    def append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        now = time.time()
        stamp = {"experiment": self.experiment} if self.experiment else {}
        records = [{**r, "t": r.get("t", now), **stamp} for r in records]  # when, for MLflow's timestamps
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in records))
                f.flush()
                os.fsync(f.fileno())
            self._records.extend(records)

    def pending_records(self) -> list[dict[str, Any]]:
        """The records not yet sent, oldest first."""
        with self._lock:
            return list(self._records[self._sent:])

    def head(self) -> dict[str, Any] | None:
        """The oldest record not yet sent."""
        with self._lock:
            return self._records[self._sent] if self._sent < len(self._records) else None

    def mark_sent(self) -> None:
        """The head reached MLflow: count it, and clear the spool once it is empty."""
        with self._lock:
            self._sent += 1
            if self._sent == len(self._records):
                self.path.unlink(missing_ok=True)
                self.sent_path.unlink(missing_ok=True)
                self._records, self._sent = [], 0
            else:
                atomic_write_text(self.sent_path, str(self._sent))

    def __len__(self) -> int:
        """Records waiting to be sent."""
        with self._lock:
            return len(self._records) - self._sent
