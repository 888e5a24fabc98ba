"""SPEC §7's chain control, added to every sweep: for each dense run the sweep trains, one
100%-sparse chain (every prunable weight pruned, embeddings, norms and head trained from the same
start). A dense run that does not beat it, or the majority answer, by a margin is flagged, and
its chains are left out of "winning sparsity" (:mod:`ltvl.tracking.records`)."""

from __future__ import annotations

import json
from typing import Any

from ltvl.params.resolve import data_for
from ltvl.params.schema import DEFAULTS, DENSE, INFO, check

# what a control chain does not take from the chain it controls: it has one round, at 100%, from θ0
NOT_INHERITED = ("schedule", "rate", "target_sparsity", "rounds", "scope", "rewind_step", "rewind_fraction",
                 "jump", "keep", "start_level", "masks_of_seed", "retrain")


def control_chains(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One 100%-sparse control chain per distinct dense run among ``points`` (full chain params),
    in the order their dense runs first appear; none for ticket jobs or where one is given."""
    seen: set[str] = set()
    given = {_dense_key(p) for p in points if p.get("method") == "all"}
    out = []
    for point in points:
        if point.get("ticket") is not None or point.get("method") == "all":
            continue
        key = _dense_key(point)
        if key in seen or key in given:
            continue
        seen.add(key)
        out.append({**{k: v for k, v in point.items() if k not in NOT_INHERITED}, "method": "all"})
    return out


def _dense_key(point: dict[str, Any]) -> str:
    """The dense run's identity: its dense-role params (data with ``{task}`` filled in)."""
    p = check(point)
    values = {k: (data_for(p) if k == "data" else getattr(p, k)) for k, info in INFO.items() if info.role == DENSE}
    return json.dumps({k: v for k, v in values.items() if v != DEFAULTS[k] or k == "data"}, sort_keys=True,
                      default=str)
