"""Run a command while sampling every TCP port its process tree listens on."""

from __future__ import annotations

import subprocess
import time
from types import SimpleNamespace

from ltvl.cluster.procs import Listener, descendants, listeners


def run_sampling_listeners(cmd: list[str], env: dict, timeout: float, every_s: float = 0.5):
    """Like ``subprocess.run(capture_output=True, text=True)``; also returns every listening socket
    seen in the process tree while it ran (sampled every ``every_s``)."""
    seen: set[Listener] = set()
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        deadline = time.monotonic() + timeout
        import threading

        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
        reader.start()
        while proc.poll() is None and time.monotonic() < deadline:
            seen.update(listeners([proc.pid] + [p.pid for p in descendants(proc.pid)]))
            time.sleep(every_s)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(10)
    return SimpleNamespace(returncode=proc.returncode, stdout="".join(out), stderr=""), seen
