"""From a sweep's param space to the resolved jobs its stages run, and back from a trial's config.

A grid is expanded here, not by Tune: the driver resolves every chain once (bad input fails
before any trial), and each trial's config carries its job's params with the identity the driver
resolved (``job``). The trial resolves the same params again and checks it gets that identity.
Only sampled (Optuna) values are left for Tune to fill in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune

from ltvl.core.dense import DenseStore
from ltvl.params.resolve import ChainJob, TicketJob, resolve
from ltvl.plan.points import grid_points

# never a chain's identity
PLUMBING = ("root", "storage", "env", "resources", "dense_rewinds", "group", "job", "sweep_base")


def search_domains(param_space: dict) -> dict:
    return {k: v for k, v in param_space.items() if isinstance(v, tune.search.sample.Domain)}


def _domain_probes(domains: dict) -> list[dict]:
    if not domains:
        return [{}]
    lows, highs = {}, {}
    for k, d in domains.items():
        if isinstance(d, tune.search.sample.Categorical):
            lows[k], highs[k] = d.categories[0], d.categories[-1]
        else:
            lows[k], highs[k] = d.lower, d.upper - (1 if isinstance(d, tune.search.sample.Integer) else 0)
    return [lows, highs]


def validate_space(param_space: dict) -> int:
    """Resolve every grid point now, so bad input fails before any trial starts. Searched
    (sampled) values are checked at their bounds. Returns the number of grid points."""
    domains = search_domains(param_space)
    points = grid_points({k: v for k, v in param_space.items() if k not in domains})
    for i, point in enumerate(points):
        for probe in _domain_probes(domains):
            resolve({**point, **probe}, where="params" if len(points) == 1 else f"params (grid point {i})")
    return len(points)


def job_entry(params: dict, root: str | Path) -> dict[str, Any]:
    """One trial's job: its params and the identity the driver resolved for it."""
    job = resolve(params)
    if isinstance(job, TicketJob):
        return {"params": params, "kind": "ticket", "name": f"ticket-{job.baseline.value}-{job.target.params.task}"}
    return {
        "params": params,
        "kind": "chain",
        "sha256": job.store_sha256(root),
        "dense_sha256": DenseStore(root, job.dense, writer=False).sha256,
        "rewind_step": job.chain.start_step,  # the dense step it starts from: θi, or θT when fine-tuning
        "dense_steps": list(job.chain.dense_steps),  # every dense step whose state it reads
        "cost": len(job.chain.sparsities()) * job.chain.steps_per_round,
    }


def trial_params(config: dict) -> dict:
    """The chain params of a trial's config (a resolved job, or Optuna's flat sampled values)."""
    if "job" in config:
        return dict(config["job"]["params"])
    return {k: v for k, v in config.items() if k not in PLUMBING}


def trial_job(config: dict) -> ChainJob | TicketJob:
    return resolve(trial_params(config))


def trial_name(trial) -> str:
    """``chain-<hash16>`` / ``dense-<hash16>``: the chain's (or dense run's) directory in the store."""
    config = trial.config
    if "group" in config:
        return f"dense-{config['group']['dense_sha256'][:16]}-{trial.trial_id}"
    if "job" in config:
        job = config["job"]
        return (
            f"{job['name']}-{trial.trial_id}"
            if job["kind"] == "ticket"
            else f"chain-{job['sha256'][:16]}-{trial.trial_id}"
        )
    job = trial_job(config)
    return f"chain-{job.store_sha256(config['root'])[:16]}-{trial.trial_id}"


def longest_first(entries: list[dict]) -> list[dict]:
    """Start the longest chains first (LPT order): a long chain started last would run alone at
    the end of the sweep while the rest of the cluster idles."""
    return sorted(entries, key=lambda e: e.get("cost", 0), reverse=True)  # stable: equal costs keep config order


