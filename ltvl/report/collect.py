"""Read a sweep's records back from MLflow into two tables: one row per finished round and one
per dense run. Everything the report computes starts here, so it rests only on tracked runs.

Runs that are not ltvl sweep records (logged by hand into the experiment, from another tool, or
missing the lineage tags) are not guessed at: they are listed with the reason and skipped.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import pandas as pd

from ltvl.params import schema
from ltvl.util.errors import LtvlError

ROUND_TAGS = ("ltvl.task", "ltvl.init", "ltvl.seed", "ltvl.round", "ltvl.chain_key")
# What makes two chains' numbers comparable: the same data, backbone and training budget. (Swept
# axes such as seed, rewind step, rate, method, lr and AT settings are what a report compares.)
RECIPE_KEYS = schema.RECIPE_KEYS  # declared once, in the parameter schema
ROUND_COLUMNS = ["experiment", "run_id", "chain_key", "task", "source_task", "init", "method", "seed",
                 "rewind_step", "rate", "epsilon", "adv_use", "preset", "round", "sparsity", "metric",
                 "finetune_metric", "mask_sha256", "dense", "adaptive",
                 "one_shot", "finetune", "gradual", "steps_trained", "steps"]


@dataclass
class Records:
    rounds: pd.DataFrame
    dense: pd.DataFrame
    skipped: list[str] = field(default_factory=list)  # "<run name> (<id>): <why>"
    experiments: list[str] = field(default_factory=list)
    uri: str = ""


def _experiment(client, name: str):
    exp = client.get_experiment_by_name(name)
    if exp is None:
        names = [e.name for e in client.search_experiments(max_results=1000)]
        close = difflib.get_close_matches(name, names, n=3)
        raise LtvlError(f"no experiment {name!r} in this tracking store", where="--experiment",
                        fix=(f"did you mean {', '.join(map(repr, close))}? " if close else "")
                        + f"known: {', '.join(sorted(names)[:12]) or 'none'}; or pass --tracking-uri")
    return exp


def _f(v, default=float("nan")) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def collect(uri: str, experiments: list[str]) -> Records:
    """All finished rounds and dense runs of ``experiments`` (several sweeps can feed one report:
    e.g. the rewind grid, the transfer sweep and the AT grid of one study)."""
    from ltvl.tracking.reach import tracking_client
    client = tracking_client(uri)
    rows, dense, skipped = [], [], []
    chains: dict[str, tuple[str, dict]] = {}  # ltvl.key -> (run label, params)
    for name in experiments:
        exp = _experiment(client, name)
        for run in client.search_runs([exp.experiment_id], max_results=50000):
            tags, metrics = run.data.tags, run.data.metrics
            label = f"{run.info.run_name} ({run.info.run_id[:8]})"
            kind = tags.get("ltvl.kind")
            if kind in ("chain", "ticket"):  # their rounds carry the numbers; their params the recipe
                chains[tags.get("ltvl.key", run.info.run_id)] = (label, dict(run.data.params))
                continue
            if kind == "report":
                continue  # our own output
            if kind == "dense":
                if "metric" not in metrics:
                    skipped.append(f"{label}: dense run without a metric")
                    continue
                dense.append({"experiment": name, "run_id": run.info.run_id, "task": tags.get("ltvl.task"),
                              "seed": int(_f(tags.get("ltvl.seed"), 0)), "epsilon": _f(tags.get("ltvl.epsilon"), 0.0),
                              "metric": metrics["metric"], "dense": tags.get("ltvl.dense", ""),
                              "majority": metrics.get("majority_metric", float("nan")), "n": metrics.get("n"),
                              "recipe": _recipe(run.data.params)})
                continue
            if kind != "round":
                skipped.append(f"{label}: not an ltvl sweep record (no ltvl.kind tag)" if kind is None
                               else f"{label}: unknown ltvl.kind {kind!r}")
                continue
            missing = [t for t in ROUND_TAGS if t not in tags] + [m for m in ("metric", "sparsity") if m not in metrics]
            if missing:
                skipped.append(f"{label}: round without {', '.join(missing)}")
                continue
            rows.append({"experiment": name, "run_id": run.info.run_id, "chain_key": tags["ltvl.chain_key"],
                         "task": tags["ltvl.task"], "source_task": tags.get("ltvl.source_task") or tags["ltvl.task"],
                         "init": tags["ltvl.init"], "method": tags.get("ltvl.method", "magnitude"),
                         "seed": int(_f(tags["ltvl.seed"], 0)), "rewind_step": int(_f(tags.get("ltvl.rewind_step"), 0)),
                         "rate": _f(tags.get("ltvl.rate")), "epsilon": _f(tags.get("ltvl.epsilon"), 0.0),
                         "adv_use": tags.get("ltvl.adv_use", "off"), "preset": tags.get("ltvl.preset", ""),
                         "round": int(tags["ltvl.round"]), "sparsity": metrics["sparsity"], "metric": metrics["metric"],
                         "finetune_metric": metrics.get("finetune_metric", float("nan")),
                         "mask_sha256": tags.get("ltvl.mask_sha256", ""),
                         "dense": tags.get("ltvl.dense", ""),  # empty in stores written before it was tagged
                         # a try of schedule: adaptive (its own line: several levels pruned per round)
                         "adaptive": "ltvl.level" in tags,
                         "one_shot": tags.get("ltvl.schedule") == "one_shot",
                         "finetune": tags.get("ltvl.retrain") == "finetune",
                         "gradual": tags.get("ltvl.schedule") == "gradual",
                         "steps_trained": metrics.get("steps_trained", float("nan"))})
    rows = _compatible(rows, chains, dense, skipped)
    rounds = pd.DataFrame(rows, columns=ROUND_COLUMNS)
    # sparsities of equal schedules agree to float noise; a 0.1% grid makes them one column
    rounds["sparsity"] = rounds["sparsity"].round(3)
    dense_df = pd.DataFrame(dense, columns=["experiment", "run_id", "task", "seed", "epsilon", "metric", "dense",
                                            "majority", "n", "recipe"])
    dense_df = dense_df.drop_duplicates(subset=["dense"]) if len(dense_df) else dense_df
    if rounds.empty:
        raise LtvlError(f"{', '.join(experiments)}: no finished rounds to report on"
                        + (f" ({len(skipped)} run(s) skipped: {'; '.join(skipped[:3])})" if skipped else ""),
                        where="--experiment", fix="run the sweep (or --resume it) until at least one round finishes")
    return Records(rounds, dense_df, skipped, list(experiments), uri)


def _recipe(params: dict) -> tuple:
    return tuple(str(params.get(k)) for k in RECIPE_KEYS)


def _compatible(rows: list[dict], chains: dict, dense: list[dict], skipped: list[str]) -> list[dict]:
    """Keep, per task, the rounds of chains that share the most common recipe; name and skip the
    chains of any other recipe (e.g. a smoke run logged into a real study's experiment), and the
    dense runs that do not match. With several backbones, each (task, preset) is its own row."""
    for r in rows:
        label, params = chains.get(r["chain_key"], ("", {}))
        r["_recipe"], r["_chain"] = _recipe(params) if params else None, label or r["chain_key"]
        r["steps"] = _f(params.get("steps"))  # t: the dense run's steps, the frontier's cost unit
    presets = {r["preset"] for r in rows}
    if len(presets) > 1:  # a backbone comparison: every backbone is its own task row
        for r in rows:
            r["task"] = f"{r['task']} [{r['preset']}]"
        for d in dense:
            d["task"] = f"{d['task']} [{d['recipe'][RECIPE_KEYS.index('preset')]}]"
    keep, bad = [], {}
    for task in {r["task"] for r in rows}:
        mine = [r for r in rows if r["task"] == task]
        recipes = pd.Series([r["_recipe"] for r in mine if r["_recipe"] is not None])
        main = recipes.value_counts().index[0] if len(recipes) else None
        for r in mine:
            if r["_recipe"] is None:
                bad[r["_chain"]] = "its chain run is missing"
            elif r["_recipe"] != main:
                diff = ", ".join(f"{k} {a} (not {b})" for k, a, b in zip(RECIPE_KEYS, r["_recipe"], main) if a != b)
                bad[r["_chain"]] = f"another recipe than the other {task} runs: {diff}"
            else:
                keep.append(r)
        dense[:] = [d for d in dense if d["task"] != task or main is None or d["recipe"] == main]
    skipped += [f"{name}: {why}" for name, why in sorted(bad.items())]
    return keep


def download_mask(uri: str, run_id: str, sha: str, dest: str) -> str:
    """A round's mask artifact, verified against the sha256 it was logged with."""
    import os

    from ltvl.pruning import load_mask
    from ltvl.tracking.reach import tracking_client
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per mask drowns the output
    path = tracking_client(uri).download_artifacts(run_id, f"mask/{sha}.mask.safetensors", dest)
    if load_mask(path).sha256 != sha:
        raise LtvlError(f"mask artifact of run {run_id} does not match its sha256 {sha[:12]}", where=path)
    return path
