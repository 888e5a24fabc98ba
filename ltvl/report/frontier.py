"""The frontier (#33): at each sparsity, which route gives the best subnetwork and what it cost;
at each training budget, the sparsest subnetwork that keeps p of dense. Pure functions of the
collected rounds, so a test can recompute every number.

Cost is optimizer steps, counted the same way for every arm: the dense run's t (every arm needs
the trained dense model, if only as its reference) plus each pruned round of the chain up to this
one (IMP's earlier rounds included; a fine-tuned or gradual round is its whole t, a rewound one
t - i). FLOPs follow: every arm trains the same model on the same batches, and masks do not make
dense kernels cheaper, so FLOPs are proportional to steps. Differences between arms are judged
with :mod:`ltvl.core.verdict`'s standard errors (over seeds; with one seed, the binomial error
of an accuracy on the evaluated questions), never by the mean alone.
"""

from __future__ import annotations

import math

import pandas as pd

from ltvl.core.verdict import Estimate, Z, gap
from ltvl.tracking.arms import SPARSE_CONTROL

REFERENCE = "IMP"  # the arm every other's cost is compared with
RATIO = f"× {REFERENCE}'s steps"


def arm_rounds(rounds: pd.DataFrame) -> pd.DataFrame:
    """Pruned rounds of the routes to a subnetwork: chains (not re-trained tickets), no control."""
    return rounds[rounds["chain_key"].str.startswith("chain:") & (rounds["line"] != SPARSE_CONTROL)]


def with_costs(rounds: pd.DataFrame) -> pd.DataFrame:
    """Each chain round with ``cost``: the optimizer steps spent to reach it (see the module doc)."""
    out = []
    for _key, g in arm_rounds(rounds).groupby("chain_key"):
        g = g.sort_values("round").copy()
        per_round = g["steps"] - g["rewind_step"].where(~g["finetune"].astype(bool), 0)
        trained = g["steps_trained"].where(g["steps_trained"].fillna(0) > 0, per_round)  # older records: the recipe
        trained = trained.where(g["round"] > 0, 0)
        g["cost"] = g["steps"] + trained.cumsum()
        out.append(g)
    cols = [*rounds.columns, "cost"]
    return pd.concat(out)[cols] if out else pd.DataFrame(columns=cols)


def points(rounds: pd.DataFrame, n_eval: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per (task, arm, sparsity > 0): the metric's estimate over seeds and the mean cost."""
    rows = []
    costed = with_costs(rounds)
    for (task, line, s), g in costed[costed["sparsity"] > 0].groupby(["task", "line", "sparsity"]):
        per_seed = g.groupby("seed").agg(metric=("metric", "mean"), cost=("cost", "mean"))
        e = Estimate.of(list(per_seed["metric"]), (n_eval or {}).get(task))
        rows.append({"task": task, "line": line, "sparsity": s, "mean": e.mean, "se": e.se, "seeds": e.seeds,
                     "cost": float(per_seed["cost"].mean())})
    return pd.DataFrame(rows, columns=["task", "line", "sparsity", "mean", "se", "seeds", "cost"])


def _est(row) -> Estimate:
    return Estimate(float(row["mean"]), float(row["se"]), int(row["seeds"]))


def best_by_sparsity(pts: pd.DataFrame) -> pd.DataFrame:
    """At each sparsity: the best arm, its metric and cost (and as a multiple of IMP's), the
    runner-up, and whether the best is ahead of it beyond noise."""
    rows = []
    for (task, s), g in pts.groupby(["task", "sparsity"]):
        g = g.sort_values(["mean", "cost"], ascending=[False, True])
        best = g.iloc[0]
        ref = g[g["line"] == REFERENCE]
        ratio = best["cost"] / float(ref["cost"].iloc[0]) if len(ref) else math.nan
        row = {"task": task, "sparsity": f"{s:.1%}", "best arm": best["line"], "metric": _fmt(best),
               "steps": int(best["cost"]), RATIO: f"{ratio:.2f}" if ratio == ratio else "—",
               "runner-up": "—", "ahead beyond noise": "—"}
        if len(g) > 1:
            second = g.iloc[1]
            d, se = gap(_est(best), _est(second))
            row["runner-up"] = f"{second['line']} ({_fmt(second)})"
            row["ahead beyond noise"] = ("yes" if (d > Z * se if se == se else d > 0)
                                         else f"no (+{d * 100:.1f} ± {Z * se * 100:.1f} pts)")
        rows.append(row)
    return pd.DataFrame(rows)


def sparsest_by_budget(rounds: pd.DataFrame, dense: pd.DataFrame, p: float) -> pd.DataFrame:
    """For each budget (every cost some round reached): the sparsest subnetwork reached within it
    whose metric keeps p of its own seed's dense metric, and the arm that reached it."""
    costed = with_costs(rounds)
    costed = costed[costed["sparsity"] > 0]
    dense_by = {(d.task, d.seed): d.metric for d in dense.itertuples()}
    costed = costed.assign(dense=[dense_by.get((t, s), math.nan) for t, s in zip(costed["task"], costed["seed"])])
    kept = costed[costed["metric"] >= p * costed["dense"]]
    rows = []
    for task, g in costed.groupby("task"):
        mine = kept[kept["task"] == task]
        for budget in sorted(g["cost"].unique()):
            within = mine[mine["cost"] <= budget]
            if within.empty:
                rows.append({"task": task, "budget (steps)": int(budget), "sparsest keeping p": "none",
                             "arm": "—", "seed": "—"})
                continue
            top = within.sort_values(["sparsity", "metric"], ascending=[False, False]).iloc[0]
            rows.append({"task": task, "budget (steps)": int(budget), "sparsest keeping p": f"{top['sparsity']:.1%}",
                         "arm": top["line"], "seed": int(top["seed"])})
    return pd.DataFrame(rows, columns=["task", "budget (steps)", "sparsest keeping p", "arm", "seed"])


def verdicts(pts: pd.DataFrame, rounds: pd.DataFrame, dense: pd.DataFrame, p: float,
             n_eval: dict[str, float] | None = None) -> pd.DataFrame:
    """The verdict on every arm's subnetwork at every sparsity (:func:`ltvl.core.verdict.verdict`):
    against its dense runs, the p line, random pruning (the RP arm) at the same sparsity and the
    controls (the majority answer, the 100%-sparse chain), each beyond two standard errors."""
    from ltvl.core.verdict import verdict

    rows = []
    for task, g in pts.groupby("task"):
        n = (n_eval or {}).get(task)
        d = dense[dense["task"] == task]
        dense_est = Estimate.of(list(d.groupby("seed")["metric"].mean()), n)
        controls = [Estimate.of(list(d.groupby("seed")["majority"].mean()), n)] if "majority" in d else []
        ctl = rounds[(rounds["task"] == task) & (rounds["line"] == SPARSE_CONTROL) & (rounds["round"] > 0)]
        if len(ctl):
            controls.append(Estimate.of(list(ctl.groupby("seed")["metric"].mean()), n))
        for row in g.sort_values(["sparsity", "line"]).itertuples():
            rp = g[(g["line"] == "RP") & (g["sparsity"] == row.sparsity)]
            random = _est(rp.iloc[0]) if len(rp) and row.line != "RP" else None
            v = verdict(row.sparsity, Estimate(row.mean, row.se, row.seeds), dense_est, p, random, controls)
            rows.append({"task": task, "sparsity": f"{row.sparsity:.1%}", "arm": row.line, "verdict": v.label()})
    return pd.DataFrame(rows, columns=["task", "sparsity", "arm", "verdict"])


def headline(pts: pd.DataFrame, sparsity: float, task: str | None = None) -> tuple[str, str]:
    """``at 87.5% best arm = NAME (metric M, X× IMP's training steps)`` (the benchmark's line), and
    a second line saying whether it is ahead of the runner-up beyond noise."""
    g = pts[(pts["sparsity"].round(4) == round(sparsity, 4)) & ((pts["task"] == task) if task else True)]
    if g.empty:
        return f"at {sparsity:.1%} no arm has a round", ""
    row = best_by_sparsity(g).iloc[0]
    return (f"at {sparsity:.1%} best arm = {row['best arm']} (metric {row['metric']}, {row[RATIO]}× "
            f"{REFERENCE}'s training steps)",
            f"runner-up {row['runner-up']}; best ahead beyond noise: {row['ahead beyond noise']}")


def _fmt(row) -> str:
    se = float(row["se"])
    return f"{row['mean']:.4f}" + (f" ± {se:.4f}" if se == se else "") + f" (n={int(row['seeds'])})"
