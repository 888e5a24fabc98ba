"""The paper's tables as pure functions of the collected rounds (no MLflow, no plotting), so a
test can recompute every number independently.

Every number is a :class:`Cell`: mean, std and the number of seeds it rests on. A cell with
fewer than ``min_seeds`` seeds is flagged (†) and one with none says "missing"; nothing is
ever filled in silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ltvl.tracking.arms import PRETRAIN, SPARSE_CONTROL, arm_label
from ltvl.tracking.records import dense_flag

TABLE1_LINES = ("IMP", "RP", "θ'0", "θ''0", "high-magnitude")


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float
    n: int
    min_seeds: int = 2

    @classmethod
    def of(cls, values, min_seeds: int = 2) -> Cell:
        v = [float(x) for x in values if x == x]
        if not v:
            return cls(math.nan, math.nan, 0, min_seeds)
        s = pd.Series(v)
        return cls(float(s.mean()), float(s.std(ddof=1)) if len(v) > 1 else math.nan, len(v), min_seeds)

    @property
    def flagged(self) -> bool:
        return self.n < self.min_seeds

    def __str__(self) -> str:
        if self.n == 0:
            return "missing"
        sd = f" ± {self.std:.4f}" if self.n > 1 else ""
        return f"{self.mean:.4f}{sd} (n={self.n}){' †' if self.flagged else ''}"


def line_of(row) -> str:
    """Which curve of the paper a round belongs to: its arm, in the one vocabulary of
    :mod:`ltvl.tracking.arms` (MLflow's ``ltvl.arm`` tag and run names say the same)."""
    return arm_label(ticket=row["chain_key"].startswith("ticket:"), init=row["init"],
                     rewind_step=int(row["rewind_step"]), source_task=row["source_task"], adv_use=row["adv_use"],
                     epsilon=float(row["epsilon"]), adaptive=bool(row.get("adaptive", False)),
                     one_shot=bool(row.get("one_shot", False)), finetune=bool(row.get("finetune", False)),
                     gradual=bool(row.get("gradual", False)))


def with_lines(rounds: pd.DataFrame) -> pd.DataFrame:
    out = rounds.copy()
    out["line"] = [line_of(r) for _, r in out.iterrows()] if len(out) else []
    return out


def _standard(rounds: pd.DataFrame) -> pd.DataFrame:
    """Standard (non-adversarial) training: what Table 1, the curves and transfer compare."""
    return rounds[(rounds["epsilon"] == 0) | (rounds["adv_use"] == "off")]


def dense_cell(dense: pd.DataFrame, task: str, min_seeds: int, epsilon: float = 0.0) -> Cell:
    d = dense[(dense["task"] == task) & (dense["epsilon"] == epsilon)]
    return Cell.of(d.groupby("seed")["metric"].mean(), min_seeds)


def sparse_controls(rounds: pd.DataFrame, task: str) -> pd.DataFrame:
    """The 100%-sparse control chains' pruned rounds of ``task`` (one per dense run that had one)."""
    return rounds[(rounds["task"] == task) & (rounds["line"] == SPARSE_CONTROL) & (rounds["sparsity"] > 0)]


def control_values(rounds: pd.DataFrame, dense: pd.DataFrame, task: str) -> dict[str, float]:
    """The mean of each control of ``task`` over seeds, for the figures' control lines."""
    d = dense[(dense["task"] == task) & (dense["epsilon"] == 0)]
    out = {"majority answer": Cell.of(d.groupby("seed")["majority"].mean()).mean if "majority" in d else math.nan,
           SPARSE_CONTROL: Cell.of(sparse_controls(_standard(rounds), task).groupby("seed")["metric"].mean()).mean}
    return {k: v for k, v in out.items() if v == v}


def failed_dense(dense: pd.DataFrame, rounds: pd.DataFrame, task: str, standard_only: bool = True) -> pd.DataFrame:
    """The dense runs of ``task`` that do not beat a control (SPEC §7): the majority answer, or
    the 100%-sparse chain grown from the same dense run. Columns: dense, seed, why. Table 1 asks
    about standard training only; ``standard_only=False`` checks the adversarially trained dense
    runs as well (the AT tables rest on them)."""
    d = dense[(dense["task"] == task) & ((dense["epsilon"] == 0) | (not standard_only))]
    controls = sparse_controls(rounds, task)
    named = controls["dense"].fillna("") != ""
    by_dense = dict(zip(controls[named]["dense"], controls[named]["metric"]))
    by_seed = controls[~named].groupby("seed")["metric"].mean().to_dict()  # stores older than the ltvl.dense tag
    rows = []
    for r in d.itertuples():
        sparse100 = by_dense.get(r.dense, by_seed.get(r.seed))
        why = dense_flag(r.metric, getattr(r, "n", None), majority=getattr(r, "majority", None), sparse100=sparse100)
        if why:
            rows.append({"dense": r.dense, "seed": int(r.seed), "why": why})
    return pd.DataFrame(rows, columns=["dense", "seed", "why"])


def without_failed(rounds: pd.DataFrame, dense: pd.DataFrame, task: str, bad: pd.DataFrame
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``rounds`` and ``dense`` without ``task``'s runs that rest on a failed dense run: rounds by
    the dense run they name, or by seed where they name none (older stores)."""
    shas, seeds = set(bad["dense"]), set(bad["seed"])
    of_task = rounds["task"] == task
    named = rounds["dense"].fillna("") != ""
    drop = of_task & ((named & rounds["dense"].isin(shas)) | (~named & rounds["seed"].isin(seeds)))
    return rounds[~drop], dense[~((dense["task"] == task) & dense["dense"].isin(shas))]


def trusted(rounds: pd.DataFrame, dense: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every task's rounds and dense runs without those resting on a dense run that failed its
    controls, and the failed ones (task, dense, seed, why): what the curves and tables show."""
    failed = []
    for task in sorted(rounds["task"].unique()):
        bad = failed_dense(dense, rounds, task, standard_only=False)
        rounds, dense = without_failed(rounds, dense, task, bad)
        failed.append(bad.assign(task=task))
    cols = ["task", "dense", "seed", "why"]
    return rounds, dense, (pd.concat(failed)[cols] if failed else pd.DataFrame(columns=cols))


def cell_at(
    rounds: pd.DataFrame, task: str, line: str, sparsity: float, min_seeds: int, column: str = "metric"
) -> Cell:
    r = rounds[(rounds["task"] == task) & (rounds["line"] == line) & (rounds["sparsity"] == sparsity)]
    return Cell.of(r.groupby("seed")[column].mean(), min_seeds)  # one value per seed


def winning_sparsity(rounds: pd.DataFrame, task: str, dense: Cell, p: float) -> float | None:
    """The highest sparsity whose mean IMP metric keeps p of the mean dense metric (a relaxed
    winning ticket, SPEC §3); None when no pruned IMP round does."""
    imp = rounds[(rounds["task"] == task) & (rounds["line"] == "IMP") & (rounds["sparsity"] > 0)]
    if dense.n == 0 or imp.empty:
        return None
    keeps = [
        s for s, g in imp.groupby("sparsity") if Cell.of(g.groupby("seed")["metric"].mean()).mean >= p * dense.mean
    ]
    return max(keeps) if keeps else None


def table1(rounds: pd.DataFrame, dense: pd.DataFrame, p: float, min_seeds: int) -> pd.DataFrame:
    std = _standard(rounds)
    rows = []
    for task in sorted(std["task"].unique()):
        if task == PRETRAIN:
            continue  # the pre-training ticket has no downstream metric of its own
        bad = failed_dense(dense, rounds, task)  # their chains are no evidence of a ticket
        kept, kept_dense = without_failed(std, dense, task, bad)
        d = dense_cell(kept_dense, task, min_seeds)
        s = winning_sparsity(kept, task, d, p)
        row = {
            "task": task,
            "dense": d,
            f"{p:.0%} of dense": (f"{p * d.mean:.4f}" if d.n else "missing"),
            "winning sparsity": f"{s:.1%}" if s is not None else "none",
            "excluded seeds": ", ".join(map(str, sorted(set(bad["seed"])))) or "none",
            "majority answer": Cell.of(kept_dense[kept_dense["task"] == task].groupby("seed")["majority"].mean(),
                                       min_seeds),
            SPARSE_CONTROL: Cell.of(sparse_controls(kept, task).groupby("seed")["metric"].mean(), min_seeds),
        }
        for line in TABLE1_LINES:
            row[line] = cell_at(kept, task, line, s, min_seeds) if s is not None else Cell.of([], min_seeds)
        rows.append(row)
    return pd.DataFrame(rows)


def curves(rounds: pd.DataFrame, min_seeds: int) -> pd.DataFrame:
    """Metric against sparsity for every line of every task: mean, std and seeds per point."""
    rows = []
    for (task, line, s), g in rounds.groupby(["task", "line", "sparsity"]):
        c = Cell.of(g.groupby("seed")["metric"].mean(), min_seeds)
        rows.append(
            {"task": task, "line": line, "sparsity": s, "mean": c.mean, "std": c.std, "n": c.n, "flagged": c.flagged}
        )
    return pd.DataFrame(rows, columns=["task", "line", "sparsity", "mean", "std", "n", "flagged"])


def rewinding(rounds: pd.DataFrame, min_seeds: int) -> pd.DataFrame:
    """IMP by rewind step (0 = θ0): one column per rewind step, one row per task and sparsity."""
    imp = _standard(rounds)
    imp = imp[imp["chain_key"].str.startswith("chain:") & imp["init"].isin(["theta0", "theta_i"])]
    rows, steps = [], sorted(imp["rewind_step"].unique())
    for (task, s), g in imp.groupby(["task", "sparsity"]):
        row = {"task": task, "sparsity": f"{s:.1%}"}
        for step in steps:
            row[f"rewind {step}"] = Cell.of(g[g["rewind_step"] == step].groupby("seed")["metric"].mean(), min_seeds)
        rows.append(row)
    return pd.DataFrame(rows)


def transfer(rounds: pd.DataFrame, min_seeds: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Source × target at each sparsity (the diagonal is the target's own IMP ticket), and the
    pre-training ticket's average drop against each target's own ticket."""
    std = _standard(rounds)
    own = std[std["line"] == "IMP"]  # θ0 tickets; transfers of θi masks are left out of the matrix
    moved = std[std["chain_key"].str.startswith("ticket:") & (std["init"] == "theta0") & (std["rewind_step"] == 0)]
    if moved.empty:
        return pd.DataFrame(), pd.DataFrame()
    rows, drops = [], []
    targets = sorted(moved["task"].unique())
    for s in sorted(moved["sparsity"].unique()):
        for src in sorted(set(moved["source_task"]) | set(targets)):
            row = {"sparsity": f"{s:.1%}", "source": src}
            for tgt in targets:
                pool = own if src == tgt else moved[moved["source_task"] == src]
                g = pool[(pool["task"] == tgt) & (pool["sparsity"] == s)]
                row[tgt] = Cell.of(g.groupby("seed")["metric"].mean(), min_seeds)
            rows.append(row)
        pre = moved[(moved["source_task"] == PRETRAIN) & (moved["sparsity"] == s)]
        gaps = []
        for tgt in targets:
            mine = Cell.of(own[(own["task"] == tgt) & (own["sparsity"] == s)].groupby("seed")["metric"].mean())
            theirs = Cell.of(pre[pre["task"] == tgt].groupby("seed")["metric"].mean())
            if mine.n and theirs.n:
                gaps.append(mine.mean - theirs.mean)
        if not pre.empty:
            drops.append(
                {
                    "sparsity": f"{s:.1%}",
                    "targets": len(gaps),
                    "pre-training ticket avg drop": f"{sum(gaps) / len(gaps):.4f}" if gaps else "missing",
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(drops)


def adversarial(rounds: pd.DataFrame, min_seeds: int) -> pd.DataFrame:
    """Standard IMP against AT-IMP (tickets found with AT) and AT fine-tuning of standard
    tickets, per task, sparsity and ε."""
    at = rounds[(rounds["epsilon"] > 0) & (rounds["adv_use"] != "off")]
    if "line" in at:  # an AT dense run's 100%-sparse control is a control, not an AT-IMP ticket
        at = at[at["line"] != SPARSE_CONTROL]
    if at.empty:
        return pd.DataFrame()
    std = _standard(rounds)
    rows = []
    for (task, eps, s), g in at.groupby(["task", "epsilon", "sparsity"]):
        base = std[(std["task"] == task) & (std["line"] == "IMP") & (std["sparsity"] == s)]
        found = g[g["adv_use"].isin(["imp", "both"])]
        tuned = g[g["adv_use"].isin(["finetune", "both"])]
        rows.append(
            {
                "task": task,
                "ε": eps,
                "sparsity": f"{s:.1%}",
                "standard IMP": Cell.of(base.groupby("seed")["metric"].mean(), min_seeds),
                "AT-IMP": Cell.of(found.groupby("seed")["metric"].mean(), min_seeds),
                "standard ticket + AT fine-tuning": Cell.of(tuned.groupby("seed")["finetune_metric"].mean(), min_seeds),
            }
        )
    return pd.DataFrame(rows)
