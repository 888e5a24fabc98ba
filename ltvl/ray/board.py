"""The sweep's live view: which chains are done, running or waiting; for each running chain its
round i/R, the round's target sparsity, step, steps/s and ETA; and the sweep's ETA.

In a terminal it is one live table (rich); in job logs and CI, where nobody can watch a redrawn
table and ANSI codes would litter the file, it is plain timestamped lines: every finished round,
and for each running chain a status line every ``LTVL_PROGRESS_LOG_S`` seconds (default 60).
Readings come from the workers' progress files (:mod:`ltvl.core.progress`); the view never asks
a worker anything, so a slow console cannot slow training.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ltvl.core.progress import Snapshot, read_progress, seconds_from_env

WAITING, RUNNING, DONE, FAILED, STOPPED = "waiting", "running", "done", "FAILED", "stopped"


@dataclass
class Row:
    key: str  # its MLflow record key (chain:<sha>, dense:<sha>) or a ticket job's name
    name: str
    stage: str
    sparsities: list[float]  # per round, round 0 (dense) included
    round_steps: list[int]  # training steps each round costs in this stage
    progress_path: Path | None = None
    state: str = WAITING
    rounds_done: int = 0
    snapshot: Snapshot | None = None
    forwarded_t: float = 0.0  # when a reading last went to MLflow
    logged_t: float = 0.0  # when a plain status line was last printed
    last_metric: float | None = None
    search: bool = False  # schedule: adaptive: its rounds are a search's tries, their count a maximum

    @property
    def rounds(self) -> int:
        return len(self.sparsities)

    def remaining_steps(self) -> int:
        if self.state in (DONE, FAILED, STOPPED):
            return 0
        left = sum(self.round_steps[self.rounds_done:])
        s = self.snapshot
        if self.state == RUNNING and s is not None and s.round == self.rounds_done and s.round < len(self.round_steps):
            left -= min(s.step - s.step_start, self.round_steps[s.round])
        return max(left, 0)


def _duration(s: float | None) -> str:
    if s is None or s != s or s == float("inf"):
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def log_interval_s() -> float:
    """``LTVL_PROGRESS_LOG_S`` (default 60): how often a job log says where each running chain is."""
    return seconds_from_env("LTVL_PROGRESS_LOG_S", 60.0)


@dataclass
class ProgressBoard:
    """Shared between the lineage thread (events) and the view thread (readings, drawing)."""

    console: Console
    live: bool  # a terminal: one redrawn table; else plain timestamped lines
    rows: dict[str, Row] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- events ---------------------------------------------------------------------------------
    def plan(self, rows: list[Row]) -> None:
        with self._lock:
            for r in rows:
                self.rows.setdefault(r.key, r)

    def started_row(self, key: str) -> None:
        with self._lock:
            if key in self.rows and self.rows[key].state == WAITING:
                self.rows[key].state = RUNNING

    def round_done(self, key: str, round_: int, metric: float) -> None:
        with self._lock:
            if row := self.rows.get(key):
                row.rounds_done = max(row.rounds_done, round_ + 1)
                row.last_metric = metric
                if row.state == WAITING:
                    row.state = RUNNING

    def finished(self, key: str, state: str) -> None:
        with self._lock:
            if row := self.rows.get(key):
                # a search (adaptive) is done once settled, usually before its last possible try
                row.state = DONE if state == DONE and (row.rounds_done >= row.rounds or row.search) else (
                    state if state != DONE else STOPPED)

    def say(self, line: str) -> None:
        """An event line (a finished round, a warning): timestamped in logs."""
        self.console.print(line if self.live else f"{time.strftime('%H:%M:%S')} {line}")

    # --- readings -----------------------------------------------------------------------------
    def poll(self) -> list[tuple[Row, Snapshot]]:
        """Read the running chains' progress files; returns the rows with a new reading."""
        fresh = []
        with self._lock:
            running = [r for r in self.rows.values() if r.state == RUNNING and r.progress_path is not None]
        for row in running:
            snap = read_progress(row.progress_path)
            if snap is not None and snap.t >= self.started and (row.snapshot is None or snap.t > row.snapshot.t):
                row.snapshot = snap
                fresh.append((row, snap))
        return fresh

    def counts(self) -> dict[str, int]:
        out = {WAITING: 0, RUNNING: 0, DONE: 0, FAILED: 0, STOPPED: 0}
        for r in self.rows.values():
            out[r.state] += 1
        return out

    def rate(self) -> float:
        """Steps per second of all running chains together."""
        return sum(r.snapshot.steps_per_s for r in self.rows.values()
                   if r.state == RUNNING and r.snapshot is not None and r.snapshot.steps_per_s > 0)

    def sweep_eta(self) -> float | None:
        rate = self.rate()
        left = sum(r.remaining_steps() for r in self.rows.values())
        return left / rate if rate > 0 else (0.0 if left == 0 else None)

    def chain_eta(self, row: Row) -> float | None:
        s = row.snapshot
        if s is None or s.steps_per_s <= 0:
            return None
        return row.remaining_steps() / s.steps_per_s

    def chain_eta_text(self, row: Row) -> str:
        """An adaptive chain stops once its answer is settled, so its ETA counts every level it
        might still try: an upper bound, and shown as one."""
        eta = self.chain_eta(row)
        return ("≤ " if row.search and eta else "") + _duration(eta)

    def _searching(self) -> bool:
        return any(r.search and r.state in (WAITING, RUNNING) for r in self.rows.values())

    # --- drawing --------------------------------------------------------------------------------
    def headline(self) -> str:
        c = self.counts()
        parts = [f"{c[DONE]} done", f"{c[RUNNING]} running", f"{c[WAITING]} waiting"]
        parts += [f"{c[k]} {k}" for k in (STOPPED, FAILED) if c[k]]
        return (f"trials: {' · '.join(parts)} of {len(self.rows)} · elapsed {_duration(time.time() - self.started)}"
                f" · sweep ETA {'≤' if self._searching() else '≈'} {_duration(self.sweep_eta())}")

    def round_text(self, row: Row) -> str:
        if row.rounds == 1:
            return "dense" if row.stage == "dense" else f"{row.rounds_done} round(s) done"
        if row.state == WAITING:
            return f"0/{row.rounds - 1}"
        s = row.snapshot
        if s is not None and row.state == RUNNING:  # the round's own target (an adaptive try's level)
            return f"{s.round}/{row.rounds - 1} → {s.sparsity:.1%}"
        r = min(row.rounds_done, row.rounds - 1)
        return f"{r}/{row.rounds - 1} → {row.sparsities[r]:.1%}"

    def table(self) -> Group:
        t = Table(show_edge=False, pad_edge=False, box=None)
        for col in ("chain", "stage", "state", "round → target", "step", "steps/s", "loss", "ETA"):
            t.add_column(col)
        for row in sorted(self.rows.values(), key=lambda r: ({RUNNING: 0, WAITING: 1}.get(r.state, 2), r.name)):
            s = row.snapshot if row.state == RUNNING else None
            t.add_row(row.name, row.stage, row.state, self.round_text(row),
                      f"{s.step}/{s.step_end}" if s else "", f"{s.steps_per_s:.2f}" if s else "",
                      f"{s.train_loss:.3f}" if s and s.train_loss == s.train_loss else "",
                      self.chain_eta_text(row) if s else "")
        return Group(Text(self.headline(), style="bold"), t)

    def status_lines(self, now: float, every: float) -> list[str]:
        """Plain mode: one line per running chain that has news and has not spoken for ``every`` s."""
        out = []
        for row in sorted(self.rows.values(), key=lambda r: r.name):
            s = row.snapshot
            if row.state != RUNNING or s is None or s.step <= s.step_start or now - row.logged_t < every:
                continue  # (a reading at a round's first step says nothing yet)
            row.logged_t = now
            loss = f"  loss {s.train_loss:.3f}" if s.train_loss == s.train_loss else ""
            out.append(f"{row.name}  round {self.round_text(row)}  step {s.step}/{s.step_end}  "
                       f"{s.steps_per_s:.2f} steps/s{loss}  ETA {self.chain_eta_text(row)}")
        if out:
            out.append(self.headline())
        return out


class ProgressView:
    """Draws the board (terminal) or prints its status lines (logs) from a thread of its own, and
    hands fresh readings to ``on_reading`` (the lineage's batched live metrics)."""

    def __init__(self, board: ProgressBoard, on_reading=None, tick_s: float = 1.0):
        self.board, self.on_reading, self.tick_s = board, on_reading, tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ltvl-progress", daemon=True)
        self._live = None

    def __enter__(self) -> ProgressView:
        if self.board.live:
            from rich.live import Live
            # stdout is left alone: Ray prints its own warnings there, through the sweep's filter
            # (main.quiet_libraries), which a redirect would bypass
            self._live = Live(self.board.table(), console=self.board.console, refresh_per_second=2, transient=True,
                              redirect_stdout=False)
            self._live.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self._live is not None:
            self._live.__exit__(*exc)

    def _run(self) -> None:
        every = log_interval_s()
        while not self._stop.wait(self.tick_s):
            try:
                fresh = self.board.poll()
                if self.on_reading is not None:
                    for row, snap in fresh:
                        self.on_reading(row, snap)
                if self._live is not None:
                    self._live.update(self.board.table())
                else:
                    for line in self.board.status_lines(time.time(), every):
                        self.board.say(line)
            except Exception as e:  # noqa: BLE001 - the view is never worth the sweep
                self.board.console.print(f"progress view: {type(e).__name__}: {e}")
