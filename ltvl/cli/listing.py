"""``ltvl list``: what ltvl knows by name — backbone presets, tasks, pruning methods, ticket
baselines and the shipped sweep configs — read from the registries themselves."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.table import Table

from ltvl.cli.common import console


def register(app: typer.Typer) -> None:
    app.command("list")(list_registered)


def shipped_configs() -> dict[str, str]:
    """Each shipped sweep config and the first sentence of its opening comment (after the line
    that names the command running it)."""
    from ltvl.plan.config import shipped_config_dir

    directory = shipped_config_dir()
    if directory is None:
        return {}
    return {p.stem: first_sentence(p.read_text()) for p in sorted(directory.glob("*.yaml"))}


def first_sentence(text: str) -> str:
    words = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line.lstrip("#").strip()
        if not body.startswith(("Run:", "python ", "ltvl ")):
            words.append(body)
    joined = " ".join(words)
    return re.split(r"\.\s+(?=[A-Z])", joined)[0].rstrip(".") + "."


def list_registered() -> None:
    """Backbone presets, tasks, pruning methods, ticket baselines and shipped sweep configs."""
    from ltvl.params.schema import INFO
    from ltvl.vl.models.presets import PRESETS
    from ltvl.vl.tasks import TASK_DESCRIPTIONS

    t = Table("preset", "backbone", "description", "weights", title="backbone presets (params.preset)")
    for p in PRESETS.values():
        t.add_row(p.name, p.kind, p.description, p.weights)
    console.print(t)
    t = Table("task", "description", title="tasks (params.task)")
    for name, desc in TASK_DESCRIPTIONS.items():
        t.add_row(name, desc)
    console.print(t)
    for key, title in (("method", "pruning methods (params.method)"), ("ticket", "ticket baselines (baselines:)")):
        console.print(f"[bold]{title}[/]: {', '.join(INFO[key].allowed() or ())}")
    configs = shipped_configs()
    if configs:
        t = Table("config", "what it runs", title=f"sweep configs ({Path('sweeps/configs')}; ltvl sweep run NAME)")
        for name, first in configs.items():
            t.add_row(name, first)
        console.print(t)
