"""One sweep per name at a time, on one store.

The lock is an OS file lock (``flock`` through ``filelock``) on ``$LTVL_HOME/sweeps/<name>/``:
the kernel drops it when its holder dies, so a crashed or killed driver can never leave it
stuck. Beside it, a small JSON file names the holder (pid, host, start time) for the refusal
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
    def __init__(self, base: Path, name: str):
        self.base, self.name = Path(base), name
        self.path, self.holder = self.base / ".sweep.lock", self.base / ".sweep.holder.json"
        self._lock: FileLock | None = None

    def __enter__(self) -> SweepLock:
        self.base.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path), is_singleton=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise LtvlError(f"sweep {self.name!r} is already running ({self._describe_holder()})", where="name",
                            fix="wait for it to finish, stop it, or give this one another name (--set name=...)"
                            ) from None
        self._lock = lock
        atomic_write_text(self.holder, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                   "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        return self

    def _describe_holder(self) -> str:
        try:
            h = json.loads(self.holder.read_text())
            return f"pid {h['pid']} on {h['host']}, since {h['started']}"
        except (OSError, ValueError, KeyError):
            return "holder unknown"

    def __exit__(self, *exc) -> None:
        self.holder.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None
