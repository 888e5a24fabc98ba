"""``ltvl lineage`` and ``ltvl report``: what MLflow holds, as a mask's ancestry or as the paper's
tables and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ltvl.cli.common import console, err
from ltvl.util.errors import LtvlError


def register(app: typer.Typer) -> None:
    app.command()(lineage)
    app.command()(report)



def lineage(
    ref: Annotated[
        str, typer.Argument(metavar="MASK_SHA_OR_RUN", help="a mask sha256 (≥ 8 hex digits) or an MLflow run id")
    ] = "",
    tracking_uri: Annotated[str | None, typer.Option(help="default: the local sqlite store under LTVL_HOME")] = None,
    sync: Annotated[
        Path | None,
        typer.Option(
            help="send records a sweep spooled while MLflow was down (mlflow-spool.NAME.jsonl under the sweep's root)"
        ),
    ] = None,
    experiment: Annotated[str | None, typer.Option(help="with --sync: the sweep's name")] = None,
) -> None:
    """A mask's ancestry from MLflow, as a tree: dense run → round 0 → … → the mask (with source
    chains for transferred and baseline tickets)."""
    from ltvl.tracking.mlflow_lineage import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    if sync is not None:
        from ltvl.tracking.mlflow_lineage import LineageTracker

        if not experiment:
            raise LtvlError("--sync needs the sweep's experiment name", where="--experiment")
        kind = _experiment_kind(uri, experiment)
        tracker = LineageTracker(uri, experiment, kind, sync)
        tracker.connect()  # replays the spool
        left = tracker.pending()
        console.print(f"{'all records sent' if not left else f'{left} record(s) still waiting'} ({sync})")
        return
    if not ref:
        raise LtvlError("give a mask sha256 or a run id", where="MASK_SHA_OR_RUN")
    from ltvl.tracking.lineage_tree import ancestry, print_tree

    print_tree(ancestry(uri, ref), console)


def report(
    experiment: Annotated[list[str], typer.Option(help="the sweep's MLflow experiment (repeat to combine sweeps)")],
    tracking_uri: Annotated[
        str | None, typer.Option(help="default: $MLFLOW_TRACKING_URI, else the local sqlite store under LTVL_HOME")
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option(help="directory for report.md, CSVs and PNGs (default: ./reports/<experiment>)")
    ] = None,
    p: Annotated[float, typer.Option("--p", help="a winning ticket keeps p% of the dense metric")] = 99,
    min_seeds: Annotated[int, typer.Option(help="cells with fewer seeds are flagged †")] = 2,
    log: Annotated[bool, typer.Option(help="log the report as artifacts of a report run in MLflow")] = True,
) -> None:
    """The paper's tables and figures (Table 1, sparsity and rewinding curves, transfer matrix,
    mask IoU, AT) from a sweep's tracked runs, with seeds counted in every cell."""
    from ltvl.report.build import build_report
    from ltvl.tracking.mlflow_lineage import default_tracking_uri

    if not 0 < p <= 100:
        raise LtvlError(f"--p {p} is outside (0, 100]", where="--p", fix="a percentage, e.g. --p 99")
    uri = tracking_uri or default_tracking_uri()
    rep = build_report(uri, experiment, out or Path("reports") / experiment[0], p / 100, min_seeds, log)
    for s in rep.skipped:
        err.print(f"[yellow]skipped[/] {s}")
    console.print(
        f"report: {rep.markdown} ({len(rep.files)} files)"
        + (f"; in MLflow as run {rep.run_id} (artifacts/report)" if rep.run_id else "")
    )



def _experiment_kind(uri: str, name: str) -> str:
    from ltvl.tracking.reach import tracking_client

    exp = tracking_client(uri).get_experiment_by_name(name)
    if exp is None:
        raise LtvlError(f"no experiment {name!r} at {uri}", where="--experiment")
    return exp.tags.get("ltvl.sweep_kind", "")

