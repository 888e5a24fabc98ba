"""What a chain, round, dense run or ticket looks like in MLflow: pure functions from a resolved
job and a reported result to tracking ops (see :mod:`ltvl.tracking.mlflow_lineage`). Everything
comes from the resolved job, never from the raw config, so a tag says what actually ran."""

from __future__ import annotations

from typing import Any

from ltvl.core.baselines import BASELINES
from ltvl.core.identity import FORMAT
from ltvl.params.resolve import ChainJob, TicketJob
from ltvl.params.schema import DEFAULTS, DENSE, INFO, ChainParams

LINEAGE_METRICS = ("metric", "sparsity", "train_loss", "wall_s", "dense_ratio", "steps_trained", "finetune_metric")
Job = ChainJob | TicketJob


def chain_of(job: Job) -> ChainJob:
    """The chain a job trains: a ticket's target chain, or the job itself."""
    return job.target if isinstance(job, TicketJob) else job


def init_label(job: Job) -> str:
    """θ0 / θi for IMP, RP, high_magnitude; for tickets the baseline's init (transfer keeps θ0)."""
    if isinstance(job, TicketJob):
        return BASELINES[job.baseline].init_label
    method = job.params.method
    if method == "random":
        return "RP"
    if method == "high_magnitude":
        return "high_magnitude"
    return "theta_i" if job.rewind_step else "theta0"


def epsilon(p: ChainParams) -> float:
    return float(p.adv_epsilon) if p.adv_use != "off" else 0.0


def lineage_tags(job: Job) -> dict[str, Any]:
    chain = chain_of(job)
    p = chain.params
    return {"ltvl.task": p.task, "ltvl.rewind_step": chain.rewind_step, "ltvl.rate": p.rate,
            "ltvl.epsilon": epsilon(p), "ltvl.init": init_label(job), "ltvl.method": p.method,
            "ltvl.preset": p.preset, "ltvl.seed": p.seed, "ltvl.adv_use": p.adv_use, "ltvl.format": FORMAT}


def dense_ops(dense_sha: str, job: ChainJob, metrics: dict) -> list[dict]:
    p = job.params
    recipe = {k: getattr(p, k) for k, info in INFO.items() if info.role == DENSE}
    key = f"dense:{dense_sha}"
    return [{"op": "run", "key": key, "name": f"dense-{p.task}-{dense_sha[:8]}", "params": recipe,
             "tags": {"ltvl.kind": "dense", "ltvl.dense": dense_sha, "ltvl.task": p.task, "ltvl.seed": p.seed,
                      "ltvl.init": "theta0", "ltvl.epsilon": epsilon(p), "ltvl.format": FORMAT}},
            {"op": "metrics", "key": key, "metrics": {k: v for k, v in metrics.items() if k == "metric"}, "step": 0},
            {"op": "end", "key": key, "status": "FINISHED"}]  # a dense run is whole once its metric is in


def chain_name(job: Job) -> str:
    chain = chain_of(job)
    p = chain.params
    if isinstance(job, TicketJob):
        return f"ticket-{job.baseline.value}-{job.source_task}-to-{p.task}-s{p.seed}"
    eps = f"-eps{epsilon(p):g}" if epsilon(p) else ""
    lr = f"-lr{p.lr:.3g}" if p.lr != DEFAULTS["lr"] else ""  # searches vary it
    return f"{init_label(job)}-{p.task}-rw{chain.rewind_step}-rate{p.rate:g}{eps}{lr}-s{p.seed}"


def chain_ops(chain_key: str, job: Job, dense_sha: str | None, extra_tags: dict | None = None) -> list[dict]:
    tags = {"ltvl.kind": "ticket" if isinstance(job, TicketJob) else "chain", **lineage_tags(job), **(extra_tags or {})}
    if dense_sha:
        tags["ltvl.dense_run_id"] = f"@key:dense:{dense_sha}"
    params = job.params.to_dict()
    params["rewind_step"] = chain_of(job).rewind_step  # the step actually rewound to (rewind_fraction resolved)
    return [{"op": "run", "key": chain_key, "name": chain_name(job), "params": params, "tags": tags}]


def round_op(chain_key: str, job: Job, result: dict, dense_sha: str | None, mask_path: str | None) -> dict:
    r = int(result["round"])
    tags = {"ltvl.kind": "round", "ltvl.chain_key": chain_key, "ltvl.round": r, **lineage_tags(job),
            "ltvl.mask_sha256": result["mask_sha256"],
            "ltvl.parent_sha256": result.get("parent_sha256") or result.get("source_mask_sha256") or ""}
    if dense_sha:
        tags["ltvl.dense_run_id"] = f"@key:dense:{dense_sha}"
    if result.get("nodes"):  # the Ray nodes that trained this round
        tags["ltvl.nodes"] = result["nodes"]
    if result.get("source_task"):
        tags["ltvl.source_task"] = result["source_task"]
        tags["ltvl.source_mask_sha256"] = result.get("source_mask_sha256", "")
    return {"op": "round", "key": f"round:{chain_key}:{r}", "chain_key": chain_key, "round": r,
            "name": f"round {r} ({float(result['sparsity']):.1%})", "tags": tags, "mask_path": mask_path,
            "metrics": {k: result[k] for k in LINEAGE_METRICS if k in result and result[k] is not None}}
