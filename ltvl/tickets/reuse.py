"""An exported ticket used again: its mask as a ticket job's source (transfer it to another task, train
it as a baseline), its backbone as a chain's checkpoint. Every use verifies the export first: a
directory whose files no longer match its ticket.json is refused, naming each breach."""

from __future__ import annotations

import json
from pathlib import Path

from ltvl.util.errors import LtvlError

# where each layout keeps the backbone a preset's checkpoint loader reads
CHECKPOINT_OF = {"lxmert": "model", "vilt": "model", "uniter": "uniter/uniter.safetensors"}


def is_export(path: str | Path) -> bool:
    p = Path(str(path)).expanduser()
    return p.is_dir() and (p / "ticket.json").is_file()


def verified(path: str | Path, where: str) -> Path:
    from ltvl.tickets.export import verify_ticket

    d = Path(str(path)).expanduser()
    breaches = verify_ticket(d)
    if breaches:
        raise LtvlError(f"the exported ticket {d} fails verification: {'; '.join(breaches[:3])}"
                        + (f" (+{len(breaches) - 3} more)" if len(breaches) > 3 else ""), where=where,
                        fix="export it again (`ltvl ticket export`), or run `ltvl ticket verify` to see every breach")
    return d


def mask_of(path: str | Path, where: str = "source") -> str:
    """An export's mask file (the export verified), or ``path`` as it is when it is not an export."""
    if not is_export(path):
        return str(path)
    return str(verified(path, where) / "mask.safetensors")


def tokenizer_of(path: str | Path) -> str | None:
    """The tokenizer an export was trained with (None: ``path`` is not an export, or it saved none)."""
    p = Path(str(path)).expanduser()
    return str(p / "tokenizer") if is_export(p) and (p / "tokenizer").is_dir() else None


def checkpoint_of(path: str | Path, where: str = "checkpoint") -> str:
    """The backbone weights of an export in the layout its preset's loader reads (the export verified),
    or ``path`` as it is when it is not an export."""
    if not is_export(path):
        return str(path)
    d = verified(path, where)
    kind = json.loads((d / "ticket.json").read_text())["kind"]
    return str(d / CHECKPOINT_OF[kind])
