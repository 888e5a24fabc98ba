"""``ltvl report``: tracked runs → Markdown + CSV tables and PNG figures in one directory,
logged as artifacts of a report run in the (first) experiment, so they show in the MLflow UI."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ltvl.report import figures, frontier, tables
from ltvl.report.collect import Records, collect, download_mask
from ltvl.report.tables import Cell
from ltvl.util.errors import LtvlError

CURVE_LINES = ["IMP", "RP", "pre-training ticket", "θ'0", "θ''0", "high-magnitude"]


@dataclass
class Report:
    out: Path
    markdown: Path
    files: list[Path] = field(default_factory=list)
    run_id: str | None = None
    skipped: list[str] = field(default_factory=list)


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_no runs of this kind in the experiment(s)._\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _csv(df: pd.DataFrame, path: Path) -> Path:
    """Cells become three columns (mean, std, n) so the CSV stays machine-readable."""
    flat = {}
    for col in df.columns:
        if len(df) and any(isinstance(c, Cell) for c in df[col]):
            cells = [c if isinstance(c, Cell) else Cell.of([]) for c in df[col]]
            flat[f"{col} mean"] = [c.mean for c in cells]
            flat[f"{col} std"] = [c.std for c in cells]
            flat[f"{col} n"] = [c.n for c in cells]
        else:
            flat[col] = list(df[col])
    pd.DataFrame(flat).to_csv(path, index=False)
    return path


def _iou(records: Records, rounds: pd.DataFrame, out: Path) -> tuple[pd.DataFrame, list[Path]]:
    """Mask IoU at equal sparsity: between tasks' IMP masks when there are several tasks, else
    between the IMP masks of different seeds and rewind points of the one task."""
    from ltvl.pruning import load_mask
    imp = rounds[rounds["chain_key"].str.startswith("chain:") & rounds["init"].isin(["theta0", "theta_i"])
                 & (rounds["sparsity"] > 0) & (rounds["mask_sha256"] != "") & (rounds["adv_use"] == "off")]
    by_task = imp["task"].nunique() > 1
    if by_task:
        imp = imp[imp["line"] == "IMP"].sort_values("seed").groupby(["task", "sparsity"]).head(1)
    label = imp["task"] if by_task else imp["line"] + " s" + imp["seed"].astype(str)
    imp = imp.assign(label=label)
    rows, panels, cache = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for s, g in imp.groupby("sparsity"):
            if len(g) < 2:
                continue
            masks = {}
            for _, r in g.iterrows():
                if r["mask_sha256"] not in cache:
                    cache[r["mask_sha256"]] = load_mask(download_mask(records.uri, r["run_id"], r["mask_sha256"], tmp))
                masks[r["label"]] = cache[r["mask_sha256"]]
            names = sorted(masks)
            m = pd.DataFrame([[masks[a].iou(masks[b]) for b in names] for a in names], index=names, columns=names)
            for a in names:
                for b in names:
                    rows.append({"sparsity": f"{s:.1%}", "a": a, "b": b, "iou": m.loc[a, b]})
            panels[f"{s:.1%}"] = m
    pngs = [figures.iou_panel(panels, out / "iou.png")] if panels else []
    return pd.DataFrame(rows, columns=["sparsity", "a", "b", "iou"]), pngs


def frontier_section(rounds: pd.DataFrame, dense: pd.DataFrame, p: float, min_seeds: int, out: Path,
                     files: list[Path]) -> list[str]:
    """Metric vs sparsity per arm, metric vs cost, the best arm per sparsity and the sparsest
    subnetwork per budget (:mod:`ltvl.report.frontier`)."""
    n_eval = {t: float(g["n"].dropna().mean()) for t, g in dense.groupby("task") if g["n"].notna().any()}
    pts = frontier.points(rounds, n_eval)
    md = ["## Frontier: the best route to each sparsity, and its cost", ""]
    if pts["line"].nunique() < 2:
        return md + ["_fewer than two arms (IMP, one-shot, prune + fine-tune, Wanda, GMP, RP, …) to compare._", ""]
    md += ["Cost is optimizer steps to reach a subnetwork: the dense run's plus every pruned round of its chain "
           "so far (FLOPs are proportional: same model, same batches, dense kernels). *Ahead beyond noise* compares "
           "the best arm with the runner-up by two standard errors of their difference.", ""]
    best = frontier.best_by_sparsity(pts)
    budget = frontier.sparsest_by_budget(rounds, dense, p)
    files += [_csv(pts, out / "frontier_points.csv"), _csv(best, out / "frontier_best.csv"),
              _csv(budget, out / "frontier_budget.csv")]
    curves = tables.curves(rounds[rounds["chain_key"].str.startswith("chain:")], min_seeds)
    for task in sorted(pts["task"].unique()):
        d = tables.dense_cell(dense, task, min_seeds)
        p_line = p * d.mean if d.n else None
        lines = sorted(pts[pts["task"] == task]["line"].unique())
        a = figures.sparsity_curves(curves, task, lines, p_line, f"{task}: every arm, metric vs sparsity",
                                    out / f"frontier_sparsity_{task}.png", p)
        b = figures.cost_frontier(pts, task, p_line, p, out / f"frontier_cost_{task}.png")
        files += [a, b]
        md += [f"![{task} arms]({a.name}) ![{task} cost]({b.name})", ""]
    verdict = frontier.verdicts(pts, rounds, dense, p, n_eval)
    files.append(_csv(verdict, out / "verdicts.csv"))
    md += ["### At each sparsity, the best arm and what it cost", "", _md_table(best),
           "### A verdict on every arm's subnetwork (beyond two standard errors)", "", _md_table(verdict),
           f"### At each budget, the sparsest subnetwork keeping {p:.0%} of its dense run", "", _md_table(budget)]
    return md


def where_section(records: Records, rounds: pd.DataFrame, out: Path, files: list[Path]) -> list[str]:
    """Per arm, the sparsity per layer and module kind at the highest sparsity most arms reach, as
    heatmaps, and the IoU per module kind of every pair of arms' masks there (one seed: the lowest),
    and of every pair of one arm's seeds (how stable its choice is)."""
    from ltvl.pruning import load_mask
    from ltvl.report.where import group_sparsity, kind_iou

    md = ["## Where the sparsity is", ""]
    arms = frontier.arm_rounds(rounds)
    arms = arms[(arms["sparsity"] > 0) & (arms["mask_sha256"] != "")]
    if arms.empty:
        return md + ["_no pruned masks._", ""]
    reach = arms.groupby("sparsity")["line"].nunique()
    s = max(reach[reach == reach.max()].index)
    every_seed = arms[arms["sparsity"] == s].sort_values("seed").groupby(["task", "line", "seed"]).head(1)
    at = every_seed.groupby(["task", "line"]).head(1)
    md += [f"At {s:.1%} sparsity (reached by {int(reach.max())} arm(s)), seed with the lowest number per arm: "
           "the share of each layer's module kind that is pruned, and where two arms' kept weights overlap.", ""]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task, g in at.groupby("task"):
            masks = {r["line"]: load_mask(download_mask(records.uri, r["run_id"], r["mask_sha256"], tmp))
                     for _, r in g.iterrows()}
            for line, mask in masks.items():  # ASCII file names: a link must not need URL-encoding
                slug = "".join(ch if ch.isascii() and ch.isalnum() else "_" for ch in f"{task}_{line}")
                png = figures.heatmap(group_sparsity(mask), f"{task} · {line}: sparsity per layer and module",
                                      out / f"where_{len(files)}_{slug}.png", fmt="{:.2f}", vmin=0.0, vmax=1.0)
                files.append(png)
                md += [f"![{line}]({png.name})"]
            names = sorted(masks)
            rows += [{"task": task, "a": a, "b": b, **{k: round(v, 3) for k, v in kind_iou(masks[a], masks[b]).items()}}
                     for i, a in enumerate(names) for b in names[i + 1:]]
        seed_rows = []
        for (task, line), g in every_seed.groupby(["task", "line"]):
            if len(g) < 2:
                continue
            by_seed = {int(r["seed"]): load_mask(download_mask(records.uri, r["run_id"], r["mask_sha256"], tmp))
                       for _, r in g.iterrows()}
            seeds = sorted(by_seed)
            seed_rows += [{"task": task, "arm": line, "sparsity": f"{s:.1%}", "a": f"seed {a}", "b": f"seed {b}",
                           **{k: round(v, 3) for k, v in kind_iou(by_seed[a], by_seed[b]).items()}}
                          for i, a in enumerate(seeds) for b in seeds[i + 1:]]
    md.append("")
    if rows:
        iou = pd.DataFrame(rows)
        files.append(_csv(iou, out / "where_iou.csv"))
        md += ["### IoU of kept weights per module kind, between arms", "", _md_table(iou)]
    if seed_rows:
        seeds_iou = pd.DataFrame(seed_rows)
        files.append(_csv(seeds_iou, out / "where_iou_seeds.csv"))
        md += ["", "### IoU of kept weights per module kind, between one arm's seeds", "", _md_table(seeds_iou)]
    return md


def build_report(uri: str, experiments: list[str], out: Path, p: float = 0.99, min_seeds: int = 2,
                 log_to_mlflow: bool = True) -> Report:
    if not 0 < p <= 1:
        raise LtvlError(f"p {p} is outside (0, 1]", where="--p", fix="give a percentage such as --p 99")
    if min_seeds < 1:
        raise LtvlError(f"min_seeds {min_seeds} is below 1", where="--min-seeds", fix="--min-seeds 2")
    records = collect(uri, experiments)
    rounds = tables.with_lines(records.rounds)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    md = [f"# ltvl report: {', '.join(experiments)}", "",
          f"From {len(rounds)} finished rounds and {len(records.dense)} dense runs in `{uri}`. Each cell is "
          f"mean ± std over seeds (n = seeds); † marks a cell with fewer than {min_seeds} seeds, `missing` "
          f"one with none. p = {p:.0%} of the dense metric.", ""]
    if records.skipped:
        md += [f"Skipped {len(records.skipped)} run(s) that are not ltvl sweep records:", ""]
        md += [f"- {s}" for s in records.skipped] + [""]

    t1 = tables.table1(rounds, records.dense, p, min_seeds)
    files.append(_csv(t1, out / "table1.csv"))
    md += ["## Table 1: winning tickets and baselines at the highest winning sparsity", "", _md_table(t1)]
    rounds, dense, failed = tables.trusted(rounds, records.dense)
    for task, bad in failed.groupby("task"):
        md += [f"**{task}: {len(bad)} dense run(s) left out of Table 1, the curves and the tables below**, with "
               "every chain grown from them: they do not beat a control, so their chains are no evidence of a "
               "ticket (SPEC §7).", ""]
        md += [f"- seed {b.seed}, dense run `{b.dense[:8] or '?'}`: {b.why}" for b in bad.itertuples()] + [""]

    curves = tables.curves(rounds, min_seeds)
    files.append(_csv(curves, out / "curves.csv"))
    md += ["## Sparsity curves", ""]
    for task in sorted(curves["task"].unique()):
        d = tables.dense_cell(dense, task, min_seeds)
        png = figures.sparsity_curves(curves, task, CURVE_LINES, p * d.mean if d.n else None,
                                      f"{task}: metric vs sparsity", out / f"curves_{task}.png", p,
                                      tables.control_values(rounds, dense, task))
        rw = sorted(line for line in curves[curves["task"] == task]["line"].unique() if line.startswith("IMP"))
        png_rw = figures.sparsity_curves(curves, task, rw, p * d.mean if d.n else None,
                                         f"{task}: rewinding (one line per rewind step)", out / f"rewind_{task}.png",
                                         p)
        files += [png, png_rw]
        md += [f"![{task}]({png.name}) ![{task} rewinding]({png_rw.name})", ""]

    md += frontier_section(rounds, dense, p, min_seeds, out, files)

    rw = tables.rewinding(rounds, min_seeds)
    files.append(_csv(rw, out / "rewinding.csv"))
    md += ["## Rewinding", "", _md_table(rw)]

    tm, drop = tables.transfer(rounds, min_seeds)
    md += ["## Transfer (source × target; the diagonal is the target's own IMP ticket)", "", _md_table(tm)]
    if not tm.empty:
        files += [_csv(tm, out / "transfer.csv"), _csv(drop, out / "pretrain_drop.csv")]
        md += [_md_table(drop)]
        for s, g in tm.groupby("sparsity"):
            m = g.set_index("source").drop(columns=["sparsity"]).map(lambda c: c.mean)
            png = figures.heatmap(m, f"transfer at {s} sparsity (metric)", out / f"transfer_{s.rstrip('%')}.png")
            files.append(png)
            md += [f"![transfer {s}]({png.name})", ""]

    iou, pngs = _iou(records, rounds, out)
    md += ["## Mask overlap (IoU at equal sparsity)", ""]
    if iou.empty:
        md += ["_fewer than two IMP masks at any sparsity._", ""]
    else:
        files += [_csv(iou, out / "iou.csv"), *pngs]
        md += [f"![IoU]({p_.name})" for p_ in pngs] + [""]

    md += where_section(records, rounds, out, files)

    at = tables.adversarial(rounds, min_seeds)
    md += ["## Adversarial training", "", _md_table(at)]
    if not at.empty:
        files.append(_csv(at, out / "adversarial.csv"))
        for task in sorted(at["task"].unique()):
            lines = ["IMP"] + sorted(line for line in curves[curves["task"] == task]["line"].unique()
                                     if line.startswith("AT-IMP"))
            files.append(figures.sparsity_curves(curves, task, lines, None, f"{task}: AT-IMP vs IMP",
                                                 out / f"at_{task}.png"))
            md += [f"![AT {task}]({files[-1].name})", ""]

    markdown = out / "report.md"
    markdown.write_text("\n".join(md))
    html = write_html(md, out / "report.html", f"ltvl report: {', '.join(experiments)}")
    report = Report(out, markdown, [markdown, html, *files], skipped=records.skipped)
    if log_to_mlflow:
        report.run_id = _log(uri, experiments[0], experiments, out)
    return report


def write_html(md_lines: list[str], path: Path, title: str) -> Path:
    """The report as one self-contained HTML file (markdown-it-py, images embedded as data URIs):
    MLflow's artifact view previews HTML, while report.md's images only show there as link text."""
    import base64
    import html

    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark").enable("table")
    tokens = md.parse("\n".join(md_lines))
    for token in tokens:
        for child in token.children or []:
            if child.type == "image" and not str(child.attrGet("src")).startswith(("http:", "https:", "data:")):
                data = base64.b64encode((path.parent / str(child.attrGet("src"))).read_bytes()).decode()
                child.attrSet("src", f"data:image/png;base64,{data}")
    style = ("body{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
             "img{max-width:100%;margin:0.5em 0}")
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                    f"<style>{style}</style></head><body>{md.renderer.render(tokens, md.options, {})}</body></html>")
    return path


def _log(uri: str, experiment: str, experiments: list[str], out: Path) -> str:
    from ltvl.tracking.reach import tracking_client
    client = tracking_client(uri)
    exp = client.get_experiment_by_name(experiment)
    run = client.create_run(exp.experiment_id, run_name=f"report-{time.strftime('%Y%m%d-%H%M%S')}",
                            tags={"ltvl.kind": "report", "ltvl.report_of": ",".join(experiments)})
    client.log_artifacts(run.info.run_id, str(out), "report")
    client.set_terminated(run.info.run_id)
    return run.info.run_id
