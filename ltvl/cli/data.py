"""``ltvl data``: datasets prepared, synthesised, imported from their published formats, inspected and migrated."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ltvl.cli.common import console, group
from ltvl.util.errors import LtvlError

data_app = group("Prepare datasets in ltvl's Arrow format.")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")



@data_app.command("prepare")
def data_prepare(
    name: Annotated[str, typer.Argument(help="dataset to import: easy-vqa")],
    out: Annotated[Path, typer.Option(help="output directory")],
    grid: Annotated[int, typer.Option(help="patch grid per side for region features (easy-vqa)")] = 4,
    limit: Annotated[Optional[int], typer.Option(help="only the first N questions per split")] = None,
    features: Annotated[str, typer.Option(help="patch pixels minus the image's background colour "
                                          "(minus-background), or raw pixels (pixels) (easy-vqa)")]
    = "minus-background",
) -> None:
    """Import a real dataset (easy-VQA from its PyPI package) into DIR."""
    if name != "easy-vqa":
        raise LtvlError(
            f"unknown dataset {name!r}",
            where="NAME",
            fix="'easy-vqa' is prepared from its package; the paper's datasets: `ltvl data import` "
                "(docs/guide/data.md)",
        )
    from ltvl.vl.data.easy_vqa import prepare_easy_vqa

    info = prepare_easy_vqa(out, grid, limit, features)
    console.print(
        f"wrote {out}: task {info.task}, {info.num_regions} regions x {info.feat_dim}-d, "
        f"{len(info.answers)} answers, pixels {info.image_size}x{info.image_size}"
    )


@data_app.command("synth")
def data_synth(
    task: Annotated[str, typer.Argument(help="task name (see `ltvl list`)")],
    out: Annotated[Path, typer.Option(help="output directory")],
    examples: Annotated[Optional[int], typer.Option(help="train examples (default: --images, else 1024)")] = None,
    images: Annotated[Optional[int], typer.Option(help="train images (VQA: questions share them)")] = None,
    regions: Annotated[int, typer.Option(help="regions per image (>= 9)")] = 9,
    feat_dim: Annotated[int, typer.Option(help="region feature width (UNITER: 2048)")] = 16,
    min_regions: Annotated[Optional[int], typer.Option(help="vary region counts in [min, --regions]")] = None,
    test_examples: Annotated[Optional[int], typer.Option(help="test examples (default: train/10, at most 256)")] = None,
    test_images: Annotated[Optional[int], typer.Option(help="test images (VQA)")] = None,
    pixels: Annotated[bool, typer.Option(help="store PNG images too (ViLT)")] = True,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write a synthetic TASK dataset of any size, streaming (bounded memory); its labels depend on
    both image and text, so models can learn it. Paper shape: `--images 60000 --regions 36 --feat-dim 2048`."""
    from ltvl.vl.data.synthetic import Shape, make_synthetic
    from ltvl.vl.tasks import get_task

    get_task(task)
    n_train = examples or images or 1024
    n_test = test_examples or max(1, min(256, n_train // 10))
    t_images = test_images or (max(1, min(n_test, (images or n_train) // 10)) if images else None)
    started = time.perf_counter()
    info = make_synthetic(task, out, n_train, n_test, seed, shape=Shape(regions, feat_dim, min_regions, pixels),
                          train_images=images, test_images=t_images)
    console.print(f"wrote {out}: synthetic {info.task}, {n_train:,} train / {n_test:,} test examples, "
                  f"{info.num_regions} regions x {info.feat_dim}-d, {info.total_bytes / 1e9:.2f} GB "
                  f"in {time.perf_counter() - started:.1f} s")


@data_app.command("info")
def data_info(
    directory: Annotated[str, typer.Argument(metavar="DIR", help="a dataset directory")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    verify: Annotated[bool, typer.Option(help="check every file's sha256 against the manifest")] = False,
) -> None:
    """Format version, splits, row counts and bytes on disk of a dataset."""
    from ltvl.vl.data.inspect import describe

    d = describe(Path(directory), verify)
    if as_json:
        print(json.dumps(d, indent=2))
        return
    console.print(f"{directory}: format {d['format']}, task {d['task']}, {d['num_regions']} regions max "
                  f"x {d['feat_dim']}-d, {d['bytes'] / 1e9:.3f} GB, content {d['content_sha256'][:12]}")
    t = Table("split", "images", "examples", "bytes")
    for name, sp in d["splits"].items():
        t.add_row(name, f"{sp['images']:,}", f"{sp['examples']:,}", f"{sp['bytes']:,}")
    console.print(t)
    if verify:
        console.print("every file matches its sha256")


@data_app.command("import")
def data_import(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help="uniter, lxmert or vilt")],
    task: Annotated[str, typer.Option(help="the task the files are for (vqa, gqa, snli_ve, nlvr2, …)")],
    out: Annotated[Path, typer.Option(help="output directory")],
    split: Annotated[list[str], typer.Option(help="NAME=PATH[,PATH…]: UNITER txt_db dirs, LXMERT question JSON, "
                                                  "ViLT .arrow files; repeat per split")],
    features: Annotated[Optional[list[Path]], typer.Option(help="UNITER img_db dirs or LXMERT TSV files; repeat")]
    = None,
    answers: Annotated[Optional[Path], typer.Option(help="answer vocabulary JSON {answer: label} (VQA, GQA)")] = None,
    vocab: Annotated[Optional[Path], typer.Option(help="UNITER: the vocab.txt its word-piece ids index")] = None,
    image_size: Annotated[int, typer.Option(help="ViLT: side of the resized image")] = 384,
) -> None:
    """Import a dataset from the format it is published in (see docs/guide/data.md)."""
    from ltvl.vl.data.importers.common import parse_splits
    from ltvl.vl.data.importers.run import check_format, run_import

    check_format(fmt, task)
    started = time.perf_counter()
    info = run_import(fmt, task, out, parse_splits(split), list(features or []), answers, vocab, image_size)
    rows = ", ".join(f"{k.split('/')[0]} {v['rows']:,} {k.split('/')[1].split('.')[0]}"
                     for k, v in info.files.items())
    console.print(f"wrote {out}: {task} from {fmt}, {rows}; {info.total_bytes / 1e9:.3f} GB "
                  f"in {time.perf_counter() - started:.1f} s")
    for line in info.import_log:
        console.print(f"  {line}")
    if info.unlabelled:
        console.print(f"  unlabelled: {', '.join(info.unlabelled)} (published without labels: for prediction, not "
                      "for training or scoring)")


@data_app.command("migrate")
def data_migrate(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="a format-0 (Parquet) dataset")],
    out: Annotated[Path, typer.Option(help="output directory")],
) -> None:
    """Convert a dataset written by an older ltvl (Parquet, format 0) to the current layout."""
    from ltvl.vl.data.migrate import migrate

    info = migrate(directory, out)
    console.print(f"wrote {out}: format {info.format}, {info.total_bytes / 1e9:.3f} GB")

