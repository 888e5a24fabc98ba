"""What a sweep was started with, kept beside its lock, so that ``--resume`` finishes *that* sweep.

Tune restores a stage with the param space it pickled when the stage began: chains added to the
config afterwards would be counted and never run, and changed settings silently ignored. So the
driver records the config (and the chains it resolved to) when a sweep starts, and ``--resume``
compares: any difference is refused, naming the keys that changed. Settings that only change how
the sweep runs (resources, tracking, where files go) may change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ltvl.util.atomic import atomic_write_text
from ltvl.util.errors import LtvlError

RECORD = "plan.json"
# keys that change how a sweep runs, never what it computes: a resume may change them
HOW = ("resources", "tracking_uri", "storage", "root", "scales", "name", "keep", "report_p", "register")
RENAMED = {"early_stop.p": "early_stop.keep"}  # a plan recorded before a rename compares under the new word


def plan_of(config: dict[str, Any], chains: list[str]) -> dict[str, Any]:
    """The part of a sweep's config a resume must keep, and the chain identities it resolved to."""
    return {"config": {k: v for k, v in config.items() if k not in HOW}, "chains": sorted(chains)}


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``grid.rate: [0.5] → [0.5, 0.8]``, one line per key that differs."""
    a = {RENAMED.get(k, k): v for k, v in _flat(old["config"]).items()}
    b = _flat(new["config"])
    lines = [f"{k}: {json.dumps(a.get(k))} → {json.dumps(b.get(k))}" for k in sorted(set(a) | set(b))
             if a.get(k) != b.get(k)]
    added, removed = set(new["chains"]) - set(old["chains"]), set(old["chains"]) - set(new["chains"])
    if added or removed:
        lines.append(f"{len(added)} chain(s) added, {len(removed)} removed")
    return lines


def save(base: Path, plan: dict[str, Any]) -> None:
    atomic_write_text(Path(base) / RECORD, json.dumps(plan, indent=1, sort_keys=True))


def check_resume(base: Path, plan: dict[str, Any]) -> str | None:
    """Refuse a resume whose config differs from the one the sweep started with; returns a note
    when the sweep predates this record (nothing to compare)."""
    f = Path(base) / RECORD
    try:
        old = json.loads(f.read_text())
    except FileNotFoundError:
        return "this sweep was started by an older ltvl, which kept no record of its config: not compared"
    except ValueError as e:
        raise LtvlError(f"the sweep's record is damaged ({e})", where=str(f),
                        fix="resume with the config it started with after deleting the record, or start a new sweep "
                            "(another name): finished rounds replay from the stores") from e
    diff = differences(old, plan)
    if diff:
        raise LtvlError("the config differs from the one this sweep started with; --resume finishes the sweep as "
                        "it began:\n  " + "\n  ".join(diff[:20]) + ("\n  …" if len(diff) > 20 else ""),
                        where="--resume",
                        fix="resume with the original config, or run the changed one as a new sweep (--set name=…): "
                            "chains it shares with this one replay from their stores")
    return None
