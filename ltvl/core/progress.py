"""Where a chain is inside a round, for people watching a long sweep: a small JSON file beside the
chain's state (``<store>/progress.json``), rewritten atomically every few seconds by rank 0.

A file, not a Ray actor or MLflow call: the chain store already lives where the sweep driver can
read it (a shared path on a cluster), the file costs nothing when nobody reads it, and a worker
never waits on anyone to write it. The sweep driver turns it into the live view and into batched
live metrics (:mod:`ltvl.ray.board`). Imports neither Ray nor MLflow.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ltvl.util.atomic import atomic_write_text

PROGRESS_FILE = "progress.json"


def seconds_from_env(name: str, default: float) -> float:
    """A positive number of seconds from the environment variable ``name`` (``default`` if unset).
    A bad value is an error that names the variable: the sweep driver reads every such knob
    before anything starts."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        from ltvl.util.errors import LtvlError
        raise LtvlError(f"{name}={raw!r} is not a positive number of seconds", where=name,
                        fix=f"unset it ({default:g} s) or give e.g. {default / 2:g}")
    return value


def progress_interval_s() -> float:
    """``LTVL_PROGRESS_S`` (default 10): how often a worker rewrites its progress file."""
    return seconds_from_env("LTVL_PROGRESS_S", 10.0)


@dataclass
class Snapshot:
    """One progress reading. ``chain_step`` counts training steps across the chain's rounds
    (dense: 0..t, round r ≥ 1: t + (r-1)(t-i) + …), so live metrics have one increasing x-axis."""

    round: int
    rounds: int  # planned, round 0 (dense) included
    sparsity: float  # this round's target
    step: int  # optimizer step within the training run (i..t for pruned rounds)
    step_start: int
    step_end: int
    chain_step: int
    steps_per_s: float
    train_loss: float  # mean over the steps since the last snapshot
    round_started: float  # epoch seconds
    t: float  # epoch seconds of this reading

    @property
    def fraction(self) -> float:
        span = self.step_end - self.step_start
        return (self.step - self.step_start) / span if span > 0 else 1.0


class RoundProgress:
    """Fed by the training loop's ``on_step`` hook; writes at most every ``interval_s``."""

    def __init__(self, path: str | Path | None, sparsities: list[float], steps: int, rewind_step: int,
                 interval_s: float | None = None, clock: Callable[[], float] = time.time):
        self.path = Path(path) if path is not None else None
        self.sparsities, self.steps, self.rewind = sparsities, steps, rewind_step
        self.interval = progress_interval_s() if interval_s is None else interval_s
        self.clock = clock
        self.next_round = 0
        self._round = 0
        self._start = self._end = 0
        self._t_round = self._t_last = clock()
        self._last_step = 0
        self._losses: list[float] = []
        self._sparsity: float | None = None

    def chain_step(self, r: int, step: int) -> int:
        if r == 0:
            return step
        per = self.steps - self.rewind
        return self.steps + (r - 1) * per + (step - self.rewind)

    def begin(self, step0: int, until: int, sparsity: float | None = None) -> None:
        """A training run of round ``next_round`` starts at ``step0`` and ends at ``until``, at
        ``sparsity`` where the schedule does not say it by round (an adaptive chain's tries)."""
        self._round, self._start, self._end = self.next_round, step0, until
        self._sparsity = sparsity
        self._t_round = self._t_last = self.clock()
        self._last_step = step0
        self._losses = []
        self._write(step0, float("nan"), 0.0)

    def finished(self, round_: int) -> None:
        """Round ``round_`` was reported (computed or replayed): the next training is the next round."""
        self.next_round = round_ + 1

    def step(self, step: int, loss: float) -> None:
        self._losses.append(loss)
        now = self.clock()
        if now - self._t_last >= self.interval or step == self._end:
            rate = (step - self._last_step) / max(now - self._t_last, 1e-9)
            self._write(step, sum(self._losses) / len(self._losses), rate)
            self._t_last, self._last_step, self._losses = now, step, []

    def _write(self, step: int, loss: float, rate: float) -> None:
        if self.path is None:
            return
        r = min(self._round, len(self.sparsities) - 1)
        sparsity = self.sparsities[r] if self._sparsity is None else self._sparsity
        snap = Snapshot(self._round, len(self.sparsities), sparsity, step, self._start, self._end,
                        self.chain_step(self._round, step), round(rate, 3), loss, self._t_round, self.clock())
        try:
            atomic_write_text(self.path, json.dumps(asdict(snap)))
        except OSError:  # a progress file is never worth a training step
            pass


def read_progress(path: str | Path) -> Snapshot | None:
    """The last snapshot, or None where there is none (yet) or it cannot be read."""
    try:
        d = json.loads(Path(path).read_text())
        return Snapshot(**{k: d[k] for k in Snapshot.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None
