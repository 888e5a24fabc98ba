"""Seed-informed adaptive chains: the other seeds start their search at the first seed's answer.

Seeds of one recipe rarely disagree by more than a level or two on the sparsest ticket that keeps
p of dense, so once the first seed's adaptive chain has settled its answer, its siblings (the
same params but the seed) need not search from scratch: each runs with ``start_level`` set to
that answer, which caps its jumps there, tries the level above, and goes on only if that keeps
p too (:func:`ltvl.core.level_search.next_level`). ``start_level`` is a chain parameter, so an
informed chain is a chain like any other: its own hash, its params in MLflow, resumable.

With ``share_masks`` each sibling also sets ``masks_of_seed`` to the first seed: it prunes nothing
itself and walks the first seed's masks one level at a time from that answer
(:mod:`ltvl.core.lead_masks`), a few tries instead of a path of its own.

The sweep runs the first seeds' chains in its chains stage and the informed ones in a stage
after it (``<name>-chains-informed``). A first seed whose chain did not settle (it failed, or
the sweep was interrupted) informs nothing: its siblings search from scratch, and say so.
"""

from __future__ import annotations

import json
from pathlib import Path


def _sibling_key(params: dict) -> str:
    return json.dumps({k: v for k, v in params.items() if k != "seed"}, sort_keys=True, default=str)


def _informable(params: dict) -> bool:
    return params.get("schedule") == "adaptive" and params.get("start_level") is None


def split_by_seed(entries: list[dict]) -> tuple[list[dict], list[tuple[dict, list[dict]]]]:
    """(the entries to run first, [(a first seed's entry, its siblings held back)]). Only adaptive
    chains without a start level of their own are held; the lowest seed of each family leads."""
    families: dict[str, list[dict]] = {}
    for e in entries:
        if e.get("kind") == "chain" and _informable(e["params"]):
            families.setdefault(_sibling_key(e["params"]), []).append(e)
    held_ids, pairs = set(), []
    for fam in families.values():
        if len(fam) < 2:
            continue
        fam = sorted(fam, key=lambda e: int(e["params"].get("seed", 0)))
        pairs.append((fam[0], fam[1:]))
        held_ids.update(id(e) for e in fam[1:])
    return [e for e in entries if id(e) not in held_ids], pairs


def settled_answer(entry: dict, root: str | Path) -> int | None:
    """The first seed's answer, read from its chain store: the highest level a try kept (None if its
    search has not settled, or it kept no level: then there is nothing to start from)."""
    from ltvl.core.imp import ChainStore
    from ltvl.params.resolve import resolve_chain

    records = ChainStore(root, resolve_chain(entry["params"]).chain, writer=False).finished_rounds()
    if len(records) < 2 or records[-1].get("next_mask_sha256") is not None:
        return None
    kept = [r["level"] for r in records[1:] if r.get("kept")]
    return max(kept) if kept else None


def informed_entries(pairs: list[tuple[dict, list[dict]]], root: str | Path,
                     notes: list[str] | None = None, share_masks: bool = False) -> list[dict]:
    """The held-back siblings, each with ``start_level`` = its first seed's settled answer (and
    ``masks_of_seed`` = the first seed with ``share_masks``)."""
    from ltvl.ray.space import job_entry

    out = []
    for first, held in pairs:
        answer = settled_answer(first, root)
        seed = first["params"].get("seed", 0)
        for e in held:
            lead = {"masks_of_seed": seed} if share_masks else {}
            out.append(job_entry({**e["params"], "start_level": answer, **lead}, root) if answer else e)
        if notes is not None:
            seeds = ", ".join(str(e["params"].get("seed", 0)) for e in held)
            how = f"walk seed {seed}'s masks from level {answer}, its answer" if share_masks else \
                f"start their search at level {answer}, seed {seed}'s answer"
            notes.append(f"seed-informed: seed(s) {seeds} {how}"
                         if answer else f"seed-informed: seed {seed}'s chain settled no answer, so seed(s) {seeds} "
                         "search from scratch")
    return out
