"""The ``ltvl`` command: one module per command group, none holding domain logic. Every command
checks its input before doing work and turns :class:`LtvlError` (or an unusable path) into one
paragraph and exit code 2."""

from __future__ import annotations

import sys

import typer

from ltvl.cli import chain, cluster, data, listing, masks, results, sweep, tickets
from ltvl.cli.common import err
from ltvl.util.errors import LtvlError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Lottery tickets for vision-and-language transformers.")
for group in (sweep, chain, masks, data, results, tickets, cluster, listing):
    group.register(app)


def main() -> None:
    from ltvl.util.errors import os_error

    try:
        app()
    except LtvlError as e:
        err.print(f"[bold red]error:[/bold red] {e}", highlight=False)
        sys.exit(2)
    except OSError as e:  # a path that cannot be written or read, a full disk: said in one line, not a traceback
        err.print(f"[bold red]error:[/bold red] {os_error(e)}", highlight=False)
        sys.exit(2)
