"""One sweep per name at a time, on each store it writes.

The locks are OS file locks (``flock`` through ``filelock``): one in ``$LTVL_HOME/sweeps/<name>/``,
and one named by the sweep in each directory it writes that another ``$LTVL_HOME`` could share
(the chain stores' root, a local Tune storage, the directory of a sqlite MLflow store). The kernel
drops a lock when its holder dies, so a crashed or killed driver can never leave one stuck.
Beside the first, a small JSON file names the holder (pid, host, start time) for the refusal
message; a stale one is simply overwritten by the next holder.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from filelock import FileLock, Timeout

from ltvl.util.atomic import atomic_write_text
from ltvl.util.errors import LtvlError


class SweepLock:
    def __init__(self, base: Path, name: str, shared: list[Path] = ()):
        self.base, self.name = Path(base), name
        self.path, self.holder = self.base / ".sweep.lock", self.base / ".sweep.holder.json"
        self.shared = [Path(d) for d in shared]
        self._locks: list[FileLock] = []

    def __enter__(self) -> SweepLock:
        self.base.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path), is_singleton=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise LtvlError(f"sweep {self.name!r} is already running ({self._describe_holder()})", where="name",
                            fix="wait for it to finish, stop it, or give this one another name (--set name=...)"
                            ) from None
        self._locks = [lock]
        for d in dict.fromkeys(self.shared):
            d.mkdir(parents=True, exist_ok=True)
            other = FileLock(str(d / f".sweep-{self.name}.lock"), is_singleton=False)
            try:
                other.acquire(timeout=0)
            except Timeout:
                self._release()
                raise LtvlError(f"a sweep named {self.name!r} is already writing {d} (from another LTVL_HOME or "
                                "machine)", where="name/root/storage/tracking_uri",
                                fix="wait for it to finish, or give this sweep another name or root") from None
            self._locks.append(other)
        atomic_write_text(self.holder, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                   "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        return self

    def _describe_holder(self) -> str:
        try:
            h = json.loads(self.holder.read_text())
            return f"pid {h['pid']} on {h['host']}, since {h['started']}"
        except (OSError, ValueError, KeyError):
            return "holder unknown"

    def _release(self) -> None:
        for lock in reversed(self._locks):
            lock.release()
        self._locks = []

    def __exit__(self, *exc) -> None:
        self.holder.unlink(missing_ok=True)
        self._release()
