"""Shared by the cluster tests: run `cluster/local.sh` as a user would, the environment a fresh
machine gives it, and samplers that watch a running cluster (its ports, its node count)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from ltvl.cluster.local import ClusterState, cluster_listeners, ray_nodes

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def local_sh(*args, env, timeout=300) -> tuple[int, str]:
    out = subprocess.run(["bash", str(REPO / "cluster" / "local.sh"), *args], env=env, capture_output=True,
                         text=True, timeout=timeout)
    return out.returncode, out.stdout + out.stderr


def fresh_env(tmp: Path) -> dict:
    """A fresh machine: its own empty HOME (no ~/.ray token), its own LTVL_HOME, no cluster or
    server of anyone else's in the environment."""
    (tmp / "user").mkdir(exist_ok=True)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "LTVL_HOME": str(tmp / "home"),
           "HOME": str(tmp / "user")}
    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(k, None)
    return env


def job_env(cdir: Path, env: dict) -> dict:
    """What `eval "$(ltvl cluster env)"` exports, on top of ``env``: a job sees nothing else."""
    out = subprocess.run([str(BIN / "ltvl"), "cluster", "env", "--dir", str(cdir)], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return {**env, **dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines()
                          if line.startswith("export "))}


class ListenerSampler(threading.Thread):
    """Every listening socket the cluster's processes hold, sampled through a whole sweep (Train
    workers, their DDP rendezvous and autoscaled nodes come and go)."""

    def __init__(self, state: ClusterState):
        super().__init__(daemon=True)
        self.state, self.seen, self.stop = state, set(), threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.seen.update(cluster_listeners(self.state))
            time.sleep(0.5)


class NodeCountSampler(threading.Thread):
    """The cluster's alive nodes over time, from Ray's state API: [(seconds, {node ids})]."""

    def __init__(self, state: ClusterState, interval_s: float = 1.0):
        super().__init__(daemon=True)
        self.state, self.interval_s = state, interval_s
        self.samples: list[tuple[float, frozenset]] = []
        self.stop, self.t0 = threading.Event(), time.monotonic()

    def run(self):
        while not self.stop.is_set():
            nodes = ray_nodes(self.state)
            if nodes:
                self.samples.append((round(time.monotonic() - self.t0, 1), frozenset(n["node_id"] for n in nodes)))
            self.stop.wait(self.interval_s)

    def counts(self, since: float = 0.0) -> list[int]:
        return [len(ids) for t, ids in self.samples if t >= since]

    def now(self) -> float:
        return time.monotonic() - self.t0

    def wait_for(self, pred, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.samples and pred(len(self.samples[-1][1])):
                return True
            time.sleep(0.5)
        return False
