"""``ltvl chain run``: one resumable chain in this process (no Ray, no MLflow). Its options are
generated from the parameter schema, so they are the names a sweep's ``params:`` uses."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ltvl.cli.common import console, err, group
from ltvl.util.errors import LtvlError

chain_app = group("One lottery-ticket chain, here, resumable.")


def register(app: typer.Typer) -> None:
    chain_app.command("run")(run)
    app.add_typer(chain_app, name="chain")
    app.command("imp", hidden=True, help="The older name of `ltvl chain run`.")(imp)


def run(root: Optional[Path] = None, **options: Any) -> None:
    """Run one local IMP chain (resumable: re-run the same command to continue).

    Every option is a chain parameter (the same names as in a sweep's `params:`). Default: the real
    pre-trained MiniLM (first 2 layers) on real easy-VQA; --task toy runs the built-in text task.
    With --ticket and --source it re-trains given masks as a baseline ticket instead.
    """
    from ltvl.local_jobs import prepare_chain, run_chain_here, run_ticket_here
    from ltvl.params.schema import DEFAULTS
    from ltvl.util.home import home

    options = {k: cli_value(k, v) for k, v in options.items()}
    raw = {k: v for k, v in options.items() if v != DEFAULTS[k]}  # what the user set: rewind conflicts need it
    root = root or home() / "chains"
    if raw.get("ticket") or raw.get("source") or raw.get("prime_checkpoint"):
        spec, rounds = run_ticket_here(raw, root, lambda line: console.print(line), show_ticket_round)
        console.print(f"ticket store: {root / 'tickets' / spec.short_hash} ({len(rounds)} round(s))")
        return
    chain = prepare_chain(raw)
    if chain.load_line:
        console.print(f"θ0 {chain.load_line}", highlight=False)
    console.print(f"chain {chain.spec.short_hash} ({options['task']}, {options['method']} pruning) → {root}")
    table = Table("round", "sparsity", "metric", "train loss", "mask", "s")
    result = run_chain_here(chain, root, lambda r: show_round(r, table))
    console.print(table)
    console.print(f"chain store: {result.directory}")


def imp(**options: Any) -> None:
    err.print("note: `ltvl imp` is now `ltvl chain run` (same options)", highlight=False)
    run(**options)


def show_round(r: Any, table: Table) -> None:
    at = f"  AT-finetuned {r.finetune_metrics['metric']:.4f}" if r.finetune_metrics else ""
    if r.level and r.round:  # an adaptive try
        at += (f"  level {r.level} from {r.parent_level}: {'kept' if r.kept else 'below'} p"
               + ("" if r.next_level else ", search settled"))
    console.print(f" round {r.round}: sparsity {r.sparsity:.3f}  metric {r.metrics['metric']:.4f}{at}"
                  f"{'  (resumed)' if r.replayed else f'  ({r.wall_s:.0f} s)'}")
    if r.fully_pruned:
        console.print(f"   [yellow]warning: layer collapse — fully pruned: {', '.join(r.fully_pruned)}[/yellow]")
    table.add_row(str(r.round), f"{r.sparsity:.3f}", f"{r.metrics['metric']:.4f}", f"{r.train_loss:.4f}",
                  r.mask_sha256[:12], f"{r.wall_s:.1f}")


def show_ticket_round(r: Any) -> None:
    console.print(f" mask {r.round}: sparsity {r.sparsity:.3f}  metric {r.metrics['metric']:.4f}"
                  f"{'  (resumed)' if r.replayed else f'  ({r.wall_s:.0f} s)'}")


def cli_value(name: str, value: Any) -> Any:
    """A parameter that takes a number or a word (``--layers 2|all|preset``) arrives as a string."""
    from ltvl.params.schema import INFO

    info = INFO.get(name)
    if info is None or not info.keywords or not isinstance(value, str) or value in info.keywords:
        return value
    if value.lower() in ("null", "none", "all"):
        return None
    try:
        return info.type(value)
    except ValueError:
        raise LtvlError(f"--{name.replace('_', '-')} {value!r} is not a number, 'all' or "
                        f"{' or '.join(repr(w) for w in info.keywords)}", where=f"--{name.replace('_', '-')}") from None


def chain_signature() -> inspect.Signature:
    """One option per chain parameter of the schema; ``--source`` takes mask files."""
    from ltvl.params.schema import DEFAULTS, INFO

    aliases = {"target_sparsity": ["--target"]}
    root_help = "chain state directory (default $LTVL_HOME/chains)"
    params = [inspect.Parameter("root", inspect.Parameter.KEYWORD_ONLY, default=None,
                                annotation=Annotated[Optional[Path], typer.Option(help=root_help)])]
    for name, info in INFO.items():
        if name == "source":  # a ticket's masks: mask files on the command line
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
                Optional[list[Path]], typer.Option("--source", help="with --ticket: a mask file to re-train "
                                                                     "(repeatable)")]))
            continue
        typ = Optional[str] if info.keywords else Optional[info.type] if info.nullable else info.type
        allowed = info.allowed()
        helptext = info.help + (f" [{'|'.join(allowed)}]" if allowed and name != "task" else "")
        flag = f"--{name.replace('_', '-')}"
        flags = [f"{flag}/--no-{flag[2:]}"] if info.type is bool else [flag, *aliases.get(name, [])]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=DEFAULTS[name],
                                        annotation=Annotated[typ, typer.Option(*flags, help=helptext)]))
    return inspect.Signature(params)


run.__signature__ = chain_signature()  # type: ignore[attr-defined]
imp.__signature__ = run.__signature__  # type: ignore[attr-defined]
