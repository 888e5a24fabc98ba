"""IMP chains on a real local Ray cluster: one TorchTrainer per chain, one Tune iteration per round."""
import csv
import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

from ltvl.params.schema import DEFAULTS  # noqa: E402
from ltvl.plan.points import grid_points  # noqa: E402
from ltvl.pruning import load_mask  # noqa: E402
from ltvl.ray.space import trial_params, validate_space  # noqa: E402
from ltvl.ray.stages import run_chains  # noqa: E402
from ltvl.util.errors import LtvlError  # noqa: E402
from ltvl.vl.data.synthetic import make_synthetic  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    # address="local": a Ray cluster already running on this machine must not capture the tests
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _space(data, **kw):
    base = {"task": "vqa", "data": str(data), "preset": "tiny", "layers": None, "steps": 4, "batch_size": 8,
            "eval_limit": None, "max_len": 12, "rate": 0.5, "target_sparsity": 0.7, "lr": 1e-3}
    return {**base, **kw}


def test_grid_expansion_and_validation(tmp_path):
    space = _space(tmp_path, rewind_step=tune.grid_search([0, 2]), rate=tune.grid_search([0.2, 0.5]))
    assert len(grid_points(space)) == 4 and validate_space(space) == 4
    with pytest.raises(LtvlError, match="rewind step 4 is not in"):
        validate_space(_space(tmp_path, rewind_step=tune.grid_search([0, 4])))
    with pytest.raises(LtvlError, match="did you mean 'rewind_step'"):
        validate_space(_space(tmp_path, rewind_stp=1))
    with pytest.raises(LtvlError, match=r"params.rate = 1.5 is above its range \(\(0, 1\)\)"):
        validate_space(_space(tmp_path, rate=1.5))
    with pytest.raises(LtvlError, match="adv_epsilon"):
        validate_space(_space(tmp_path, adv_use="imp", adv_epsilon=-1.0))
    with pytest.raises(LtvlError, match="steps must be int, got str '10'"):
        validate_space(_space(tmp_path, steps="10"))
    with pytest.raises(LtvlError, match="unknown method 'prune'"):
        validate_space(_space(tmp_path, method="prune"))
    with pytest.raises(LtvlError, match="unknown adv_use 'always'"):
        validate_space(_space(tmp_path, adv_use="always"))
    with pytest.raises(LtvlError, match="rewind_fraction = 1.5 is above its range"):
        validate_space(_space(tmp_path, rewind_fraction=1.5))
    with pytest.raises(LtvlError, match="unknown task 'vqq'.*"):
        validate_space(_space(tmp_path, task=tune.grid_search(["vqa", "vqq"])))
    with pytest.raises(LtvlError, match="unknown preset 'tiny-vit'"):
        validate_space(_space(tmp_path, preset="tiny-vit"))
    with pytest.raises(LtvlError, match="target sparsity 0.95 is unreachable"):
        validate_space(_space(tmp_path, schedule="linear", rate=0.3, target_sparsity=0.95))


@pytest.mark.long
def test_sweep_runs_each_chain_as_a_trial_with_rounds_as_iterations(tmp_path, cluster):
    """Chains as trials, rounds as iterations; then the ticket stage: a high-magnitude baseline on
    every IMP chain's masks, and each chain's masks transferred from VQA to GQA."""
    for task in ("vqa", "gqa"):
        make_synthetic(task, tmp_path / task, n_train=64, n_test=32)
    space = _space(str(tmp_path / "{task}"), rewind_step=tune.grid_search([0, 2]))
    grid = run_chains(space, root=tmp_path / "chains", storage=tmp_path / "ray", name="t",
                      baselines=("high_magnitude",), transfer_to=("gqa",))
    assert len(grid) == 2 and not grid.errors
    chain_masks = {}
    for result in grid:
        df = result.metrics_dataframe
        assert list(df["round"]) == [0, 1, 2]
        assert [round(s, 3) for s in df["sparsity"]] == [0.0, 0.5, 0.75]
        assert list(df["training_iteration"]) == [1, 2, 3]
        chain = tmp_path / "chains" / df["chain_sha256"].iloc[0][:16]
        records = [json.loads(p.read_text()) for p in sorted((chain / "rounds").iterdir())]
        assert [r["mask_sha256"] for r in records] == list(df["mask_sha256"])
        for r in records:
            assert load_mask(r["mask_path"]).sha256 == r["mask_sha256"]
        chain_masks[trial_params(result.config).get("rewind_step", 0)] = list(df["mask_sha256"])[1:]
    from ltvl.ray.stages import stage_results
    tickets = stage_results(tmp_path / "ray", "t", "tickets")
    assert len(tickets) == 4 and not tickets.errors
    kinds = set()
    for t in tickets:
        job, df = {**DEFAULTS, **trial_params(t.config)}, t.metrics_dataframe
        kinds.add((job["ticket"], job["task"], job["rewind_step"]))
        assert list(df["round"]) == [1, 2] and [round(s, 3) for s in df["sparsity"]] == [0.5, 0.75]
        assert list(df["source_mask_sha256"]) == chain_masks[job["rewind_step"]]
        transferred = job["ticket"] == "imp"
        assert (list(df["mask_sha256"]) == chain_masks[job["rewind_step"]]) == transferred
        assert set(df["source_task"]) == {"vqa"}
    assert kinds == {("high_magnitude", "vqa", 0), ("high_magnitude", "vqa", 2), ("imp", "gqa", 0), ("imp", "gqa", 2)}
    with pytest.raises(LtvlError, match="a trial needs 14.5 CPUs"):
        run_chains(space, root=tmp_path / "c2", storage=tmp_path / "ray", name="big", num_workers=16)


@pytest.mark.long
def test_killed_worker_resumes_from_last_round_with_identical_masks(tmp_path, cluster, monkeypatch):
    make_synthetic("vqa", tmp_path / "data", n_train=64, n_test=32)
    space = _space(tmp_path / "data", target_sparsity=0.8)  # rounds at 0, .5, .75, .875
    ref = run_chains(space, root=tmp_path / "ref", storage=tmp_path / "ray", name="ref")
    monkeypatch.setenv("LTVL_FAULT_AT_ROUND", f"2:{tmp_path / 'killed'}")
    got = run_chains(space, root=tmp_path / "crash", storage=tmp_path / "ray", name="crash", max_failures=1)
    assert (tmp_path / "killed").exists(), "the worker was never killed"
    assert not got.errors
    df, rf = got[0].metrics_dataframe, ref[0].metrics_dataframe
    assert list(df["round"]) == [0, 1, 2, 3]  # every round reached Tune exactly once
    assert list(df["training_iteration"]) == [1, 2, 3, 4]
    assert list(df["mask_sha256"]) == list(rf["mask_sha256"])  # bit-identical to the uninterrupted run
    assert list(df["metric"]) == list(rf["metric"])


@pytest.mark.long
def test_rewind_by_rate_by_task_sweep_with_random_pruning_baseline(tmp_path, cluster):
    """The issue's acceptance sweep: 2 rewind steps x 2 pruning rates x 2 tasks of IMP, plus an RP
    chain at the rate-0.5 sparsities (an extra chain; one task only, to keep the suite's time)."""
    for task in ("vqa", "gqa"):
        make_synthetic(task, tmp_path / task, n_train=48, n_test=16)
    space = _space(str(tmp_path / "{task}"), task=tune.grid_search(["vqa", "gqa"]),
                   rewind_step=tune.grid_search([0, 2]), rate=tune.grid_search([0.5, 0.7]), steps=3)
    rp = [{"task": "vqa", "method": "random", "rewind_step": 0, "rate": 0.5}]
    grid = run_chains(space, root=tmp_path / "chains", storage=tmp_path / "ray", name="grid", extra_points=rp)
    assert len(grid) == 9 and not grid.errors
    seen = set()
    for result in grid:
        cfg, df = {**DEFAULTS, **trial_params(result.config)}, result.metrics_dataframe
        expected = [0.0, 0.5, 0.75] if cfg["rate"] == 0.5 else [0.0, 0.7]
        assert [round(s, 3) for s in df["sparsity"]] == expected
        seen.add((cfg["task"], cfg["rewind_step"], cfg["rate"], cfg["method"], df["chain_sha256"].iloc[0]))
        assert df["steps_trained"].iloc[0] == 0  # round 0 came from the shared dense run
        assert list(df["steps_trained"].iloc[1:]) == [3 - cfg["rewind_step"]] * (len(df) - 1)  # i..t
    assert len(seen) == 9  # 9 distinct chains, each run once
    assert {(t, m) for t, _, _, m, _ in seen} == {("vqa", "magnitude"), ("vqa", "random"), ("gqa", "magnitude")}
    # the shared dense prefix: one dense training per task serves its 4 or 5 chains
    from ltvl.ray.stages import stage_results
    dense = stage_results(tmp_path / "ray", "grid", "dense")
    assert len(dense) == 2 and sorted(r.metrics["dense_steps"] for r in dense) == [3, 3]


def test_resume_from_a_path_without_a_sweep_is_refused(tmp_path, cluster):
    with pytest.raises(LtvlError, match="no sweep to resume"):
        run_chains(_space(tmp_path), root=tmp_path / "c", storage=tmp_path / "nothing-here", name="x", resume=True)


def _driver(tmp_path, space, resume, tag):
    import subprocess
    import sys
    spec = {"space": space, "root": str(tmp_path / "chains"), "storage": str(tmp_path / "ray"), "name": "crash",
            "resume": resume, "out": str(tmp_path / f"{tag}.json"),
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    (tmp_path / f"{tag}-spec.json").write_text(json.dumps(spec))
    return subprocess.Popen([sys.executable, str(Path(__file__).parent / "helpers" / "sweep_driver.py"),
                             str(tmp_path / f"{tag}-spec.json")], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{tag}.log", "w"))


@pytest.mark.long
def test_killed_driver_resumes_the_sweep_without_rerunning_rounds(tmp_path, monkeypatch):
    """SIGKILL the sweep driver (and its local Ray) once a chain has finished a pruned round; a new
    driver with resume=True finishes the sweep. Every round reaches Tune once, and the round log
    (written whenever a round is computed, not replayed) shows that no finished round ran twice."""
    import os
    import signal
    import time
    make_synthetic("vqa", tmp_path / "data", n_train=64, n_test=32)
    monkeypatch.setenv("LTVL_ROUND_LOG", str(tmp_path / "rounds.log"))
    space = _space(tmp_path / "data", steps=6, target_sparsity=0.8, rewind_step={"grid_search": [0, 2]})
    first = _driver(tmp_path, space, False, "first")
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        log = (tmp_path / "rounds.log").read_text().split() if (tmp_path / "rounds.log").exists() else []
        if log[1::2].count("2") >= 1:  # one chain is past round 2 of 3: kill mid-sweep
            break
        time.sleep(0.5)
    assert first.poll() is None, "the sweep finished before it could be killed"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(2)
    second = _driver(tmp_path, space, True, "second")
    assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    results = json.loads((tmp_path / "second.json").read_text())
    assert len(results) == 2 and not any(r["error"] for r in results)
    for r in results:
        assert r["rounds"] == [0, 1, 2, 3] and r["iterations"] == [1, 2, 3, 4]
    computed = (tmp_path / "rounds.log").read_text().splitlines()
    assert len(computed) == len(set(computed)) == 8  # 2 chains x 4 rounds, each computed exactly once
    # MLflow lineage across the crash: one run per chain, every round once, complete histories
    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("crash")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    chains = [r for r in runs if r.data.tags["ltvl.kind"] == "chain"]
    rounds = [r for r in runs if r.data.tags["ltvl.kind"] == "round"]
    assert len(chains) == 2 and len(rounds) == 8
    assert len({(r.data.tags["ltvl.chain_key"], r.data.tags["ltvl.round"]) for r in rounds}) == 8
    for c in chains:
        steps = sorted(m.step for m in client.get_metric_history(c.info.run_id, "metric"))
        assert steps == [0, 1, 2, 3]  # complete, no duplicates
    # the records the report is computed from hold exactly the values Tune received
    from ltvl.report.build import build_report
    from ltvl.report.collect import collect
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracked = collect(uri, ["crash"]).rounds
    for r in results:
        for s, m in zip(r["sparsity"], r["metric"]):
            row = tracked[(tracked["rewind_step"] == r["config"]["rewind_step"]) & (tracked["sparsity"] == round(s, 3))]
            assert len(row) == 1 and float(row["metric"].iloc[0]) == pytest.approx(m)
    build_report(uri, ["crash"], tmp_path / "report", p=0.99, min_seeds=1)
    rewinding = {row["sparsity"]: row for row in csv.DictReader(open(tmp_path / "report" / "rewinding.csv"))}
    theta0 = next(r for r in results if r["config"]["rewind_step"] == 0)
    keeps = [s for s, m in zip(theta0["sparsity"], theta0["metric"]) if s > 0 and m >= 0.99 * theta0["metric"][0]]
    table1 = next(csv.DictReader(open(tmp_path / "report" / "table1.csv")))
    # a dense run that does not beat the majority-answer control is left out of every table (SPEC
    # §7): the tiny model's few steps may not; whichever it is, the report must follow from it
    from ltvl.tracking.records import dense_learned
    d = next(r for r in runs if r.data.tags["ltvl.kind"] == "dense").data.metrics
    learned = dense_learned(d["metric"], d.get("majority_metric"), d.get("n"))
    assert table1["excluded seeds"] == ("none" if learned else "0")
    assert table1["winning sparsity"] == (f"{round(max(keeps), 3):.1%}" if keeps and learned else "none")
    if learned:  # the report's tables hold the tracked values, recomputed here
        for r in results:
            for s, m in zip(r["sparsity"], r["metric"]):
                got = float(rewinding[f"{round(s, 3):.1%}"][f"rewind {r['config']['rewind_step']} mean"])
                assert got == pytest.approx(m)
    else:
        assert rewinding == {} and "left out of Table 1, the curves" in (tmp_path / "report" / "report.md").read_text()


def test_below_dense_stopper_drops_a_chain_only_after_grace():
    from ltvl.ray.stopping import BelowDenseStopper
    stop = BelowDenseStopper(0.9, grace_rounds=1)
    assert not stop("t", {"round": 0, "dense_ratio": 1.0})
    assert not stop("t", {"round": 1, "dense_ratio": 0.95})
    assert stop("t", {"round": 2, "dense_ratio": 0.85})
    assert not BelowDenseStopper(0.9, grace_rounds=3)("t", {"round": 2, "dense_ratio": 0.5})
    with pytest.raises(LtvlError, match="early-stop fraction 1.5"):
        BelowDenseStopper(1.5)


def test_sampled_params_need_optuna_and_are_checked_at_their_bounds(tmp_path, cluster):
    with pytest.raises(LtvlError, match=r"\['lr'\] are sampled, which needs search=optuna"):
        run_chains(_space(tmp_path, lr=tune.loguniform(1e-4, 1e-2)), root=tmp_path / "c", storage=tmp_path / "r")
    with pytest.raises(LtvlError, match="rewind step 4 is not in"):
        run_chains(_space(tmp_path, rewind_step=tune.randint(0, 5)), root=tmp_path / "c", storage=tmp_path / "r",
                   search="optuna")
    with pytest.raises(LtvlError, match="unknown early_stop 'soon'"):
        run_chains(_space(tmp_path), root=tmp_path / "c", storage=tmp_path / "r", early_stop="soon")


@pytest.mark.long
def test_optuna_study_per_grid_point_with_early_stop(tmp_path, cluster):
    """OptunaSearch samples lr within each grid point's study; chains falling below p of their
    dense metric stop early, and a stopped chain's last round is the one that fell below."""
    make_synthetic("vqa", tmp_path / "data", n_train=64, n_test=32)
    space = _space(tmp_path / "data", lr=tune.loguniform(1e-4, 3e-3), rewind_step=tune.grid_search([0, 2]),
                   target_sparsity=0.8)
    results = run_chains(space, root=tmp_path / "chains", storage=tmp_path / "ray", name="opt", search="optuna",
                         num_samples=1, early_stop="below_dense", early_stop_p=0.98)
    assert len(results) == 2 and not any(r.error for r in results)  # one study per grid point
    assert sorted(trial_params(r.config)["rewind_step"] for r in results) == [0, 2]
    lrs = [trial_params(r.config)["lr"] for r in results]
    assert len(set(lrs)) == 2 and all(1e-4 <= lr <= 3e-3 for lr in lrs)
    for r in results:
        df = r.metrics_dataframe
        ratios = list(df["dense_ratio"])
        assert all(x >= 0.98 for x in ratios[1:-1])  # nothing before the last round fell below p
        assert len(df) == 4 or ratios[-1] < 0.98  # finished, or stopped at the round that fell below
    assert (tmp_path / "ray" / "opt-study0").exists() and (tmp_path / "ray" / "opt-study1").exists()


def test_driver_resources_the_cluster_lacks_are_refused(tmp_path, cluster):
    with pytest.raises(LtvlError, match="trial drivers need resource 'trial_driver'"):
        run_chains(_space(tmp_path), root=tmp_path / "c", storage=tmp_path / "r",
                   driver_resources=(("trial_driver", 1),))


def test_resume_unpickles_tune_state_only_as_the_driver_left_it(cluster, tmp_path):
    """``Tuner.restore`` unpickles tuner.pkl, trials' params.pkl/error.pkl and fields of the
    experiment state: a file planted or changed in the storage is refused before any of it runs."""
    from ray import tune

    from ltvl.ray.trust import RecordState, verify

    def trainable(config):
        if config["x"] == 2:
            raise ValueError("fails, so an error.pkl is written")
        tune.report({"m": config["x"]})

    manifest, path = tmp_path / "home" / "tune-state.sha256.json", str(tmp_path / "ray" / "stage")
    tune.Tuner(trainable, param_space={"x": tune.grid_search([1, 2])},
               run_config=tune.RunConfig(name="stage", storage_path=str(tmp_path / "ray"), verbose=0,
                                         callbacks=[RecordState(manifest, path)])).fit()
    assert manifest.stat().st_mode & 0o077 == 0  # only this user can read or change the record
    verify(manifest, path)  # as the driver left it
    pkl = next((tmp_path / "ray" / "stage").glob("*/error.pkl"))
    original = pkl.read_bytes()
    pkl.write_bytes(original + b"\x00")
    with pytest.raises(LtvlError, match=r"error.pkl changed since this sweep's driver wrote it"):
        verify(manifest, path)
    pkl.write_bytes(original)
    (tmp_path / "ray" / "stage" / "planted.pkl").write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(LtvlError, match=r"planted.pkl was not written by this sweep's driver"):
        verify(manifest, path)
    with pytest.raises(LtvlError, match=r"no record of this stage"):
        verify(tmp_path / "other.json", path)
    # what a resume does with it (as with the state a driver killed mid-write leaves behind): the
    # stage's state is moved aside unread and its record forgotten, so the stage can run afresh
    from ltvl.ray.trust import Manifest, set_aside
    aside = set_aside(manifest, path)
    assert not (tmp_path / "ray" / "stage").exists() and (Path(aside) / "planted.pkl").exists()
    assert path not in Manifest(manifest).load() and not tune.Tuner.can_restore(path)


@pytest.mark.long
def test_a_resume_whose_tune_state_outran_its_record_runs_the_stage_again_from_the_stores(cluster, tmp_path,
                                                                                          capfd):
    """CI killed a driver after Tune wrote its experiment state and before the record of it caught
    up (the record follows each write by up to a step), and the resume was refused for good. Now
    the state is set aside unread and the stage runs again, its rounds replayed from the stores."""
    make_synthetic("vqa", tmp_path / "data", n_train=64, n_test=32)
    space = _space(tmp_path / "data", target_sparsity=0.5)
    kw = {"root": tmp_path / "chains", "storage": tmp_path / "ray", "name": "outran"}
    first = run_chains(space, **kw)
    masks = list(first[0].metrics_dataframe["mask_sha256"])
    state = next((tmp_path / "ray" / "outran-chains").glob("experiment_state*.json"))
    state.write_text(state.read_text() + " ")  # what the killed driver's Tune wrote after its last record
    again = run_chains(space, resume=True, **kw)
    err = capfd.readouterr().err
    assert "is not the one this driver recorded" in err and "not read, and is set aside" in err
    assert len(list((tmp_path / "ray").glob("outran-chains.untrusted-*"))) == 1
    assert again[0].error is None and list(again[0].metrics_dataframe["mask_sha256"]) == masks
    assert all(again[0].metrics_dataframe["replayed"])  # every round read back from the store, none retrained
