"""``ltvl ticket export|verify|eval``: a sweep's ticket as a directory anyone can load, checked and
re-scored from its own files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ltvl.cli.common import console, err, group

ticket_app = group("Export a sweep's tickets in their backbone's own format, verify them, score them again.")


def register(app: typer.Typer) -> None:
    app.add_typer(ticket_app, name="ticket")


@ticket_app.command("export")
def export(
    config: Annotated[str, typer.Argument(metavar="CONFIG|models:/NAME/VERSION",
                                          help="the sweep's config file or shipped name, or a registered ticket")],
    out: Annotated[Path, typer.Option(help="a new directory to write the ticket to")],
    chain: Annotated[Optional[str], typer.Option(help="with CONFIG: the chain's hash (a prefix: `ltvl sweep "
                                                      "validate CONFIG` lists them)")] = None,
    round_: Annotated[Optional[int], typer.Option("--round", help="the round to export")] = None,
    run: Annotated[Optional[str], typer.Option(help="with CONFIG, instead of --chain/--round: an MLflow run id "
                                                    "of a chain or of one of its rounds")] = None,
    keep: Annotated[Optional[float], typer.Option(help="instead of --round: the sparsest round keeping this "
                                                       "fraction of dense, e.g. 0.99")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE",
                                                      help="the same overrides the sweep ran with")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="with models:/… or --run: the MLflow that holds it "
                                                             "(default: the local sqlite store)")] = None,
) -> None:
    """Train a finished round of a sweep's chain again (held to its record) and write it as a directory:
    the backbone in its ecosystem's layout, head, tokenizer, mask, compact sparse weights, model card."""
    from ltvl.tickets.from_sweep import export_from_sweep, run_ref
    from ltvl.tickets.registry import export_from_registry
    from ltvl.tracking.mlflow_lineage import default_tracking_uri
    from ltvl.util.errors import LtvlError

    say = lambda s: console.print(s, highlight=False)  # noqa: E731
    if config.startswith("models:/"):
        path = export_from_registry(tracking_uri or default_tracking_uri(), config, out, say)
    else:
        if run:
            chain, named = run_ref(tracking_uri or default_tracking_uri(), run)
            round_ = round_ if named is None else named
        if not chain:
            raise LtvlError("which chain of the sweep?", where="--chain",
                            fix=f"`ltvl sweep validate {config}` lists every chain's hash")
        path = export_from_sweep(config, list(set_ or ()), chain, out, round_, keep, say)
    console.print(f"ticket written to {path} (README.md is its card; `ltvl ticket verify {path}` checks it)",
                  highlight=False)


@ticket_app.command("verify")
def verify(directory: Annotated[Path, typer.Argument(metavar="DIR")]) -> None:
    """Re-check every claim of an exported ticket: file hashes, the card, the mask, zeros where it prunes
    in every weight file, the measured sparsity. Exit 1 on any breach."""
    from ltvl.tickets.export import verify_ticket

    found = verify_ticket(directory)
    for line in found:
        err.print(f"[bold red]BREACH[/] {line}", highlight=False)
    if found:
        raise typer.Exit(1)
    console.print(f"{directory}: every hash, zero and count holds", highlight=False)


@ticket_app.command("eval")
def eval_(
    directory: Annotated[Path, typer.Argument(metavar="DIR")],
    data: Annotated[Optional[str], typer.Option(help="a dataset (default: the one it was trained on)")] = None,
) -> None:
    """Score an exported ticket from its own files; on its own dataset the metric must equal the recorded one
    (exit 1 if not)."""
    from ltvl.tickets.from_sweep import eval_ticket

    now, recorded, same_data = eval_ticket(directory, data)
    console.print(f"metric {now['metric']:.4f} (recorded {recorded['metric']:.4f}"
                  f"{'' if same_data else ', on another dataset'})", highlight=False)
    if same_data and now != recorded:
        err.print("[bold red]the ticket does not reproduce its recorded metrics on its own dataset[/] "
                  f"(now {now}, recorded {recorded})", highlight=False)
        raise typer.Exit(1)
