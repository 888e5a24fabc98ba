"""The cluster's node count over a sweep, read from Ray's node table (GCS) every few seconds.

On an autoscaling cluster it is the record of what the sweep cost and what happened to it: the
scale-up, a preempted node and its replacement. The summary prints it and the sweep keeps it as
``node-timeline.csv`` beside its other records.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ltvl.util.atomic import atomic_write_text


@dataclass(frozen=True)
class NodeSample:
    t: float  # seconds since the sweep started
    alive: frozenset[str]  # Ray node ids


@dataclass
class NodeTimeline:
    samples: list[NodeSample] = field(default_factory=list)

    def add(self, t: float, alive: set[str]) -> None:
        self.samples.append(NodeSample(round(t, 1), frozenset(alive)))

    def changes(self) -> list[NodeSample]:
        """The first sample and every sample whose node set differs from the one before."""
        out: list[NodeSample] = []
        for s in self.samples:
            if not out or s.alive != out[-1].alive:
                out.append(s)
        return out

    @property
    def peak(self) -> int:
        return max((len(s.alive) for s in self.samples), default=0)

    def joined_left(self) -> tuple[int, int]:
        """Nodes that joined after the first sample, and nodes that left before the last one."""
        if not self.samples:
            return 0, 0
        seen = set().union(*(s.alive for s in self.samples))
        return len(seen - self.samples[0].alive), len(seen - self.samples[-1].alive)

    def line(self) -> str:
        steps = " → ".join(f"{len(s.alive)} at {_clock(s.t)}" for s in self.changes())
        joined, left = self.joined_left()
        return f"Cluster nodes: {steps} (peak {self.peak}; {joined} joined, {left} left during the sweep)"

    def write_csv(self, path: Path) -> None:
        rows = [("t_s", "nodes", "node_ids")] + [(s.t, len(s.alive), " ".join(sorted(s.alive)))
                                                  for s in self.changes()]
        buf = io.StringIO()
        csv.writer(buf).writerows(rows)
        atomic_write_text(path, buf.getvalue())


def _clock(t: float) -> str:
    return f"{int(t) // 60}:{int(t) % 60:02d}"


class NodeSampler(threading.Thread):
    """Samples ``ray.nodes()`` until stopped; a failed read is skipped, never fatal."""

    def __init__(self, interval_s: float = 3.0) -> None:
        super().__init__(daemon=True, name="ltvl-node-sampler")
        self.timeline, self.interval_s = NodeTimeline(), interval_s
        self._halt, self._t0 = threading.Event(), time.monotonic()

    def sample(self) -> None:
        import ray
        try:
            alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        except Exception:  # noqa: BLE001 - a sample lost to a GCS hiccup is not worth a sweep
            return
        self.timeline.add(time.monotonic() - self._t0, alive)

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval_s)

    def stop(self) -> NodeTimeline:
        self._halt.set()
        self.join(timeout=10)
        self.sample()
        return self.timeline
