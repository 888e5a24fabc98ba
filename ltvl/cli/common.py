"""Shared by every command group: the consoles, and how a group is made."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def group(help: str) -> typer.Typer:
    return typer.Typer(no_args_is_help=True, help=help)

