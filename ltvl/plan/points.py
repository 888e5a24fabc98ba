"""A sweep's points: every chain's parameters, expanded from the config's ``params``, ``grid``
and ``chains`` (plus the controls), and the ticket stage's points over the IMP chains. Pure, so
the plan, the dry run and the Ray stages expand a grid the same way."""

from __future__ import annotations

import itertools
from typing import Any

from ltvl.params.resolve import resolve
from ltvl.params.schema import DEFAULTS


def grid_points(param_space: dict) -> list[dict]:
    """Every combination of the ``{"grid_search": [...]}`` axes (other values as they are)."""
    axes = {k: v["grid_search"] for k, v in param_space.items() if isinstance(v, dict) and "grid_search" in v}
    fixed = {k: v for k, v in param_space.items() if k not in axes}
    return [{**fixed, **dict(zip(axes, combo))} for combo in itertools.product(*axes.values())] or [fixed]


def chain_points(fixed: dict[str, Any], extra: list[dict]) -> list[dict]:
    """Every chain a sweep runs: the grid's points, then each extra chain (``chains:`` and the
    controls) over the config's plain params, which its own keys override."""
    plain = {k: v for k, v in fixed.items() if not (isinstance(v, dict) and "grid_search" in v)}
    return grid_points(fixed) + [{**plain, **e} for e in extra]


def fixed_space(params: dict[str, Any], grid: dict[str, list]) -> dict[str, Any]:
    """The params with each grid axis as a ``grid_search`` (an axis keeps a param's position)."""
    space: dict[str, Any] = dict(params)
    for axis, values in grid.items():
        space[axis] = {"grid_search": list(values)}
    return space


def ticket_points(points: list[dict], baselines: tuple[str, ...], transfer_to: tuple[str, ...]) -> list[dict]:
    """The ticket stage: every baseline on each IMP chain's masks, and each IMP chain's masks
    transferred to every other task in ``transfer_to``."""
    out = []
    for params in points:
        p = {**DEFAULTS, **params}
        if p["method"] != "magnitude":
            continue
        own = {k: v for k, v in params.items() if k != "prime_checkpoint"}  # θ'0's weights are theta0_prime's only
        out += [{**(params if b == "theta0_prime" else own), "ticket": b, "source": params} for b in baselines]
        out += [{**own, "task": t, "ticket": "imp", "source": params} for t in transfer_to if t != p["task"]]
    for i, t in enumerate(out):
        resolve(t, where=f"tickets[{i}]")  # bad input fails before any trial
    return out
