"""The ``ltvl`` command. Every subcommand validates its input before doing work and
turns :class:`LtvlError` into a one-paragraph message and exit code 2."""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ltvl.util.errors import LtvlError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Lottery tickets for vision-and-language transformers.",
)
mask_app = typer.Typer(no_args_is_help=True, help="Inspect, compare and export mask files.")
app.add_typer(mask_app, name="mask")
data_app = typer.Typer(no_args_is_help=True, help="Prepare datasets in ltvl's Arrow/Parquet format.")
app.add_typer(data_app, name="data")
cluster_app = typer.Typer(
    no_args_is_help=True, help="A real two-node Ray cluster + MLflow server on this machine (127.0.0.1 only)."
)
app.add_typer(cluster_app, name="cluster")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@app.command()
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


def _imp(root: Optional[Path] = None, **options) -> None:
    """Run one local IMP chain (resumable: re-run the same command to continue).

    Every option is a chain parameter (the same names as in a sweep's `params:`, generated from
    ltvl.params.schema). Default: the real pre-trained MiniLM (first 2 layers) on real easy-VQA.
    --task toy runs the built-in text task instead (no VL data or backbone).
    """
    from ltvl.core.imp import run_chain_with_trainer
    from ltvl.core.train import Trainer
    from ltvl.params.resolve import data_for, resolve_chain
    from ltvl.params.schema import DEFAULTS
    from ltvl.util.home import home
    from ltvl.vl.datasets import resolve_dataset

    options = {k: _cli_value(k, v) for k, v in options.items()}
    raw = {k: v for k, v in options.items() if v != DEFAULTS[k]}  # what the user set: rewind conflicts need it
    if raw.get("ticket") or raw.get("source") or raw.get("prime_checkpoint"):
        return _imp_ticket(root, raw)
    if raw.get("task") == "toy":  # same chain parameters, the toy task and model instead of VL data
        from ltvl.core.toy import ToyTask, make_toy_model
        from ltvl.pruning import PrunableSpec

        job = resolve_chain({**raw, "task": "vqa"}, where="option")
        spec = dataclasses.replace(
            job.chain, prunable=PrunableSpec(), context=(("task", "toy"), ("backbone", "toy-bert"))
        )
        seed = job.params.seed
        factory, train_task, data_sha = (lambda: make_toy_model(seed)), ToyTask(), ""
    else:
        from ltvl.vl.assemble import build_vl

        job = resolve_chain(raw, where="option")
        job = job.with_data(str(resolve_dataset(data_for(job.params))))
        setup = build_vl(job.vl)
        spec, factory, train_task, data_sha = job.chain, setup.model_factory, setup.data, setup.info.content_sha256
        load = factory().backbone.load_report
        if load is not None:
            console.print(f"θ0 {load.line()}", highlight=False)
    root = root or home() / "chains"
    console.print(f"chain {spec.short_hash} ({options['task']}, {options['method']} pruning) → {root}")
    table = Table("round", "sparsity", "metric", "train loss", "mask", "s")

    def show(r):
        at = f"  AT-finetuned {r.finetune_metrics['metric']:.4f}" if r.finetune_metrics else ""
        if r.level and r.round:  # an adaptive try
            at += (f"  level {r.level} from {r.parent_level}: {'kept' if r.kept else 'below'} p"
                   + ("" if r.next_level else ", search settled"))
        console.print(
            f" round {r.round}: sparsity {r.sparsity:.3f}  metric {r.metrics['metric']:.4f}{at}"
            f"{'  (resumed)' if r.replayed else f'  ({r.wall_s:.0f} s)'}"
        )
        if r.fully_pruned:
            console.print(f"   [yellow]warning: layer collapse — fully pruned: {', '.join(r.fully_pruned)}[/yellow]")
        table.add_row(
            str(r.round),
            f"{r.sparsity:.3f}",
            f"{r.metrics['metric']:.4f}",
            f"{r.train_loss:.4f}",
            r.mask_sha256[:12],
            f"{r.wall_s:.1f}",
        )

    result = run_chain_with_trainer(spec, factory, Trainer(train_task, spec.train), root, show, data_sha256=data_sha)
    console.print(table)
    console.print(f"chain store: {result.directory}")


def _imp_ticket(root: Optional[Path], raw: dict) -> None:
    """``ltvl imp --ticket B --source MASK… [--prime-checkpoint CK]``: re-train each mask as the
    baseline ticket B (θ'0 from CK for theta0_prime), one resumable round per mask."""
    from ltvl.core.ticket_chain import run_ticket_chain
    from ltvl.core.train import Trainer
    from ltvl.params.resolve import data_for, prime_for, resolve_ticket, ticket_plan
    from ltvl.util.home import home
    from ltvl.vl.assemble import build_vl
    from ltvl.vl.datasets import resolve_dataset

    if not raw.get("ticket") or not raw.get("source"):
        raise LtvlError("a ticket run needs --ticket (the baseline) and --source (mask files, repeatable)",
                        where="--ticket/--source", fix="e.g. --ticket theta0_prime --source m.mask --prime-checkpoint "
                                                     "bert-base-cased/")
    raw = {**raw, "source": [str(p) for p in raw["source"]]}
    job = resolve_ticket(raw, where="option").target
    job = job.with_data(str(resolve_dataset(data_for(job.params))))
    setup = build_vl(job.vl)
    root = root or home() / "chains"
    spec, sources = ticket_plan(raw, root)
    other = prime_for(raw, job, setup.model_factory, console.print)
    console.print(f"ticket {spec.short_hash} ({spec.baseline.value} on {len(sources)} mask(s)) → {root}/tickets")
    rounds = run_ticket_chain(
        spec, sources, setup.model_factory, Trainer(setup.data, spec.train), root,
        lambda r: console.print(f" mask {r.round}: sparsity {r.sparsity:.3f}  metric {r.metrics['metric']:.4f}"
                                f"{'  (resumed)' if r.replayed else f'  ({r.wall_s:.0f} s)'}"), other)
    console.print(f"ticket store: {root / 'tickets' / spec.short_hash} ({len(rounds)} round(s))")


def _cli_value(name: str, value):
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


def _imp_signature() -> inspect.Signature:
    """``ltvl imp``'s options, one per chain parameter of the schema (ticket keys excepted)."""
    from ltvl.params.schema import DEFAULTS, INFO

    aliases = {"target_sparsity": ["--target"]}
    params = [
        inspect.Parameter(
            "root",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Optional[Path], typer.Option(help="chain state directory (default $LTVL_HOME/chains)")
            ],
        )
    ]
    for name, info in INFO.items():
        if name == "source":  # a ticket's masks: mask files on the command line
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
                Optional[list[Path]], typer.Option("--source", help="with --ticket: a mask file to re-train "
                                                                     "(repeatable)")]))
            continue
        typ = Optional[str] if info.keywords else Optional[info.type] if info.nullable else info.type
        allowed = info.allowed()
        helptext = info.help + (f" [{'|'.join(allowed)}]" if allowed and name != "task" else "")
        flags = [f"--{name.replace('_', '-')}", *aliases.get(name, [])]
        if info.type is bool:
            flags = [f"--{name.replace('_', '-')}/--no-{name.replace('_', '-')}"]
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=DEFAULTS[name],
                annotation=Annotated[typ, typer.Option(*flags, help=helptext)],
            )
        )
    return inspect.Signature(params)


_imp.__signature__ = _imp_signature()
app.command("imp")(_imp)


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
            fix="'easy-vqa' is prepared from its package; the paper's datasets: `ltvl data import` (README 'Data')",
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
    """Import a dataset from the format it is published in (see README 'Data')."""
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


@app.command("list")
def list_registered() -> None:
    """Registered backbone presets and tasks."""
    from ltvl.vl.models.presets import PRESETS
    from ltvl.vl.tasks import TASK_DESCRIPTIONS

    t = Table("preset", "backbone", "description", "weights", title="backbone presets")
    for p in PRESETS.values():
        t.add_row(p.name, p.kind, p.description, p.weights)
    console.print(t)
    t = Table("task", "description", title="tasks")
    for name, desc in TASK_DESCRIPTIONS.items():
        t.add_row(name, desc)
    console.print(t)


@app.command()
def lineage(
    ref: Annotated[
        str, typer.Argument(metavar="MASK_SHA_OR_RUN", help="a mask sha256 (≥ 8 hex digits) or an MLflow run id")
    ] = "",
    tracking_uri: Annotated[str | None, typer.Option(help="default: the local sqlite store under LTVL_HOME")] = None,
    sync: Annotated[
        Path | None,
        typer.Option(
            help="send records a sweep spooled while MLflow was down (mlflow-spool.NAME.jsonl under the sweep's root)"
        ),
    ] = None,
    experiment: Annotated[str | None, typer.Option(help="with --sync: the sweep's name")] = None,
) -> None:
    """A mask's ancestry from MLflow, as a tree: dense run → round 0 → … → the mask (with source
    chains for transferred and baseline tickets)."""
    from ltvl.tracking.mlflow_lineage import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    if sync is not None:
        from ltvl.tracking.mlflow_lineage import LineageTracker

        if not experiment:
            raise LtvlError("--sync needs the sweep's experiment name", where="--experiment")
        kind = _experiment_kind(uri, experiment)
        tracker = LineageTracker(uri, experiment, kind, sync)
        tracker.connect()  # replays the spool
        left = tracker.pending()
        console.print(f"{'all records sent' if not left else f'{left} record(s) still waiting'} ({sync})")
        return
    if not ref:
        raise LtvlError("give a mask sha256 or a run id", where="MASK_SHA_OR_RUN")
    from ltvl.tracking.lineage_tree import ancestry, print_tree

    print_tree(ancestry(uri, ref), console)


@app.command()
def report(
    experiment: Annotated[list[str], typer.Option(help="the sweep's MLflow experiment (repeat to combine sweeps)")],
    tracking_uri: Annotated[
        str | None, typer.Option(help="default: $MLFLOW_TRACKING_URI, else the local sqlite store under LTVL_HOME")
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option(help="directory for report.md, CSVs and PNGs (default: ./reports/<experiment>)")
    ] = None,
    p: Annotated[float, typer.Option("--p", help="a winning ticket keeps p% of the dense metric")] = 99,
    min_seeds: Annotated[int, typer.Option(help="cells with fewer seeds are flagged †")] = 2,
    log: Annotated[bool, typer.Option(help="log the report as artifacts of a report run in MLflow")] = True,
) -> None:
    """The paper's tables and figures (Table 1, sparsity and rewinding curves, transfer matrix,
    mask IoU, AT) from a sweep's tracked runs, with seeds counted in every cell."""
    from ltvl.report.build import build_report
    from ltvl.tracking.mlflow_lineage import default_tracking_uri

    if not 0 < p <= 100:
        raise LtvlError(f"--p {p} is outside (0, 100]", where="--p", fix="a percentage, e.g. --p 99")
    uri = tracking_uri or default_tracking_uri()
    rep = build_report(uri, experiment, out or Path("reports") / experiment[0], p / 100, min_seeds, log)
    for s in rep.skipped:
        err.print(f"[yellow]skipped[/] {s}")
    console.print(
        f"report: {rep.markdown} ({len(rep.files)} files)"
        + (f"; in MLflow as run {rep.run_id} (artifacts/report)" if rep.run_id else "")
    )


ClusterDir = Annotated[
    Optional[Path], typer.Option("--dir", help="state directory (default: $LTVL_HOME/local-cluster)")
]


@cluster_app.command("up")
def cluster_up(
    directory: ClusterDir = None,
    head_cpus: Annotated[float, typer.Option(help="CPUs the head node offers")] = 1,
    worker_cpus: Annotated[float, typer.Option(help="CPUs the second node offers")] = 1,
    mlflow: Annotated[bool, typer.Option(help="also start an MLflow server (sqlite + served artifacts)")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for each service")] = 180,
    autoscale: Annotated[
        bool, typer.Option(help="no second node: the head's autoscaler launches worker nodes (real raylets) on demand")
    ] = False,
    node_types: Annotated[
        Optional[Path], typer.Option(help="with --autoscale: take the node types from this `ray up` config")
    ] = None,
    max_workers: Annotated[int, typer.Option(help="with --autoscale: most worker nodes at once")] = 2,
    idle_timeout: Annotated[float, typer.Option(help="with --autoscale: seconds before an idle worker goes")] = 20,
) -> None:
    """Start a Ray head, a second Ray node (or an autoscaler) and an MLflow server, all bound to 127.0.0.1."""
    from ltvl.cluster.autoscale import DEFAULT_NODE_TYPES, AutoscaleSpec
    from ltvl.cluster.local import default_dir, up

    spec = AutoscaleSpec(node_types or DEFAULT_NODE_TYPES, max_workers, idle_timeout) if autoscale else None
    if not autoscale and (node_types is not None or max_workers != 2 or idle_timeout != 20):
        raise LtvlError("--node-types, --max-workers and --idle-timeout need --autoscale", where="ltvl cluster up",
                        fix="add --autoscale")
    state = up(directory or default_dir(), head_cpus, worker_cpus, mlflow, timeout_s=timeout, autoscale=spec)
    scaling = f"; autoscaling up to {max_workers} worker nodes ({spec.node_types_file})" if spec else ""
    console.print(
        f"Ray head {state.ray_address}, nodes {', '.join(state.nodes)}{scaling}; dashboard + job API "
        f"{state.dashboard}" + (f"; MLflow {state.tracking_uri}" if state.tracking_uri else "")
    )
    console.print(
        'Use it from this shell:\n  eval "$(ltvl cluster env)"\n'
        "  ray job submit --working-dir . -- python sweeps/rewind_grid.py\nStop it:  ltvl cluster down"
    )


@cluster_app.command("down")
def cluster_down(directory: ClusterDir = None) -> None:
    """Stop exactly the processes `up` started (by recorded PID); other Ray clusters are left alone."""
    from ltvl.cluster.local import default_dir, down

    stopped = down(directory or default_dir())
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@cluster_app.command("preempt")
def cluster_preempt(
    node_id: Annotated[str, typer.Argument(help="the worker's Ray node id (ltvl cluster status lists them)")],
    directory: ClusterDir = None,
) -> None:
    """Take a worker node of an autoscaling local cluster away, as a cloud reclaims a spot instance."""
    from ltvl.cluster.local import default_dir, preempt

    record = preempt(directory or default_dir(), node_id)
    console.print(f"preempted {node_id} ({record['node_type']}); the autoscaler replaces it if work is waiting")


@cluster_app.command("announce")
def cluster_announce(
    config: Annotated[Path, typer.Argument(help="`ray up` config (a head has ~/ray_bootstrap_config.yaml)")],
    address: Annotated[str, typer.Option(help="the GCS address")] = "127.0.0.1:6379",
) -> None:
    """Record the cluster's node types in its GCS, so sweeps size themselves by what the autoscaler
    can launch rather than by the nodes that happen to be up (cloud heads run this at start)."""
    import yaml

    from ltvl.ray.capacity import announce_capacity, capacity_from_config

    cap = capacity_from_config(yaml.safe_load(config.read_text()))
    announce_capacity(address, cap)
    console.print(f"recorded {cap.describe()}")


@cluster_app.command("status")
def cluster_status(
    directory: ClusterDir = None, as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False
) -> None:
    """Which recorded services run, their addresses, and every port they listen on (a port on a
    public address is flagged and exits 1)."""
    from ltvl.cluster.local import default_dir, status

    st = status(directory or default_dir())
    if as_json:
        console.print_json(json.dumps(st))
    elif not st["running"] and "services" not in st:
        console.print(f"no local cluster recorded in {st['dir']}")
    else:
        for name, alive in st["services"].items():
            console.print(f"{name:<14} {'running' if alive else '[red]stopped[/]'}")
        console.print(f"ray {st['ray_address']}  dashboard {st['dashboard']}  mlflow {st['tracking_uri']}")
        console.print(f"logs: {st['dir']}/*.log, Ray's session logs under {st['ray_logs']}")
        console.print("listening: " + ", ".join(st["listening"]))
        if st["public"]:
            err.print(f"[bold red]listening on a public address:[/] {', '.join(st['public'])}")
    if st.get("public"):
        raise typer.Exit(1)


@cluster_app.command("env")
def cluster_env(directory: ClusterDir = None) -> None:
    """Shell exports for the running local cluster: eval "$(ltvl cluster env)"."""
    from ltvl.cluster.local import ClusterState, default_dir

    state = ClusterState.load((directory or default_dir()).resolve())
    if state is None:
        raise LtvlError(
            "no local cluster is recorded there",
            where=str(directory or default_dir()),
            fix="start one with: ltvl cluster up",
        )
    import shlex

    for k, v in state.env().items():  # quoted: a directory with a space, or with $(…), stays a value
        print(f"export {k}={shlex.quote(v)}")


def _experiment_kind(uri: str, name: str) -> str:
    from ltvl.tracking.reach import tracking_client

    exp = tracking_client(uri).get_experiment_by_name(name)
    if exp is None:
        raise LtvlError(f"no experiment {name!r} at {uri}", where="--experiment")
    return exp.tags.get("ltvl.sweep_kind", "")


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


if __name__ == "__main__":
    main()
