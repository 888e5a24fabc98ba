"""SPEC §7's controls end to end: a real sweep driver on its own local Ray, a real sqlite MLflow
store and the report. One dense run is deliberately untrainable (lr 0): it must be re-seeded once
(retry_unlearned), then flagged in the job log, tagged in MLflow and left out of the report's
tables and figures, while the sweep's other dense run is judged by the same rule from the numbers
it recorded."""
import csv
import os
import subprocess
import sys

import pytest

from ltvl.vl.data.synthetic import make_synthetic

pytestmark = pytest.mark.long


def test_an_untrainable_dense_run_is_flagged_tagged_and_left_out_of_the_report(tmp_path):
    from mlflow import MlflowClient

    from ltvl.report.build import build_report
    from ltvl.tracking.arms import SPARSE_CONTROL
    from ltvl.tracking.records import DENSE_FLAG, dense_flag

    make_synthetic("gqa", tmp_path / "data", n_train=256, n_test=256)  # tiny learns it in 100 steps
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "LTVL_HOME": str(tmp_path / "home"), "RAY_ADDRESS": ""}
    res = subprocess.run([sys.executable, "sweeps/rewind_grid.py", "--config", "tests/configs/tiny_rewind_grid.yaml",
                          "--set", "name=controls", "--set", f"params.data={tmp_path / 'data'}",
                          "--set", "params.task=gqa",
                          "--set", f"tracking_uri={uri}", "--set", "controls=true", "--set", "grid.rewind_step=[0]",
                          "--set", "params.steps=100", "--set", "params.eval_limit=256", "--set", "retry_unlearned=1",
                          "--set", "chains=[{seed: 1, lr: 0.0}]"],  # the untrainable one, on a seed of its own
                         capture_output=True, text=True, env=env, timeout=900)
    out = " ".join((res.stdout + res.stderr).split())  # the log wraps long lines
    assert res.returncode == 0, out[-3000:]
    assert "4 chain(s)" in out  # IMP seed 0, IMP lr 0 seed 1, and a 100%-sparse control for each dense run
    # seed 1 learned nothing, so its chains moved to seed 2 (the next unused), which learned nothing either
    assert "↻ the dense run of seed 1 (" in out and "its 2 chain(s) run with seed 2 instead" in out
    assert "⚠ IMP · gqa · rate 0.5 · lr 0 · seed 2: its dense run (" in out, out[-3000:]
    assert "⚠ IMP · gqa · rate 0.5 · lr 0.001 · seed 0" not in out and "↻ the dense run of seed 0" not in out

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("controls").experiment_id], max_results=500)
    dense = {int(r.data.tags["ltvl.seed"]): r for r in runs if r.data.tags["ltvl.kind"] == "dense"}
    controls = {int(r.data.tags["ltvl.seed"]): r for r in runs
                if r.data.tags["ltvl.kind"] == "round" and r.data.tags["ltvl.arm"] == SPARSE_CONTROL
                and r.data.metrics["sparsity"] == 1.0}
    assert sorted(dense) == [0, 1, 2] and sorted(controls) == [0, 2]  # seed 1's chains never ran
    for seed, d in dense.items():  # each dense run judged by its own recorded numbers and control
        m = d.data.metrics
        why = dense_flag(m["metric"], m["n"], majority=m["majority_metric"],
                         sparse100=controls[seed].data.metrics["metric"] if seed in controls else None)
        assert d.data.tags.get(DENSE_FLAG) == why, (seed, m)
        assert seed not in controls or controls[seed].data.tags["ltvl.dense"] == d.data.tags["ltvl.dense"]
    assert dense[1].data.tags[DENSE_FLAG].startswith("no better than the majority answer")  # lr 0: nothing
    assert dense[2].data.tags[DENSE_FLAG].startswith("no better than the")

    assert DENSE_FLAG not in dense[0].data.tags, dense[0].data.metrics  # the recipe below does learn

    report = build_report(uri, ["controls"], tmp_path / "report", p=0.99, min_seeds=1)
    table1 = next(csv.DictReader(open(tmp_path / "report" / "table1.csv")))
    assert table1["excluded seeds"] == "1, 2" and table1["dense n"] == "1"
    assert float(table1["dense mean"]) == pytest.approx(dense[0].data.metrics["metric"])  # seed 1 is not averaged in
    assert float(table1["majority answer mean"]) == pytest.approx(dense[0].data.metrics["majority_metric"])
    assert float(table1[f"{SPARSE_CONTROL} mean"]) == pytest.approx(controls[0].data.metrics["metric"])
    md = report.markdown.read_text()
    assert "2 dense run(s) left out of Table 1, the curves and the tables below" in md
    for seed in (1, 2):
        assert f"- seed {seed}, dense run `{dense[seed].data.tags['ltvl.dense'][:8]}`: no better than the" in md
    curves = list(csv.DictReader(open(tmp_path / "report" / "curves.csv")))
    assert curves and all(c["n"] == "1" for c in curves)  # seed 2's chains are not drawn
