"""`ltvl report` against a real sqlite-backed MLflow: records written through the sweep's own
record functions (ltvl.tracking.records) with chosen metrics, so every table value can be
checked against an independent computation; real masks for the IoU heatmap."""

import csv
import statistics

import matplotlib.image
import pytest
import torch
from mlflow import MlflowClient

from ltvl.params.resolve import resolve
from ltvl.pruning import Mask, prune_to_sparsity, save_mask
from ltvl.report.build import build_report
from ltvl.report.where import kind_iou
from ltvl.tracking.mlflow_lineage import LineageTracker
from ltvl.tracking.records import chain_ops, dense_ops, round_op
from ltvl.util.errors import LtvlError

SPARSITIES = [0.0, 0.5, 0.75]
DENSE = {("vqa", 0): 0.80, ("vqa", 1): 0.82, ("vqa", 2): 0.78, ("gqa", 0): 0.60, ("gqa", 1): 0.62}


def imp_metric(task, seed, s):  # keeps 99% of dense at 50% but not at 75%
    return DENSE[(task, seed)] * {0.0: 1.0, 0.5: 1.0, 0.75: 0.9}[s]


def rp_metric(task, seed, s):
    return DENSE[(task, seed)] * {0.0: 1.0, 0.5: 0.7, 0.75: 0.5}[s]


def _masks(tmp_path, seed):
    g = torch.Generator().manual_seed(seed)
    w = {"a": torch.randn(16, 16, generator=g), "b": torch.randn(32, generator=g)}
    masks = [Mask.dense_like(w)]
    for s in SPARSITIES[1:]:
        masks.append(prune_to_sparsity(w, masks[-1], s))
    paths = []
    for m in masks:
        p = tmp_path / "masks" / f"{m.sha256}.mask.safetensors"
        save_mask(m, p)
        paths.append(str(p))
    return masks, paths


def _log_chain(tracker, tmp_path, params, metric_fn, key, mask_seed, source_task=None, adaptive=False):
    p = {"preset": "tiny", **params}
    dense = f"d{p['task']}{p['seed']}{p.get('adv_use', 'off')}{p.get('steps', '')}".ljust(64, "0")
    ops = [] if p.get("ticket") else dense_ops(dense, resolve(p), {"metric": DENSE[(p["task"], p["seed"])]})
    ops += chain_ops(key, resolve(p), None if p.get("ticket") else dense)
    masks, paths = _masks(tmp_path, mask_seed)
    for r, (m, path) in enumerate(zip(masks, paths)):
        if p.get("ticket") and r == 0:
            continue  # tickets re-train pruned rounds only
        res = {
            "round": r,
            "sparsity": SPARSITIES[r],
            "metric": metric_fn(p["task"], p["seed"], SPARSITIES[r]),
            "mask_sha256": m.sha256,
            "parent_sha256": "",
        }
        if source_task:
            res["source_task"] = source_task
        if adaptive and r:  # a try of schedule: adaptive names its level, parent and verdict
            res.update(level=r, parent_level=r - 1, kept=True)
        ops.append(round_op(key, resolve(p), res, None if p.get("ticket") else dense, path))
    for op in ops:
        tracker.record(op)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    t = LineageTracker(uri, "study", "rewind_grid", tmp / "spool.jsonl")
    t.connect()
    for seed in (0, 1, 2):
        _log_chain(t, tmp, {"task": "vqa", "seed": seed}, imp_metric, f"chain:vqa-imp-{seed}", seed)
    for seed in (0, 1):
        _log_chain(
            t, tmp, {"task": "vqa", "seed": seed, "method": "random"}, rp_metric, f"chain:vqa-rp-{seed}", 10 + seed
        )
        _log_chain(
            t, tmp, {"task": "vqa", "seed": seed, "rewind_step": 2}, imp_metric, f"chain:vqa-rw2-{seed}", 20 + seed
        )
        _log_chain(t, tmp, {"task": "gqa", "seed": seed}, imp_metric, f"chain:gqa-imp-{seed}", 30 + seed)
    # θ''0 on one seed only (flagged), high-magnitude never run (missing)
    _log_chain(
        t,
        tmp,
        {"task": "vqa", "seed": 0, "ticket": "theta0_shuffled", "source": {"task": "vqa"}},
        lambda task, seed, s: 0.5,
        "ticket:shuffled-0",
        0,
    )
    # θ''0 on the θi chain's masks: a line of its own, never pooled into Table 1's θ''0
    _log_chain(
        t,
        tmp,
        {"task": "vqa", "seed": 0, "rewind_step": 2, "ticket": "theta0_shuffled", "source": {"task": "vqa"}},
        lambda task, seed, s: 0.3,
        "ticket:shuffled-rw2-0",
        20,
    )
    # the pre-training ticket on vqa, two seeds: 0.05 below vqa's own ticket
    for seed in (0, 1):
        _log_chain(
            t,
            tmp,
            {"task": "vqa", "seed": seed, "ticket": "imp", "source": {"task": "pretrain"}},
            lambda task, seed, s: imp_metric(task, seed, s) - 0.05,
            f"ticket:pre-{seed}",
            40 + seed,
            "pretrain",
        )
    # AT-IMP at ε = 0.01 on vqa, seed 0
    _log_chain(
        t,
        tmp,
        {"task": "vqa", "seed": 0, "adv_use": "imp", "adv_epsilon": 0.01},
        lambda task, seed, s: imp_metric(task, seed, s) + 0.01,
        "chain:vqa-at-0",
        50,
    )
    # an adaptive search on seed 0 (same dense run): its tries are their own line, never IMP's
    _log_chain(t, tmp, {"task": "vqa", "seed": 0, "schedule": "adaptive"}, lambda task, seed, s: 0.2,
               "chain:vqa-adaptive-0", 70, adaptive=True)
    # a smoke-sized run logged into the same experiment: another recipe, named and skipped
    _log_chain(t, tmp, {"task": "vqa", "seed": 0, "steps": 4}, lambda task, seed, s: 0.1, "chain:vqa-smoke", 60)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("study")
    stray = client.create_run(exp.experiment_id, run_name="someone's notebook run")  # not ours: named, skipped
    client.log_metric(stray.info.run_id, "metric", 0.99)
    return uri, tmp


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_report_tables_match_an_independent_computation(study):
    uri, tmp = study
    rep = build_report(uri, ["study"], tmp / "out", p=0.99, min_seeds=2)
    assert any("someone's notebook run" in s and "not an ltvl sweep record" in s for s in rep.skipped)
    assert any(s.startswith("IMP · vqa · rate 0.5 · seed 0") and "steps 4 (not 200)" in s for s in rep.skipped)

    t1 = {r["task"]: r for r in _rows(tmp / "out" / "table1.csv")}
    vqa_dense = [DENSE[("vqa", s)] for s in (0, 1, 2)]
    assert float(t1["vqa"]["dense mean"]) == pytest.approx(statistics.mean(vqa_dense))
    assert float(t1["vqa"]["dense std"]) == pytest.approx(statistics.stdev(vqa_dense))
    assert t1["vqa"]["dense n"] == "3" and t1["vqa"]["winning sparsity"] == "50.0%"
    assert float(t1["vqa"]["IMP mean"]) == pytest.approx(statistics.mean(vqa_dense))  # IMP keeps 100% at 50%
    assert float(t1["vqa"]["RP mean"]) == pytest.approx(0.7 * statistics.mean(vqa_dense[:2]))
    assert t1["vqa"]["RP n"] == "2"
    assert t1["vqa"]["θ''0 n"] == "1" and float(t1["vqa"]["θ''0 mean"]) == pytest.approx(0.5)
    assert t1["vqa"]["high-magnitude n"] == "0"
    curves = {(r["line"], r["sparsity"]) for r in _rows(tmp / "out" / "curves.csv") if r["task"] == "vqa"}
    assert ("θ''0 (θi@2 masks)", "0.5") in curves
    # the adaptive tries (0.2) pool with nothing: IMP's cells and winning sparsity above are the
    # plain chains' alone, and the tries are a curve of their own
    assert ("IMP (adaptive)", "0.5") in curves and ("IMP (adaptive)", "0.75") in curves
    assert t1["vqa"]["IMP n"] == "3"
    assert t1["gqa"]["dense n"] == "2" and t1["gqa"]["winning sparsity"] == "50.0%"

    md = rep.markdown.read_text()
    assert "0.5000 (n=1) †" in md  # too few seeds: flagged, not filled
    assert "missing" in md  # never-run high-magnitude
    assert "someone's notebook run" in md

    rw = {(r["task"], r["sparsity"]): r for r in _rows(tmp / "out" / "rewinding.csv")}
    assert float(rw[("vqa", "75.0%")]["rewind 2 mean"]) == pytest.approx(0.9 * statistics.mean(vqa_dense[:2]))
    assert rw[("vqa", "75.0%")]["rewind 0 n"] == "3"

    drop = _rows(tmp / "out" / "pretrain_drop.csv")
    assert (
        [float(d["pre-training ticket avg drop"]) for d in drop]
        == pytest.approx(
            [
                statistics.mean(vqa_dense)
                - (statistics.mean(vqa_dense[:2]) - 0.05),  # own IMP (3 seeds) vs pretrain (2)
                0.9 * statistics.mean(vqa_dense) - (0.9 * statistics.mean(vqa_dense[:2]) - 0.05),
            ]
        )
    )

    at = {r["sparsity"]: r for r in _rows(tmp / "out" / "adversarial.csv")}
    assert float(at["75.0%"]["AT-IMP mean"]) == pytest.approx(0.9 * 0.80 + 0.01)
    assert at["75.0%"]["AT-IMP n"] == "1"

    iou = _rows(tmp / "out" / "iou.csv")  # two tasks: IMP masks of vqa (seed 0) vs gqa (seed 0)
    vqa_masks, gqa_masks = _masks(tmp / "x", 0)[0], _masks(tmp / "x", 30)[0]
    got = {(r["sparsity"], r["a"], r["b"]): float(r["iou"]) for r in iou}
    assert got[("50.0%", "gqa", "vqa")] == pytest.approx(gqa_masks[1].iou(vqa_masks[1]))
    assert got[("75.0%", "vqa", "vqa")] == pytest.approx(1.0)

    seeds = {(r["arm"], r["a"], r["b"]): r for r in _rows(tmp / "out" / "where_iou_seeds.csv") if r["task"] == "vqa"}
    imp01 = seeds[("IMP", "seed 0", "seed 1")]  # IMP's masks of seeds 0 and 1 (mask seeds 0, 1) at the same level
    level = [f"{x:.1%}" for x in SPARSITIES].index(imp01["sparsity"])
    want = kind_iou(_masks(tmp / "x", 0)[0][level], _masks(tmp / "x", 1)[0][level])
    assert {k: float(imp01[k]) for k in want} == pytest.approx({k: round(v, 3) for k, v in want.items()})
    assert ("IMP", "seed 0", "seed 2") in seeds and ("IMP", "seed 1", "seed 2") in seeds

    for png in ("curves_vqa.png", "rewind_vqa.png", "curves_gqa.png", "at_vqa.png"):
        img = matplotlib.image.imread(tmp / "out" / png)
        assert img.shape[:2] == (800, 1280) and img.std() > 0  # rendered at 160 dpi, and not blank
    iou_img = matplotlib.image.imread(tmp / "out" / "iou.png")  # one panel for every sparsity
    assert iou_img.shape[1] > iou_img.shape[0] and iou_img.std() > 0
    html = (tmp / "out" / "report.html").read_text()  # what MLflow's artifact view previews
    assert html.count("<img") == md.count("![") and "data:image/png;base64," in html
    assert "<table>" in html and "winning sparsity" in html

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(rep.run_id)
    assert run.data.tags["ltvl.kind"] == "report"
    names = {a.path for a in client.list_artifacts(rep.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/table1.csv", "report/curves_vqa.png"} <= names
    # a second report over the same experiment ignores the first report run
    assert not any("report-" in s for s in build_report(uri, ["study"], tmp / "out2", log_to_mlflow=False).skipped)


def test_report_bad_input(study, tmp_path):
    uri, tmp = study
    with pytest.raises(LtvlError, match="(?s)no experiment 'studdy'.*did you mean 'study'"):
        build_report(uri, ["studdy"], tmp_path)
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment("empty")
    with pytest.raises(LtvlError, match="no finished rounds"):
        build_report(uri, ["empty"], tmp_path)
    with pytest.raises(LtvlError, match="outside"):
        build_report(uri, ["study"], tmp_path, p=99)
    with pytest.raises(LtvlError, match="min_seeds 0 is below 1"):
        build_report(uri, ["study"], tmp_path, min_seeds=0)
    from typer.testing import CliRunner

    from ltvl.cli import app

    res = CliRunner().invoke(app, ["report", "--experiment", "study", "--tracking-uri", uri, "--p", "150"])
    assert res.exit_code != 0 and "--p 150" in str(res.exception)


def test_several_backbones_make_one_row_per_task_and_preset(tmp_path):
    """The backbone study: chains that differ in preset are compared, not skipped as another recipe."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    t = LineageTracker(uri, "backbones", "rewind_grid", tmp_path / "spool.jsonl")
    t.connect()
    for preset, seed_base in (("tiny", 0), ("tiny-vilt", 100)):
        for seed in (0, 1):
            _log_chain(
                t,
                tmp_path,
                {
                    "task": "vqa",
                    "seed": seed,
                    "preset": preset,
                    "steps": 200 + seed_base,
                },  # distinct dense keys per preset
                imp_metric,
                f"chain:{preset}-{seed}",
                seed_base + seed,
            )
    rep = build_report(uri, ["backbones"], tmp_path / "out", log_to_mlflow=False)
    rows = {r["task"]: r for r in _rows(tmp_path / "out" / "table1.csv")}
    assert sorted(rows) == ["vqa [tiny-vilt]", "vqa [tiny]"]
    assert rows["vqa [tiny]"]["dense n"] == "2" and rows["vqa [tiny-vilt]"]["IMP n"] == "2"
    assert rep.skipped == []
