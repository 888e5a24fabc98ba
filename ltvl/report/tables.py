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

from ltvl.tracking.arms import PRETRAIN, arm_label
from ltvl.tracking.records import dense_learned

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
                     epsilon=float(row["epsilon"]))


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


def failed_dense_seeds(dense: pd.DataFrame, task: str) -> list[int]:
    """Seeds whose dense run did not beat the majority-answer control (SPEC §7): Table 1 leaves
    their chains out of "winning sparsity" and says which."""
    d = dense[(dense["task"] == task) & (dense["epsilon"] == 0)]
    if "majority" not in d:
        return []
    return sorted({int(r.seed) for r in d.itertuples()
                   if not dense_learned(r.metric, r.majority, getattr(r, "n", None))})


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
        bad = failed_dense_seeds(dense, task)  # their chains are no evidence of a ticket
        kept = std[~((std["task"] == task) & std["seed"].isin(bad))]
        d = dense_cell(dense[~((dense["task"] == task) & dense["seed"].isin(bad))], task, min_seeds)
        s = winning_sparsity(kept, task, d, p)
        row = {
            "task": task,
            "dense": d,
            f"{p:.0%} of dense": (f"{p * d.mean:.4f}" if d.n else "missing"),
            "winning sparsity": f"{s:.1%}" if s is not None else "none",
            "excluded seeds": ", ".join(map(str, bad)) or "none",
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
