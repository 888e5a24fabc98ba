"""``schedule: adaptive`` with ``seed_informed`` and ``share_masks`` end to end: a real sweep driver
on its own local Ray and a real sqlite MLflow store. Seed 0's chain searches the levels; seed 1's
walks seed 0's masks from seed 0's settled answer; every try is a round run in MLflow with its
level, parent level and verdict, and a shared mask's lineage leads back to seed 0's dense run.
(``seed_informed`` without ``share_masks`` differs only in the params it gives seed 1, tested
without Ray in test_cost_strategies.py.)"""
import os
import sys

import pytest

from ltvl.tracking.lineage_tree import ancestry
from ltvl.vl.data.synthetic import make_synthetic
from tests.helpers.listening import run_sampling_listeners

pytestmark = pytest.mark.long


def test_an_adaptive_sweep_records_its_tries_and_informs_the_second_seed(tmp_path):
    from mlflow import MlflowClient

    make_synthetic("gqa", tmp_path / "data", n_train=256, n_test=256)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "LTVL_HOME": str(tmp_path / "home"), "HOME": str(tmp_path / "user")}
    env.pop("RAY_ADDRESS", None)  # the sweep starts its own Ray: on loopback only (sampled throughout)
    res, sockets = run_sampling_listeners([sys.executable, "sweeps/rewind_grid.py", "--config",
                                           "tests/configs/tiny_rewind_grid.yaml",
                          "--set", "name=adaptive", "--set", f"params.data={tmp_path / 'data'}",
                          "--set", "params.task=gqa", "--set", f"tracking_uri={uri}", "--set", "params.steps=60",
                          "--set", "params.eval_limit=256", "--set", "params.schedule=adaptive",
                          "--set", "params.target_sparsity=0.97", "--set", "params.jump=2", "--set", "params.keep=0.9",
                          "--set", "grid.rewind_step=[0]", "--set", "grid.seed=[0,1]", "--set", "chains=[]",
                          "--set", "seed_informed=true", "--set", "share_masks=true"], env=env, timeout=900)
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 0, out[-3000:]
    assert len(sockets) >= 5, sockets  # GCS, raylet, agents, workers: the sampling saw the cluster
    assert [str(s) for s in sockets if not s.loopback] == [], "the embedded Ray listened beyond 127.0.0.1"
    assert not (tmp_path / "user" / ".ray").exists()  # its token was private to the run, never ~/.ray

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("adaptive").experiment_id], max_results=500)
    chains = {int(r.data.tags["ltvl.seed"]): r for r in runs if r.data.tags["ltvl.kind"] == "chain"}
    tries = {s: sorted((r for r in runs if r.data.tags["ltvl.kind"] == "round" and int(r.data.tags["ltvl.round"]) > 0
                        and r.data.tags["ltvl.chain_key"] == f"chain:{chains[s].data.tags['ltvl.chain']}"),
                       key=lambda r: int(r.data.tags["ltvl.round"])) for s in chains}
    assert sorted(chains) == [0, 1]
    dense = {s: next(r.data.metrics["metric"] for r in runs if r.data.tags["ltvl.kind"] == "dense"
                     and int(r.data.tags["ltvl.seed"]) == s) for s in chains}
    for s, rs in tries.items():  # each try's verdict is its metric against keep x its dense metric
        assert rs, f"seed {s} recorded no try"
        for r in rs:
            kept = r.data.metrics["metric"] >= 0.9 * dense[s] - 1e-6
            assert r.data.tags["ltvl.kept"] == ("yes" if kept else "no"), (s, r.data.tags, r.data.metrics, dense[s])
            assert int(r.data.tags["ltvl.parent_level"]) < int(r.data.tags["ltvl.level"])
    kept0 = [int(r.data.tags["ltvl.level"]) for r in tries[0] if r.data.tags["ltvl.kept"] == "yes"]
    answer = max(kept0, default=0)
    assert chains[0].data.params["schedule"] == "adaptive" and "start_level" not in chains[0].data.params
    assert answer, "seed 0 kept no level: this recipe must give seed 1 a start, or the informed path is untested"
    assert f"seed-informed: seed(s) 1 walk seed 0's masks from level {answer}, its answer" in out, out[-3000:]
    assert chains[1].data.params["start_level"] == str(answer) and chains[1].data.params["masks_of_seed"] == "0"
    assert int(tries[1][0].data.tags["ltvl.level"]) == answer  # seed 1 walks from seed 0's answer
    lead_mask = {r.data.tags["ltvl.level"]: r.data.tags["ltvl.mask_sha256"] for r in tries[0]}
    assert tries[1][0].data.tags["ltvl.mask_sha256"] == lead_mask[str(answer)]  # the very mask seed 0 kept
    steps = [int(r.data.tags["ltvl.level"]) for r in tries[1]]
    assert all(abs(b - a) == 1 for a, b in zip(steps, steps[1:])), steps  # then one level at a time
    line = ancestry(uri, tries[1][0].data.tags["ltvl.mask_sha256"])  # lineage: down seed 0's path to its dense run
    assert line[-1].kind == "dense" and line[-1].run_id == next(
        r.info.run_id for r in runs if r.data.tags["ltvl.kind"] == "dense" and r.data.tags["ltvl.seed"] == "0")
    # a settled search is a finished chain, not one cut short
    assert "incomplete" not in out and "stopped early" not in out, out[-3000:]
