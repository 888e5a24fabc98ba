"""A sweep's failed trials, said once and short on screen, in full in a log file.

Tune hands back each errored trial with a Ray traceback tens of lines long around the one line
that matters (usually an ``LtvlError`` naming a file and a fix). The driver prints that line per
chain, writes every traceback to ``<sweep>/failures.log`` and exits non-zero: a sweep with a
failed chain is never reported as finished.
"""

from __future__ import annotations

import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_LTVL = re.compile(r"LtvlError: (.+?)(?:\n(Fix: .+?))?(?:\n|$)")


@dataclass
class Failure:
    stage: str
    trial: str  # the trial directory's name: chain-<hash16>-<id>, dense-…, ticket-…
    message: str
    detail: str  # the full error text, for the log


def short_message(error: BaseException) -> str:
    """The ``LtvlError`` line (+ its fix) buried in a Ray error, else its last line."""
    text = _full(error)
    found = _LTVL.findall(text)
    if found:
        what, fix = found[-1]
        return what + (f"\n  {fix}" if fix else "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _full(error: BaseException) -> str:
    parts, seen, e = [], set(), error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts.append("".join(traceback.format_exception_only(type(e), e)))
        e = e.__cause__ or e.__context__
    return "\n".join(parts)


@dataclass
class TrialOutcome:
    """One trial of a stage as the driver saw it end: its config (which chain it ran) and, if it
    errored, why. The summary reads the chain's rounds from its store, not from here."""

    stage: str
    trial: str
    config: dict[str, Any]
    failure: Failure | None


def collect(stage: str, grid) -> list[TrialOutcome]:
    """Every trial of one stage's ResultGrid, errored or not. A trial that never reported has no
    config in its Result, so configs come from the grid's trials where it has them."""
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    configs = [t.config for t in trials] if len(trials) == len(grid) else [None] * len(grid)
    out = []
    for result, config in zip(grid, configs):
        trial = Path(str(result.path)).name
        failure = None
        if result.error is not None:
            failure = Failure(stage, trial, short_message(result.error),
                              "".join(traceback.format_exception(result.error)))
        out.append(TrialOutcome(stage, trial, dict(config or result.config or {}), failure))
    return out


def write_log(failures: list[Failure], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')}: {len(failures)} failed trial(s)\n")
        for x in failures:
            f.write(f"--- {x.stage} {x.trial}\n{x.detail}\n")
