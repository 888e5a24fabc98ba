"""The end-of-sweep table, read back from MLflow (the record users will open): for every chain,
its dense metric and the sparsest round that still keeps p of it."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table


@dataclass
class ChainSummary:
    name: str
    task: str
    init: str
    dense: float
    best_sparsity: float | None  # highest sparsity with metric >= p * dense (None: no pruned round did)
    best_metric: float | None
    last_sparsity: float
    last_metric: float
    rounds: int


def chain_summaries(uri: str, experiment: str, p: float) -> list[ChainSummary]:

    from ltvl.tracking.reach import tracking_client

    client = tracking_client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    out = []
    runs = [
        r
        for kind in ("chain", "ticket")  # the REST store has no IN for tags
        for r in client.search_runs([exp.experiment_id], filter_string=f"tags.`ltvl.kind` = '{kind}'", max_results=5000)
    ]
    for run in runs:
        metric = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "metric")}
        sparsity = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "sparsity")}
        ratio = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "dense_ratio")}
        if not metric:
            continue
        steps = sorted(metric)
        dense = metric[0] if 0 in metric else float("nan")
        if run.data.tags.get("ltvl.kind") == "ticket":  # rounds are the source chain's; dense is the source's
            dense = float("nan")
        keeps = [
            s for s in steps if s > 0 and (ratio.get(s, metric[s] / dense if dense == dense and dense else 0) >= p)
        ]
        best = max(keeps, key=lambda s: sparsity.get(s, 0.0)) if keeps else None
        out.append(
            ChainSummary(
                run.info.run_name,
                run.data.tags.get("ltvl.task", "?"),
                run.data.tags.get("ltvl.init", "?"),
                dense,
                sparsity.get(best) if best is not None else None,
                metric.get(best) if best is not None else None,
                sparsity.get(steps[-1], 0.0),
                metric[steps[-1]],
                len(steps),
            )
        )
    return sorted(out, key=lambda c: (c.task, c.init, c.name))


def print_summary(uri: str, experiment: str, p: float, console: Console) -> list[ChainSummary]:
    rows = chain_summaries(uri, experiment, p)
    table = Table(title=f"{experiment}: sparsest round keeping {p:.0%} of dense (from MLflow)")
    for col in (
        "task",
        "chain",
        "init",
        "dense",
        f"best sparsity ≥{p:.0%}",
        "metric there",
        "last sparsity",
        "last metric",
        "rounds",
    ):
        table.add_column(col)

    def pct(x):
        return "—" if x is None or x != x else f"{x:.1%}"

    def num(x):
        return "—" if x is None or x != x else f"{x:.4f}"

    for c in rows:
        table.add_row(
            c.task,
            c.name,
            c.init,
            num(c.dense),
            pct(c.best_sparsity),
            num(c.best_metric),
            pct(c.last_sparsity),
            num(c.last_metric),
            str(c.rounds),
        )
    console.print(table)
    return rows
