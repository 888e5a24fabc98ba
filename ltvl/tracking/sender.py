"""The sweep driver's lineage sender: a background thread that drains the spool into MLflow.

Tune calls its callbacks on the driver's event loop, and a trial that reports waits until that
loop takes its result. An MLflow call made there (a retry, a 10 s HTTP timeout) therefore stalls
every trial of the sweep while the server is down. Here the callback only appends to the spool;
this thread sends from its front, one record at a time and in order, backing off while MLflow
does not answer and saying once when it goes away and once when it is back.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

from ltvl.tracking.mlflow_lineage import LineageTracker, TrackingUnavailable


class LineageSender:
    def __init__(self, tracker: LineageTracker, *, say: Callable[[str], None] = print,
                 on_sent: Callable[[dict[str, Any]], None] | None = None, max_backoff_s: float = 10.0):
        self.tracker, self.say, self.on_sent, self.max_backoff_s = tracker, say, on_sent, max_backoff_s
        self.spool = tracker.spool
        self.outages = 0  # how many times MLflow went away during this sweep
        self._wake = threading.Event()
        self._closing = False
        self._deadline = 0.0
        self._thread = threading.Thread(target=self._run, name="ltvl-lineage-sender", daemon=True)

    def start(self) -> LineageSender:
        self._thread.start()
        return self

    def submit(self, ops: list[dict[str, Any]]) -> None:
        """Called on Tune's event loop: a local append, never a network wait."""
        self.spool.append(ops)
        self._wake.set()

    def close(self, timeout_s: float) -> int:
        """Send what is waiting, for at most ``timeout_s`` while MLflow does not answer; returns
        how many records are left in the spool (sent by the next run or ``ltvl lineage --sync``)."""
        self._deadline = time.monotonic() + timeout_s
        self._closing = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()  # every send is bounded (MLFLOW_HTTP_REQUEST_TIMEOUT), so this ends
        return len(self.spool)

    def _run(self) -> None:
        backoff, down_since = 0.5, None
        while True:
            try:
                op, rejected = self.tracker.send_next()
            except TrackingUnavailable as e:
                if down_since is None:
                    down_since, self.outages = time.monotonic(), self.outages + 1
                    self.say(f"MLflow at {self.tracker.uri} is not answering ({_gist(e)}); records wait in "
                             f"{self.spool.path} and go out in order when it is back. Training goes on.")
                if self._closing and time.monotonic() >= self._deadline:
                    return
                wait = backoff if not self._closing else min(backoff, max(0.0, self._deadline - time.monotonic()))
                self._wake.wait(wait)
                self._wake.clear()
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            if op is None:  # nothing waiting
                if self._closing:
                    return
                self._wake.wait()
                self._wake.clear()
                continue
            if rejected is not None:
                self.say(rejected)
            backoff = 0.5
            if down_since is not None:
                self.say(f"MLflow at {self.tracker.uri} answers again after {time.monotonic() - down_since:.0f} s; "
                         f"{len(self.spool) + 1} waiting record(s) are going out.")
                down_since = None
            if self.on_sent is not None:
                try:
                    self.on_sent(op)
                except Exception as e:  # noqa: BLE001 - a hint file is never worth the sender
                    self.say(f"after sending {op.get('key')}: {e}")


def _gist(e: Exception) -> str:
    """What an MLflow/SQLAlchemy error says happened, on one line (without SQLAlchemy's autoflush hint)."""
    text = re.sub(r"\(raised as a result of [^)]*\)", "", str(e))
    return " ".join(text.split())[:160] or type(e).__name__
