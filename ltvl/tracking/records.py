"""What a chain, round, dense run or ticket looks like in MLflow: pure functions from the chain
params and a reported result to tracking ops (see :mod:`ltvl.tracking.mlflow_lineage`)."""

from __future__ import annotations

from typing import Any

from ltvl.params.resolve import DEFAULTS

LINEAGE_METRICS = ("metric", "sparsity", "train_loss", "wall_s", "dense_ratio", "steps_trained", "finetune_metric")


def init_kind(params: dict) -> str:
    """θ0 / θi for IMP, RP, high_magnitude; for tickets the baseline's init (transfer keeps θ0)."""
    p = {**DEFAULTS, **params}
    if p.get("ticket"):
        return {"imp": "theta0", "random": "RP", "theta0_prime": "theta0_prime", "theta0_shuffled": "theta0_shuffled",
                "random_init": "random", "high_magnitude": "high_magnitude"}[p["ticket"]]
    if p["method"] == "random":
        return "RP"
    if p["method"] == "high_magnitude":
        return "high_magnitude"
    return "theta_i" if (p["rewind_step"] or p["rewind_fraction"]) else "theta0"


def _epsilon(p: dict) -> float:
    return float(p["adv_epsilon"]) if p["adv_use"] != "off" else 0.0


def lineage_tags(params: dict) -> dict[str, Any]:
    p = {**DEFAULTS, **params}
    return {"ltvl.task": p["task"], "ltvl.rewind_step": p["rewind_step"], "ltvl.rate": p["rate"],
            "ltvl.epsilon": _epsilon(p), "ltvl.init": init_kind(p), "ltvl.method": p["method"],
            "ltvl.preset": p["preset"], "ltvl.seed": p["seed"], "ltvl.adv_use": p["adv_use"]}


def dense_ops(dense_sha: str, params: dict, metrics: dict) -> list[dict]:
    p = {**DEFAULTS, **params}
    recipe = {k: p[k] for k in ("task", "data", "preset", "layers", "checkpoint", "steps", "lr", "batch_size",
                                "weight_decay", "warmup_ratio", "seed", "max_len", "eval_limit", "adv_use",
                                "adv_epsilon")}
    key = f"dense:{dense_sha}"
    return [{"op": "run", "key": key, "name": f"dense-{p['task']}-{dense_sha[:8]}", "params": recipe,
             "tags": {"ltvl.kind": "dense", "ltvl.core.dense": dense_sha, "ltvl.task": p["task"], "ltvl.seed": p["seed"],
                      "ltvl.init": "theta0", "ltvl.epsilon": _epsilon(p)}},
            {"op": "metrics", "key": key, "metrics": {k: v for k, v in metrics.items() if k == "metric"}, "step": 0}]


def chain_name(params: dict) -> str:
    p = {**DEFAULTS, **params}
    if p.get("ticket"):
        src = p["source"].get("task", DEFAULTS["task"]) if isinstance(p.get("source"), dict) else "masks"
        return f"ticket-{p['ticket']}-{src}-to-{p['task']}-s{p['seed']}"
    eps = f"-eps{_epsilon(p):g}" if _epsilon(p) else ""
    lr = f"-lr{float(p['lr']):.3g}" if p["lr"] != DEFAULTS["lr"] else ""  # searches vary it
    return f"{init_kind(p)}-{p['task']}-rw{p['rewind_step']}-rate{p['rate']:g}{eps}{lr}-s{p['seed']}"


def chain_ops(chain_key: str, params: dict, dense_sha: str | None, extra_tags: dict | None = None) -> list[dict]:
    tags = {"ltvl.kind": "ticket" if params.get("ticket") else "chain", **lineage_tags(params), **(extra_tags or {})}
    if dense_sha:
        tags["ltvl.dense_run_id"] = f"@key:dense:{dense_sha}"
    full = {k: v for k, v in {**DEFAULTS, **params}.items()}
    return [{"op": "run", "key": chain_key, "name": chain_name(params), "params": full, "tags": tags}]


def round_op(chain_key: str, params: dict, result: dict, dense_sha: str | None, mask_path: str | None) -> dict:
    r = int(result["round"])
    tags = {"ltvl.kind": "round", "ltvl.chain_key": chain_key, "ltvl.round": r, **lineage_tags(params),
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
