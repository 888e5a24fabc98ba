"""``ltvl prune`` and ``ltvl mask``: one-shot masks of a checkpoint, and mask files inspected, compared and exported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ltvl.cli.common import console, group
from ltvl.util.errors import LtvlError

mask_app = group("Inspect, compare and export mask files.")


def register(app: typer.Typer) -> None:
    app.command()(prune)
    app.add_typer(mask_app, name="mask")



def prune(
    checkpoint: Annotated[Path, typer.Argument(help="model weights: .safetensors, .bin/.pt (read with "
                                                    "weights_only), or a transformers directory")],
    sparsity: Annotated[float, typer.Option(help="fraction of prunable weights to prune, in [0, 1)")] = 0.5,
    out: Annotated[Optional[Path], typer.Option(help="where to write the mask")] = None,
    preset: Annotated[Optional[str], typer.Option(help="take the prunable set of this backbone preset (and check "
                                                       "the checkpoint is its model)")] = None,
    include: Annotated[Optional[list[str]], typer.Option(help="regex of parameters to prune (repeatable)")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(help="regex of parameters to keep dense (repeatable)")] = None,
    all_params: Annotated[bool, typer.Option("--all-params", help="also allow non-Linear (non 2-D) tensors")] = False,
    layerwise: Annotated[bool, typer.Option(help="prune each tensor to the sparsity instead of globally")] = False,
    random: Annotated[bool, typer.Option("--random", help="random pruning (RP baseline)")] = False,
    high_magnitude: Annotated[bool, typer.Option("--high-magnitude", help="prune the largest weights instead")] = False,
    seed: Annotated[int, typer.Option(help="seed for --random")] = 0,
    list_only: Annotated[bool, typer.Option("--list", help="only print the selected prunable tensors")] = False,
) -> None:
    """One-shot pruning of a checkpoint (global magnitude by default)."""
    from ltvl.pruning import Method, PrunableSpec, Scope, describe, prune_to_sparsity, save_mask, select_from_state
    from ltvl.vl.models.checkpoint import inspect as inspect_checkpoint
    from ltvl.vl.models.checkpoint import read_state

    if random and high_magnitude:
        raise LtvlError("--random and --high-magnitude exclude each other", where="options")
    if not list_only and out is None:
        raise LtvlError("missing --out", where="--out", fix="give the mask file to write, e.g. --out mask.safetensors")
    if out is not None and out.is_dir():
        raise LtvlError(f"{out} is a directory", where="--out", fix=f"name the file, e.g. --out {out}/mask.safetensors")
    if not (0.0 <= sparsity < 1.0):
        raise LtvlError(f"sparsity {sparsity} is outside [0, 1)", where="--sparsity", fix="e.g. --sparsity 0.7")
    spec = PrunableSpec.of(include, exclude, linear_only=not all_params)
    files, insp = inspect_checkpoint(checkpoint, str(checkpoint))
    if preset is not None:
        from ltvl.vl.models.presets import KIND_NAMES, get_preset

        p = get_preset(preset)
        if include or exclude:
            raise LtvlError("--preset gives the prunable set; --include/--exclude would change it", where="--preset",
                            fix="use one or the other")
        if p.accepts and insp.kind not in p.accepts:
            raise LtvlError(f"{files.path} is a {KIND_NAMES.get(insp.kind, insp.kind)} checkpoint, not one preset "
                            f"{preset!r} loads", where="--preset", fix="name the preset of this checkpoint's model")
        spec = PrunableSpec(p.prunable.include, p.prunable.exclude, p.prunable.linear_only and not all_params)
    state = read_state(files)
    weights = select_from_state(state, spec)
    if list_only:
        console.print(describe(weights))
        return
    method = Method.RANDOM if random else Method.HIGH_MAGNITUDE if high_magnitude else Method.MAGNITUDE
    mask = prune_to_sparsity(
        weights,
        None,
        sparsity,
        method=method,
        scope=Scope.LAYERWISE if layerwise else Scope.GLOBAL,
        seed=seed if random else None,
        metadata={"source": str(checkpoint)},
    )
    save_mask(mask, out)
    console.print(
        f"wrote {out}: {mask.n_pruned:,} of {mask.numel:,} weights pruned "
        f"(sparsity {mask.sparsity:.4f}), sha256 {mask.sha256}"
    )


@mask_app.command("info")
def mask_info(path: Path, as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
    """Global and per-tensor sparsity, hash, model fingerprint and parent of a mask."""
    from ltvl.pruning import load_mask

    mask = load_mask(path)
    s = mask.summary()
    if as_json:
        print(json.dumps(s, indent=2))
        return
    console.print(
        f"[bold]{path}[/bold]\n sha256      {s['sha256']}\n fingerprint {s['fingerprint']}\n"
        f" parent      {s['parent'] or '-'}{'' if s['header_verified'] else ' (header not verified: a legacy file)'}"
        f"\n sparsity    {s['sparsity']:.4f} "
        f"({s['pruned']:,} of {s['numel']:,} pruned)"
    )
    t = Table("tensor", "shape", "weights", "sparsity")
    for name, d in s["per_tensor"].items():
        t.add_row(name, str(d["shape"]), f"{d['numel']:,}", f"{d['sparsity']:.4f}")
    console.print(t)
    if s["metadata"]:
        console.print(" metadata   ", json.dumps(s["metadata"], sort_keys=True))


@mask_app.command("iou")
def mask_iou(a: Path, b: Path) -> None:
    """Intersection over union of the kept weights of two masks of the same model."""
    from ltvl.pruning import load_mask

    ma, mb = load_mask(a), load_mask(b)
    print(f"{ma.iou(mb):.6f}")


@mask_app.command("export")
def mask_export(path: Path, out: Annotated[Path, typer.Option(help="the .safetensors file to write")]) -> None:
    """Unpacked uint8 0/1 tensors per parameter, e.g. for torch.nn.utils.prune.custom_from_mask."""
    import torch
    from safetensors.torch import save

    from ltvl.pruning import load_mask
    from ltvl.util.atomic import atomic_write_bytes

    mask = load_mask(path)
    data = save(
        {n: t.to(torch.uint8).contiguous() for n, t in mask.tensors.items()},
        metadata={"sha256": mask.sha256, "fingerprint": mask.fingerprint},
    )
    atomic_write_bytes(out, data)
    console.print(f"wrote {out} ({len(mask.tensors)} tensors)")

