"""The local Ray a sweep driver starts for itself, recorded so that a killed driver's leftovers
can be found and stopped by the next run of the same sweep, and nothing else ever is.

``ray.init()`` without a cluster starts GCS, a raylet, the dashboard and its agents, and worker
processes as the driver's descendants. A driver killed with SIGKILL takes some of them along but
leaves others (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) running forever, re-parented
to init, where no process tree leads to them. While the driver runs, a thread records its
descendants (PID, start time, name) in ``<sweep>/ray-helpers.json``; the next driver of that
sweep (it holds the sweep's lock, so the old one is gone) stops every recorded process that is
still the same process (same PID *and* start time: a recycled PID is someone else's).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

from ltvl.cluster.procs import descendants, proc_info, same_process
from ltvl.util.atomic import atomic_write_text
from ltvl.util.errors import LtvlError

RECORD = "ray-helpers.json"


class HelperRecorder:
    """Keeps ``<sweep>/ray-helpers.json`` up to date with this driver's descendants."""

    def __init__(self, sweep_dir: Path, interval_s: float = 5.0):
        self.path = Path(sweep_dir) / RECORD
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._seen: dict[int, tuple[int, str]] = {}
        me = proc_info(os.getpid())
        self._driver = (os.getpid(), me.start_ticks if me else 0)
        self._thread = threading.Thread(target=self._run, name="ltvl-ray-helpers", daemon=True)

    def __enter__(self) -> HelperRecorder:
        self.record()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        """A driver that ends normally has shut its Ray down: nothing to leave for the next run."""
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)

    def record(self) -> None:
        found = {i.pid: (i.start_ticks, i.name) for i in descendants(os.getpid())}
        if not set(found) - set(self._seen):
            return
        self._seen.update(found)
        atomic_write_text(self.path, json.dumps({
            "driver": list(self._driver),
            "helpers": [[p, t, n] for p, (t, n) in sorted(self._seen.items())]}))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.record()
            except OSError:
                pass


def reap_orphans(sweep_dir: Path, grace_s: float = 10.0) -> list[str]:
    """Stop what a killed driver of this sweep left running; returns ``name[pid]`` of each."""
    path = Path(sweep_dir) / RECORD
    if not path.exists():
        return []
    try:
        rec = json.loads(path.read_text())
        driver_pid, driver_start = rec["driver"]
        helpers = [(int(p), int(t), str(n)) for p, t, n in rec["helpers"]]
    except (ValueError, KeyError, TypeError) as e:  # never signal anything on a record we cannot read
        raise LtvlError(f"unreadable record of a killed driver's Ray processes ({type(e).__name__}: {e})",
                        where=str(path), fix="check for leftover ray:: processes yourself (ps -ef | grep ray::), "
                        "stop them, then delete this file") from None
    if driver_pid != os.getpid() and same_process(driver_pid, driver_start):
        return []  # that driver still runs (it cannot hold the sweep's lock and be alive; be safe anyway)
    alive = [(p, t, n) for p, t, n in helpers if p != os.getpid() and same_process(p, t)]
    for p, _, _ in alive:
        _signal(p, signal.SIGTERM)
    deadline = time.time() + grace_s
    while time.time() < deadline and any(same_process(p, t) for p, t, _ in alive):
        time.sleep(0.2)
    for p, t, _ in alive:
        if same_process(p, t):
            _signal(p, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return [f"{n}[{p}]" for p, _, n in alive]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
