"""Controls (SPEC §7): a dense run no better than the majority answer is flagged, never silently
reported as a baseline."""
import io

from rich.console import Console

from ltvl.sweep.summary import CONTROL_MARGIN, ChainSummary, print_summary


def _row(name, dense, majority):
    return ChainSummary(f"chain:{name}", name, "vqa", "IMP", "done", 3,
                        [(0, 0.0, dense), (1, 0.5, dense), (2, 0.75, dense - 0.1)], dense, majority)


def test_a_dense_run_at_the_majority_answer_is_flagged_in_the_summary():
    learned, stuck = _row("IMP · vqa · seed 0", 0.667, 0.37), _row("IMP · vqa · seed 2", 0.37, 0.37)
    assert learned.dense_learned(CONTROL_MARGIN) and not stuck.dense_learned(CONTROL_MARGIN)
    assert _row("no control", 0.3, None).dense_learned(CONTROL_MARGIN)  # tasks without a majority answer
    buf = io.StringIO()
    print_summary([learned, stuck], "exp", 0.99, Console(file=buf, width=200))
    out = buf.getvalue()
    assert "⚠ IMP · vqa · seed 2: its dense run (0.3700) is no better than the majority answer (0.3700)" in out
    assert "⚠ IMP · vqa · seed 0" not in out  # only the stuck one is flagged ...
    assert "IMP · vqa · seed 2: keeps" not in out  # ... and gets no verdict: its rounds are no evidence
    assert "0.3700 ⚠" in out


def test_table1_leaves_out_seeds_whose_dense_run_learned_nothing():
    import pandas as pd

    from ltvl.report import tables
    dense = pd.DataFrame([{"task": "vqa", "seed": s, "epsilon": 0.0, "metric": m, "majority": 0.37, "dense": f"d{s}"}
                          for s, m in ((0, 0.667), (1, 0.666), (2, 0.37))])
    rows = []
    for seed, curve in ((0, [0.667, 0.667, 0.60]), (1, [0.666, 0.664, 0.61]), (2, [0.37, 0.65, 0.65])):
        for r, (sp, m) in enumerate(zip((0.0, 0.5, 0.75), curve)):
            rows.append({"chain_key": f"chain:{seed}", "task": "vqa", "source_task": "vqa", "init": "theta0",
                         "rewind_step": 0, "adv_use": "off", "epsilon": 0.0, "seed": seed, "round": r,
                         "sparsity": sp, "metric": m})
    rounds = tables.with_lines(pd.DataFrame(rows).assign(dense=""))  # a store older than the ltvl.dense tag
    assert list(tables.failed_dense(dense, rounds, "vqa")["seed"]) == [2]
    t1 = tables.table1(rounds, dense, 0.99, 2).iloc[0]
    assert t1["excluded seeds"] == "2"
    assert t1["dense"].n == 2 and abs(t1["dense"].mean - 0.6665) < 1e-9  # seed 2's 0.37 is not the reference
    # with seed 2 in, its 0.65 at 75% would have lifted the mean; without it 75% keeps < 99% of dense
    assert t1["winning sparsity"] == "50.0%" and t1["IMP"].n == 2


def test_a_dense_run_that_learned_nothing_is_tagged_in_mlflow(tmp_path):
    from mlflow import MlflowClient

    from ltvl.params.resolve import resolve
    from ltvl.tracking.mlflow_lineage import LineageTracker
    from ltvl.tracking.records import DENSE_FLAG, dense_ops

    job = resolve({"task": "vqa", "preset": "tiny"})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = LineageTracker(uri, "exp", "rewind_grid", tmp_path / "spool.jsonl")
    tracker.connect()
    for sha, metric in (("a" * 64, 0.667), ("b" * 64, 0.372)):
        tracker.record(dense_ops(sha, job, {})[0])  # made at its trial's start, flagged at its result
        for op in dense_ops(sha, job, {"metric": metric, "majority_metric": 0.37}):
            tracker.record(op)
    client = MlflowClient(uri)
    runs = {r.data.tags["ltvl.dense"][0]: r for r in client.search_runs([tracker.experiment_id])}
    assert DENSE_FLAG not in runs["a"].data.tags
    assert runs["b"].data.tags[DENSE_FLAG] == "no better than the majority answer (0.3700)"
    assert runs["b"].data.metrics["majority_metric"] == 0.37


def test_an_untrainable_dense_run_lr_0_is_flagged_against_the_majority_control(tmp_path):
    """lr 0 is accepted only as a control: the dense run trains nothing, scores no better than the
    majority answer computed from the same data, and the summary flags it."""
    import torch

    from ltvl.core.train import TrainConfig, Trainer
    from ltvl.vl.assemble import VLSpec, build_vl
    from ltvl.vl.data.synthetic import make_synthetic
    from ltvl.vl.models.presets import BackboneSpec

    make_synthetic("gqa", tmp_path, n_train=256, n_test=128)
    setup = build_vl(VLSpec(task="gqa", data=str(tmp_path), backbone=BackboneSpec("tiny"), max_len=12))
    model = setup.model_factory()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(setup.data, TrainConfig(steps=20, lr=0.0, batch_size=16))
    trainer.train(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing learnt
    metrics = trainer.evaluate(model)
    majority = metrics["majority_metric"]
    row = ChainSummary("chain:x", "IMP · gqa · lr 0 · seed 0", "gqa", "IMP", "done", 1,
                       [(0, 0.0, metrics["metric"])], metrics["metric"], majority, metrics["n"])
    # within two standard errors of the control on 128 questions: it learned nothing
    assert not row.dense_learned(CONTROL_MARGIN)


def test_the_sweeps_picture_draws_the_majority_control(tmp_path):
    import matplotlib.image

    from ltvl.sweep.summary import sparsity_plot
    rows = [_row("IMP · vqa · seed 0", 0.667, 0.37), _row("RP · vqa · seed 0", 0.66, 0.37)]
    img = matplotlib.image.imread(sparsity_plot(rows, "exp", 0.99, tmp_path / "p.png"))
    assert img.shape[:2] == (800, 1280) and img.std() > 0
    for r in rows:
        r.majority = None  # a task without the control: the same picture without its line
    bare = matplotlib.image.imread(sparsity_plot(rows, "exp", 0.99, tmp_path / "bare.png"))
    assert (img != bare).any()


def test_the_100_percent_sparse_control_prunes_every_weight_and_trains_the_rest(tmp_path):
    import torch

    from ltvl.core.imp import ChainSpec, run_chain
    from ltvl.core.toy import ToyTask, make_toy_model
    from ltvl.core.train import TrainConfig, Trainer
    from ltvl.pruning import Method, Schedule, load_mask

    task = ToyTask(n_train=256, n_test=128)
    spec = ChainSpec(train=TrainConfig(steps=20, lr=3e-3, batch_size=16), schedule=Schedule("geometric", 0.5, 0.9),
                     method=Method.ALL)
    assert spec.sparsities() == [1.0]  # one round, whatever the schedule says
    trainer = Trainer(task, spec.train)
    trained = {}

    def train(model, **kw):
        out = trainer.train(model, **kw)
        trained.update({n: p.detach().clone() for n, p in model.named_parameters()})
        return out
    res = run_chain(spec, make_toy_model, train, trainer.evaluate, tmp_path)
    assert [r.round for r in res.rounds] == [0, 1] and res.rounds[1].sparsity == 1.0
    mask = load_mask(res.rounds[1].mask_path)
    assert mask.n_pruned == mask.numel and sorted(res.rounds[1].fully_pruned) == sorted(mask.names)
    theta0 = dict(make_toy_model().named_parameters())
    assert all(not trained[n].any() for n in mask.names)  # every prunable weight stays zero …
    rest = [n for n in trained if n not in mask.names]
    assert rest and any(not torch.equal(trained[n], theta0[n]) for n in rest)  # … and the rest learns
    assert 0.0 <= res.rounds[1].metrics["metric"] <= 1.0


def test_a_sweep_adds_one_control_chain_per_dense_run():
    from ltvl.params.resolve import resolve
    from ltvl.plan.controls import control_chains

    base = {"task": "vqa", "data": "synthetic:{task}", "preset": "tiny", "steps": 20}
    points = [{**base, "seed": s, "rewind_step": r, "rate": rate}
              for s in (0, 1) for r in (0, 4) for rate in (0.5, 0.8)]
    points += [{**base, "seed": 0, "method": "random"}, {**base, "seed": 0, "lr": 0.0},
               {**base, "seed": 1, "ticket": "theta0_shuffled", "source": base}]
    controls = control_chains(points)
    # seeds 0 and 1 and the lr-0 run: three dense runs; rewind steps, rates, methods and tickets share them
    assert [(c["seed"], c.get("lr")) for c in controls] == [(0, None), (1, None), (0, 0.0)]
    for c in controls:
        job = resolve(c)
        assert c["method"] == "all" and "rate" not in c and "rewind_step" not in c
        assert job.rewind_step == 0 and job.chain.sparsities() == [1.0]
    assert control_chains(points + controls) == []  # given ones are not doubled


def _summary(name, arm, dense_sha, rounds, dense, majority=0.37, n=1000):
    return ChainSummary(f"chain:{name}", name, "vqa", arm, "done", len(rounds), rounds, dense, majority, n, dense_sha)


def test_a_dense_run_no_better_than_its_100_percent_sparse_control_is_flagged():
    from ltvl.sweep.summary import with_controls

    good = _summary("IMP · vqa · seed 0", "IMP", "d0", [(0, 0.0, 0.70), (1, 0.5, 0.70)], 0.70)
    bad = _summary("IMP · vqa · seed 1", "IMP", "d1", [(0, 0.0, 0.55), (1, 0.5, 0.55)], 0.55)
    rows = [good, bad, _summary("100%-sparse control · vqa · seed 0", "100%-sparse control", "d0",
                                [(0, 0.0, 0.70), (1, 1.0, 0.52)], 0.70),
            _summary("100%-sparse control · vqa · seed 1", "100%-sparse control", "d1",
                     [(0, 0.0, 0.55), (1, 1.0, 0.545)], 0.55)]
    with_controls(rows)
    assert (good.sparse100, bad.sparse100) == (0.52, 0.545)
    assert good.dense_learned() and bad.dense_flag() == "no better than the 100%-sparse control (0.5450)"
    buf = io.StringIO()
    print_summary(rows, "exp", 0.99, Console(file=buf, width=220))
    out = buf.getvalue()
    assert "⚠ IMP · vqa · seed 1: its dense run (0.5500) is no better than the 100%-sparse control (0.5450)" in out
    assert "⚠ IMP · vqa · seed 0" not in out and "⚠ 100%-sparse" not in out  # controls are not flagged themselves


def test_the_report_leaves_out_the_dense_run_that_fails_its_sparse_control_and_shows_both_controls():
    import pandas as pd

    from ltvl.report import tables
    from ltvl.tracking.arms import SPARSE_CONTROL
    dense = pd.DataFrame([{"task": "vqa", "seed": s, "epsilon": 0.0, "metric": m, "majority": 0.37, "n": 1000,
                           "dense": f"d{s}"} for s, m in ((0, 0.70), (1, 0.69), (2, 0.55))])
    rows = []
    for seed, curve in ((0, [0.70, 0.70, 0.60]), (1, [0.69, 0.689, 0.61]), (2, [0.55, 0.55, 0.55])):
        for r, (sp, m) in enumerate(zip((0.0, 0.5, 0.75), curve)):
            rows.append({"chain_key": f"chain:{seed}", "task": "vqa", "source_task": "vqa", "init": "theta0",
                         "rewind_step": 0, "adv_use": "off", "epsilon": 0.0, "seed": seed, "round": r,
                         "sparsity": sp, "metric": m, "dense": f"d{seed}"})
        rows.append({"chain_key": f"chain:c{seed}", "task": "vqa", "source_task": "vqa", "init": "sparse100",
                     "rewind_step": 0, "adv_use": "off", "epsilon": 0.0, "seed": seed, "round": 1, "sparsity": 1.0,
                     "metric": 0.54, "dense": f"d{seed}"})
    rounds = tables.with_lines(pd.DataFrame(rows))
    assert set(rounds[rounds["init"] == "sparse100"]["line"]) == {SPARSE_CONTROL}
    bad = tables.failed_dense(dense, rounds, "vqa")
    assert list(bad["dense"]) == ["d2"] and bad["why"][0] == "no better than the 100%-sparse control (0.5400)"
    t1 = tables.table1(rounds, dense, 0.99, 2).iloc[0]
    assert t1["excluded seeds"] == "2" and t1["dense"].n == 2
    assert t1[SPARSE_CONTROL].n == 2 and abs(t1[SPARSE_CONTROL].mean - 0.54) < 1e-9
    assert abs(t1["majority answer"].mean - 0.37) < 1e-9
    assert t1["winning sparsity"] == "50.0%"  # seed 2's flat 0.55 would have made 75% "win"
    kept, kept_dense, failed = tables.trusted(rounds, dense)
    assert 2 not in set(kept["seed"]) and list(failed["dense"]) == ["d2"] and len(kept_dense) == 2
    assert tables.control_values(kept, kept_dense, "vqa") == {"majority answer": 0.37, SPARSE_CONTROL: 0.54}


def test_an_adversarial_dense_run_has_its_own_control_which_is_no_at_imp_ticket():
    """The 100%-sparse chain grown from an AT dense run is a control: it is not an AT-IMP row at
    100%, it does not pool into the standard controls, and it judges its own dense run."""
    import pandas as pd

    from ltvl.report import tables
    from ltvl.tracking.arms import SPARSE_CONTROL
    dense = pd.DataFrame([{"task": "vqa", "seed": s, "epsilon": eps, "metric": m, "majority": 0.37, "n": 1000,
                           "dense": f"d{s}{'at' if eps else ''}"}
                          for s, eps, m in ((0, 0.0, 0.70), (1, 0.0, 0.69), (0, 0.01, 0.71), (1, 0.01, 0.45))])
    rows = []
    for seed in (0, 1):
        for eps, adv in ((0.0, "off"), (0.01, "imp")):
            d = f"d{seed}{'at' if eps else ''}"
            for r, sp in enumerate((0.0, 0.5)):
                rows.append({"chain_key": f"chain:{d}", "task": "vqa", "source_task": "vqa", "init": "theta0",
                             "rewind_step": 0, "adv_use": adv, "epsilon": eps, "seed": seed, "round": r,
                             "sparsity": sp, "metric": 0.7, "finetune_metric": float("nan"), "dense": d})
            rows.append({"chain_key": f"chain:c{d}", "task": "vqa", "source_task": "vqa", "init": "sparse100",
                         "rewind_step": 0, "adv_use": adv, "epsilon": eps, "seed": seed, "round": 1, "sparsity": 1.0,
                         "metric": 0.50 if eps else 0.36, "finetune_metric": float("nan"), "dense": d})
    rounds = tables.with_lines(pd.DataFrame(rows))
    assert set(rounds[rounds["init"] == "sparse100"]["line"]) == {SPARSE_CONTROL}
    at = tables.adversarial(rounds, 1)
    assert list(at["sparsity"]) == ["0.0%", "50.0%"]  # no AT-IMP "ticket" at 100%
    assert tables.control_values(rounds, dense, "vqa")[SPARSE_CONTROL] == 0.36  # the standard controls only
    assert tables.table1(rounds, dense, 0.99, 2).iloc[0]["excluded seeds"] == "none"  # Table 1: standard runs
    kept, _, failed = tables.trusted(rounds, dense)
    assert list(failed["dense"]) == ["d1at"] and "100%-sparse control (0.5000)" in failed["why"].iloc[0]
    assert "d1at" not in set(kept["dense"]) and "d1" in set(kept["dense"])
    from ltvl.params.resolve import resolve
    from ltvl.tracking.records import chain_name
    at_control = resolve({"task": "vqa", "seed": 0, "adv_use": "imp", "adv_epsilon": 0.01, "method": "all"})
    assert chain_name(at_control) == "100%-sparse control · vqa · AT ε=0.01 · seed 0"  # not the standard one's name


def test_lineage_tags_the_dense_run_when_its_sparse_control_matches_it():
    from ltvl.ray.lineage import LineageCallback
    from ltvl.tracking.records import DENSE_FLAG

    round0 = {"metric": 0.55, "majority_metric": 0.37, "n": 1000}
    assert LineageCallback._control_flag("d1", round0, 0.545) == [
        {"op": "tags", "key": "dense:d1", "tags": {DENSE_FLAG: "no better than the 100%-sparse control (0.5450)"}}]
    assert LineageCallback._control_flag("d0", {**round0, "metric": 0.70}, 0.52) == []
    # already flagged against the majority answer: that flag stays
    assert LineageCallback._control_flag("d2", {**round0, "metric": 0.371}, 0.50) == []


def test_method_all_prunes_to_100_percent_only():
    import pytest
    import torch

    from ltvl.pruning import prune_to_sparsity
    from ltvl.util.errors import LtvlError
    w = {"a": torch.randn(4, 4), "b": torch.randn(3, 2)}
    mask = prune_to_sparsity(w, None, 1.0, method="all")
    assert mask.sparsity == 1.0 and mask.metadata["method"] == "all"
    with pytest.raises(LtvlError, match="method 'all' prunes to sparsity 1, not 0.5"):
        prune_to_sparsity(w, None, 0.5, method="all")


def test_retry_unlearned_is_checked_before_anything_runs():
    import pytest

    from ltvl.plan.config import load_config
    from ltvl.util.errors import LtvlError
    assert load_config("rewind_grid", None, ["retry_unlearned=2"]).options().retry_unlearned == 2
    with pytest.raises(LtvlError, match=r"retry_unlearned 11 is outside \[0, 10\]"):
        load_config("rewind_grid", None, ["retry_unlearned=11"])
    with pytest.raises(LtvlError, match="retry_unlearned must be int"):
        load_config("rewind_grid", None, ["retry_unlearned=often"])


def test_retry_unlearned_is_refused_where_no_dense_stage_could_judge_a_dense_run(tmp_path):
    import pytest

    from ltvl.plan.config import load_config
    from ltvl.ray.space import job_entry
    from ltvl.ray.stages import check_retry
    from ltvl.util.errors import LtvlError
    base = {"task": "vqa", "data": "synthetic:vqa", "preset": "tiny", "steps": 20}
    shared = [job_entry({**base, "rate": r}, tmp_path) for r in (0.5, 0.8)]  # one dense run, two chains
    check_retry(shared, searching=False)
    alone = shared + [job_entry({**base, "seed": 3}, tmp_path)]
    with pytest.raises(LtvlError, match=r"retry_unlearned needs a dense stage, but 1 chain\(s\) train their dense "
                                        r"run alone \(e.g. seed 3, method magnitude\)"):
        check_retry(alone, searching=False)
    with pytest.raises(LtvlError, match="retry_unlearned cannot be combined with a search"):
        check_retry([], searching=True)
    with pytest.raises(LtvlError, match="controls must be bool"):
        load_config("rewind_grid", None, ["controls=maybe"])
