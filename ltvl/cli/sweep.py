"""``ltvl sweep run|validate CONFIG``: a sweep config, run on Ray (a local one is started when no
cluster is joined) or only checked. The same code runs ``python sweeps/<kind>.py``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ltvl.cli.common import group

sweep_app = group("Sweeps of chains on Ray, with lineage in MLflow.")

Config = Annotated[str, typer.Argument(metavar="CONFIG", help="a sweep config file, or the name of a shipped one "
                                                              "(see `ltvl list`), e.g. rewind_grid")]
Sets = Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE",
                                                   help="override a config key, e.g. --set params.steps=50")]
Scale = Annotated[Optional[str], typer.Option(help="a named scale of the config: smoke, real-cpu or paper")]


def register(app: typer.Typer) -> None:
    app.add_typer(sweep_app, name="sweep")


def _argv(config: str, sets: list[str] | None, scale: str | None) -> tuple[str, list[str]]:
    from ltvl.plan.config import config_kind, find_config

    path = find_config(config)
    argv = ["--config", str(path)] + [a for s in sets or () for a in ("--set", s)]
    return config_kind(path), argv + (["--scale", scale] if scale else [])


@sweep_app.command("run")
def run(config: Config, set_: Sets = None, scale: Scale = None,
        resume: Annotated[bool, typer.Option(help="finish an interrupted sweep of the same name")] = False,
        dry_run: Annotated[bool, typer.Option(help="check the config and print the chains; run nothing")] = False,
        verbose: Annotated[bool, typer.Option(help="keep Ray's, Tune's and MLflow's own output")] = False) -> None:
    """Run a sweep: its dense runs, chains and tickets as Ray Tune trials, every round into MLflow."""
    from ltvl.sweep.main import main

    kind, argv = _argv(config, set_, scale)
    flags = [f for f, on in (("--resume", resume), ("--dry-run", dry_run), ("--verbose", verbose)) if on]
    raise typer.Exit(main(kind, argv + flags))


@sweep_app.command("validate")
def validate(config: Config, set_: Sets = None, scale: Scale = None) -> None:
    """Check a sweep config (every key, every chain) and list its chains, starting nothing."""
    from ltvl.sweep.main import main

    kind, argv = _argv(config, set_, scale)
    raise typer.Exit(main(kind, argv + ["--dry-run"]))
