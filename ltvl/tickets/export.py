"""Write a trained ticket as a directory anyone can load, and check one.

    DIR/
      model/ | uniter/ + bert/     the backbone in its ecosystem's layout (ltvl.tickets.layouts)
      head.safetensors, head.json  the task head (its modules, in plain torch terms) and its answers
      tokenizer/                   the tokenizer the ticket was trained with (save_pretrained)
      mask.safetensors             the mask, in ltvl's mask format (sha256-verified)
      weights.sparse.safetensors   the whole model as kept values + packed bitmask (ltvl.tickets.sparse)
      ticket.json                  what the ticket is: its lineage, metrics, sparsity per layer group,
                                   and the sha256 and size of every file above
      README.md                    the model card, rendered from ticket.json

Everything is written into a temporary sibling directory first and renamed into place, so a crash
leaves either no export or a complete one. :func:`verify_ticket` re-checks every claim.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ltvl.pruning.mask import Mask
from ltvl.pruning.maskfile import load_mask, save_mask
from ltvl.tickets.layouts import KEYS, file_key, write_backbone
from ltvl.tickets.sparse import load_sparse, save_sparse
from ltvl.util.errors import LtvlError

FORMAT = "ltvl-ticket/1"
CARD, MANIFEST = "README.md", "ticket.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@torch.no_grad()
def zero_pruned(model: nn.Module, mask: Mask) -> None:
    """Pruned weights as +0.0 (training leaves -0.0 where a negative weight was multiplied by 0)."""
    params = dict(model.named_parameters())
    for name, keep in mask.tensors.items():
        params[name].masked_fill_(~keep.to(params[name].device), 0.0)


def describe_head(head: nn.Module) -> list[dict[str, Any]]:
    """The head's modules in plain torch terms (so a reader rebuilds it without ltvl)."""
    out = []
    for name, mod in head.named_modules():
        if isinstance(mod, nn.Linear):
            out.append({"name": name, "module": "Linear", "in": mod.in_features, "out": mod.out_features})
        elif isinstance(mod, nn.LayerNorm):
            out.append({"name": name, "module": "LayerNorm", "shape": list(mod.normalized_shape), "eps": mod.eps})
        elif isinstance(mod, nn.GELU):
            out.append({"name": name, "module": "GELU", "approximate": mod.approximate})
    return out


def write_ticket(model: nn.Module | None, mask: Mask, kind: str, facts: dict[str, Any], out: str | os.PathLike,
                 tokenizer: Any = None, labels: list[str] | None = None) -> Path:
    """Export ``model`` (a trained ticket: VLModel) with ``mask`` to ``out`` (which must not exist). With
    ``model=None`` it is the card alone (mask, ticket.json, README.md): what the Model Registry keeps,
    whose weights ``ltvl ticket export models:/NAME/VERSION`` trains again from the chain store."""
    out = Path(out)
    if out.exists():
        raise LtvlError(f"{out} already exists", where="--out", fix="choose a new directory (an export never "
                                                                      "overwrites)")
    if model is not None:
        mask.check_compatible({n: tuple(p.shape) for n, p in model.named_parameters() if n in mask.tensors})
        zero_pruned(model, mask)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        state_sha = None
        if model is not None:
            write_backbone(kind, model.backbone, tmp, model.head, facts.get("task"))
            save_file({k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()},
                      str(tmp / "head.safetensors"))
            (tmp / "head.json").write_text(json.dumps({"modules": describe_head(model.head),
                                                       "labels": labels or []}, indent=2) + "\n")
            if tokenizer is not None:
                tokenizer.save_pretrained(str(tmp / "tokenizer"))
            state_sha = save_sparse(model.state_dict(), mask, tmp / "weights.sparse.safetensors")
        save_mask(mask, tmp / "mask.safetensors")
        from ltvl.report.where import group_sparsity

        groups = group_sparsity(mask)
        manifest = {
            "format": FORMAT, "kind": kind, **facts, "weights": model is not None,
            "mask_sha256": mask.sha256, "state_sha256": state_sha, "sparsity": mask.sparsity,
            "sparsity_by_group": {b: {k: round(float(v), 6) for k, v in row.items() if v == v}
                                  for b, row in groups.iterrows()},
            "files": {str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
                      for p in sorted(tmp.rglob("*")) if p.is_file()},
        }
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        (tmp / MANIFEST).write_text(text)
        (tmp / CARD).write_text(render_card(json.loads(text)))  # as verify reads it back
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def render_card(m: dict[str, Any]) -> str:
    """The model card: a pure function of ticket.json, so verify can tell an edited card."""
    lines = [f"# {m.get('name', 'ltvl ticket')}", "",
             f"A lottery ticket found by ltvl: the {m.get('preset', '?')} backbone "
             f"({m['kind']} layout) for task **{m.get('task', '?')}**, {m['sparsity']:.2%} of its prunable weights "
             "pruned (exactly 0 in every file here), trained under the mask.", "",
             "## Result", "",
             "| | metric |", "|---|---|"]
    for label, key in (("this ticket", "metric"), ("dense model (same recipe)", "dense_metric"),
                       ("random pruning at this sparsity", "random_metric"), ("majority answer", "majority_metric"),
                       ("100%-sparse control", "sparse100_metric")):
        if m.get(key) is not None:
            lines.append(f"| {label} | {m[key]:.4f} |")
    if m.get("verdict"):
        lines += ["", f"Verdict: {m['verdict']}"]
    if str(m.get("evidence", "")).startswith("none"):
        lines += ["", f"**No evidence of a ticket**: {m['evidence']} (it learned nothing the controls do not)."]
    if m.get("eval_n"):
        lines += ["", f"Scored on {int(m['eval_n']):,} examples of `{m.get('eval_split', 'test')}`."]
    lines += ["", "## Lineage", "", "| | |", "|---|---|"]
    for label, key in (("arm", "arm"), ("chain", "chain_sha256"), ("round", "round"), ("rewind to step", "rewind_step"),
                       ("retrain", "retrain"), ("seed", "seed"), ("dense run", "dense_sha256"),
                       ("dataset content sha256", "data_sha256"), ("mask sha256", "mask_sha256"),
                       ("parent mask", "parent_sha256"), ("weights sha256", "state_sha256"),
                       ("ltvl", "ltvl_version"), ("commit", "commit")):
        if m.get(key) is not None:
            lines.append(f"| {label} | `{m[key]}` |")
    if m.get("command"):
        lines += ["", "Reproduce it:", "", "```bash", m["command"], "```"]
    groups = m.get("sparsity_by_group") or {}
    kinds = sorted({k for row in groups.values() for k in row})
    if groups:
        lines += ["", "## Sparsity by layer and module", "", "| block | " + " | ".join(kinds) + " |",
                  "|---|" + "---|" * len(kinds)]
        lines += [f"| {b} | " + " | ".join(_pct(row.get(k)) for k in kinds) + " |" for b, row in groups.items()]
    lines += ["", "## Files", "", "| file | bytes | sha256 |", "|---|---|---|"]
    lines += [f"| `{f}` | {v['bytes']:,} | `{v['sha256'][:16]}…` |" for f, v in sorted(m["files"].items())]
    if m.get("weights") is False:
        lines += ["", "This is the ticket's card and mask, as the Model Registry keeps them; `ltvl ticket export "
                  "models:/NAME/VERSION --out DIR` trains its weights again from the chain store (held to the "
                  "recorded metrics) and writes the whole ticket."]
    lines += ["", "`ltvl ticket verify DIR` re-checks every hash, zero and count above.", ""]
    return "\n".join(lines)


def verify_ticket(directory: str | os.PathLike) -> list[str]:
    """Every breach found in an export (empty: all claims hold): file hashes and sizes, the card against
    ticket.json, the mask, zeros where it prunes in every layout file, the measured sparsity, and the
    sparse file's weights against the layout files'."""
    d = Path(directory)
    try:
        m = json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        return [f"{MANIFEST}: unreadable ({type(e).__name__}: {e})"]
    if m.get("format") != FORMAT:
        return [f"{MANIFEST}: format {m.get('format')!r}, expected {FORMAT!r}"]
    out = []
    for rel, info in m["files"].items():
        p = d / rel
        if not p.is_file():
            out.append(f"{rel}: missing")
        elif p.stat().st_size != info["bytes"] or file_sha256(p) != info["sha256"]:
            out.append(f"{rel}: sha256 differs from {MANIFEST} (the file was changed)")
    listed = set(m["files"]) | {MANIFEST, CARD}
    out += [f"{p.relative_to(d)}: not listed in {MANIFEST}" for p in sorted(d.rglob("*"))
            if p.is_file() and str(p.relative_to(d)) not in listed]
    if not (d / CARD).is_file() or (d / CARD).read_text() != render_card(m):
        out.append(f"{CARD}: differs from the card {MANIFEST} renders (it was edited)")
    try:
        mask = load_mask(d / "mask.safetensors")
    except LtvlError as e:
        return [*out, f"mask.safetensors: {e.what}"]
    if mask.sha256 != m["mask_sha256"]:
        out.append(f"mask.safetensors is {mask.sha256[:12]}…, {MANIFEST} says {m['mask_sha256'][:12]}…")
    if abs(mask.sparsity - m["sparsity"]) > 1e-12:
        out.append(f"measured sparsity {mask.sparsity:.6%} differs from the stated {m['sparsity']:.6%}")
    if m.get("weights") is False:  # a card alone (the Model Registry's): no weight files to check
        return out
    try:
        state, _ = load_sparse(d / "weights.sparse.safetensors")
    except LtvlError as e:
        return [*out, f"weights.sparse.safetensors: {e.what}"]
    for rel, _ours, _theirs in KEYS.get(m["kind"], ()):
        if not (d / rel).is_file():
            continue
        with safe_open(str(d / rel), framework="pt") as f:
            keys = set(f.keys())
            for name, keep in mask.tensors.items():
                key = file_key(m["kind"], rel, name)
                if key is None or key not in keys:
                    continue
                t = f.get_tensor(key)
                nonzero = int(t[~keep].ne(0).sum())
                if nonzero:
                    out.append(f"{rel}: {nonzero} weights of {key} are nonzero where the mask prunes them")
                if not torch.equal(t, state[name]):
                    out.append(f"{rel}: {key} differs from weights.sparse.safetensors")
    return out
