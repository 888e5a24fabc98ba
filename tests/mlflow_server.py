"""A real `mlflow server` on 127.0.0.1 with a sqlite backend and a served artifact store."""
from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ltvl.cluster.local import free_port  # noqa: F401 (re-exported for tests)


class MlflowServer:
    def __init__(self, workdir: Path, port: int | None = None):
        self.dir, self.port = Path(workdir), port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 240) -> MlflowServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        exe = Path(sys.executable).parent / "mlflow"
        self.proc = subprocess.Popen(
            [str(exe), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.dir / 'mlflow.db'}",
             "--artifacts-destination", str(self.dir / "artifacts"), "--workers", "1"],
            stdout=open(self.dir / "server.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.uri + "/health", timeout=2)
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError((self.dir / "server.log").read_text()[-3000:]) from None
                time.sleep(0.5)
        # slow, not broken, on a loaded 2-core machine: say how long it had and what it printed, and
        # stop it (and the job runners it has spawned), so a failed start leaves nothing running
        log = (self.dir / "server.log").read_text()[-2000:]
        self.stop()
        raise TimeoutError(f"mlflow server did not come up within {timeout:.0f} s; its log ends:\n{log}")

    def stop(self) -> None:
        """The whole process group: the server, its uvicorn worker and its job runners (which
        outlive the server's own process if only that is stopped)."""
        import os
        import signal
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=5)  # uvicorn waits on keep-alive clients; do not wait long
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of the group is left
        except ProcessLookupError:
            pass
        self.proc.wait()

    def crash(self) -> None:
        """SIGKILL, as a crashed or preempted server: no graceful wait for open client connections."""
        import os
        import signal
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
