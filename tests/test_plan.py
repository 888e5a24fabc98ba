"""The plan a sweep builds once before anything runs: the same chains the Ray stages run, each
resolved once, the dense runs they share, and the training steps each stage costs."""

from pathlib import Path

import pytest

from ltvl.params.resolve import ChainJob, resolve
from ltvl.plan.config import load_config
from ltvl.plan.plan import build_plan

CONFIGS = Path(__file__).resolve().parents[1] / "sweeps" / "configs"


def test_the_main_jobs_plan_prices_each_chain_and_shares_one_dense_run():
    plan = build_plan(load_config("rewind_grid", CONFIGS / "rewind_grid.yaml", []))
    assert [d.steps for d in plan.dense] == [300] and len(plan.dense[0].chains) == 4
    by_label = {j.label: (j.rounds, j.steps) for j in plan.chains}
    assert by_label == {"IMP · vqa · rate 0.5 · seed 0": (3, 900),  # 3 rounds of 300 steps from θ0
                        "IMP θi@30 · vqa · rate 0.5 · seed 0": (3, 810),  # from step 30 to 300
                        "RP · vqa · rate 0.5 · seed 0": (3, 900),
                        "100%-sparse control · vqa · seed 0": (1, 300)}
    assert plan.stage_steps() == {"dense": 300, "chains": 2910, "tickets": 0} and plan.total_steps == 3210
    # the control runs over the config's params (its schedule included), as the stages run it: its
    # store is the one the main job wrote (799e5c8b07143791 on 2026-12-02)
    control = next(j for j in plan.chains if j.label.startswith("100%"))
    assert control.job.chain.short_hash == "799e5c8b07143791"
    assert [j.job.chain.short_hash for j in plan.chains[:3]] == ["1f921247bc7b531f", "87c5e8d2b5d6528a",
                                                                 "bb21a5d4b07575a9"]
    assert not plan.bounded
    text = "\n".join(plan.describe())
    assert "in all: 3,210 training steps" in text and "dense runs: 300 training steps" in text
    assert f"chain {plan.chains[1].job.chain.short_hash}  IMP θi@30" in text


def test_the_plans_chains_are_the_ones_the_ray_stages_run():
    from ltvl.plan.points import chain_points
    from ltvl.sweep.main import space_of, sweep_points

    cfg = load_config("rewind_grid", CONFIGS / "study_table1.yaml", [], "smoke")
    plan = build_plan(cfg)
    space = space_of(cfg)
    _, _, extra = sweep_points(cfg, space)  # what the driver hands the stages: chains, then controls
    ray_side = [resolve(p) for p in chain_points(space, extra)]  # as ltvl.ray.stages.run_chains expands them
    hashes = sorted(j.chain.sha256 for j in ray_side if isinstance(j, ChainJob))
    assert sorted(j.job.chain.sha256 for j in plan.chains) == hashes
    assert plan.tickets and all(j.stage == "tickets" for j in plan.tickets)
    imp = [j for j in plan.chains if j.label.startswith("IMP")]
    assert len(plan.tickets) == len(imp) * len(cfg.baselines)
    for t in plan.tickets:  # a baseline re-trains each pruned mask of its chain for the full steps
        assert t.steps == t.rounds * t.job.target.chain.train.steps


def test_an_adaptive_chain_is_priced_as_an_upper_bound_and_a_search_by_its_samples():
    adaptive = build_plan(load_config("rewind_grid", None, [
        "params.preset=tiny", "params.data=synthetic:vqa", "params.steps=10", "params.schedule=adaptive",
        "params.rate=0.2", "params.target_sparsity=0.9", "controls=false"]))
    assert adaptive.bounded and adaptive.chains[0].upper_bound
    assert adaptive.chains[0].rounds == 11  # the levels it may try: 1 - 0.8^k up to 90%
    assert "in all: ≤ " in "\n".join(adaptive.describe())
    search = build_plan(load_config("search", CONFIGS / "search.yaml", ["search.num_samples=3"]))
    one = sum(d.steps for d in search.dense) + sum(j.steps for j in search.chains)
    assert search.samples == 3 and search.total_steps == 3 * one


def test_the_summary_shows_the_steps_each_chain_actually_trained():
    import io

    from rich.console import Console

    from ltvl.sweep.summary import ChainSummary, _cost, print_summary

    records = [{"steps_trained": 0, "wall_s": 0.1}, {"steps_trained": 270, "wall_s": 50.0},
               {"steps_trained": 270, "wall_s": 49.0}]  # round 0 from a sibling's dense run: 0 steps here
    cost = _cost(records)
    assert cost == {"steps_trained": 540, "wall_s": pytest.approx(99.1), "train_flops": 0.0,  # older records
                    "stored_steps": 540, "stored_flops": 0.0}
    row = ChainSummary("chain:x", "IMP θi@30 · vqa", "vqa", "IMP", "done", 3,
                       [(0, 0.0, 0.76), (1, 0.5, 0.77), (2, 0.75, 0.75)], 0.76, 0.37, 1000.0, "d", **cost)
    buf = io.StringIO()
    print_summary([row], "exp", 0.99, Console(file=buf, width=240))
    assert "steps trained" in buf.getvalue() and "│ 540 " in buf.getvalue()
    assert "cost of this run: 540 optimizer steps, —," in buf.getvalue() and "FLOPs not counted" in buf.getvalue()


def test_a_run_that_replays_stored_rounds_is_charged_only_for_the_rounds_it_wrote(tmp_path):
    import io
    import os
    import time

    from rich.console import Console

    from ltvl.sweep.summary import ChainSummary, _cost, print_summary

    paths = [tmp_path / f"{r:03d}.json" for r in range(3)]
    for p in paths:
        p.write_text("{}")
    since = time.time()
    for p in paths[:2]:  # written by an earlier run
        os.utime(p, (since - 3600, since - 3600))
    os.utime(paths[2], (since + 1, since + 1))  # by this one
    records = [{"steps_trained": 300, "wall_s": 80.0, "train_flops": 3e12},
               {"steps_trained": 300, "wall_s": 90.0, "train_flops": 3e12},
               {"steps_trained": 300, "wall_s": 95.0, "train_flops": 3e12}]
    cost = _cost(records, paths, since)
    assert (cost["steps_trained"], cost["wall_s"], cost["stored_steps"]) == (300, 95.0, 900)
    row = ChainSummary("chain:x", "IMP · vqa", "vqa", "IMP", "done", 3,
                       [(0, 0.0, 0.76), (1, 0.5, 0.77), (2, 0.75, 0.75)], 0.76, 0.37, 1000.0, "d", **cost)
    buf = io.StringIO()
    print_summary([row], "exp", 0.99, Console(file=buf, width=240))
    out = buf.getvalue()
    assert "cost of this run: 300 optimizer steps, 3 TFLOP, 1.6 min" in out
    assert "all rounds of these chains, whichever run computed them: 900 optimizer steps, 9 TFLOP" in out


def test_a_sweep_recorded_before_the_keep_rename_resumes_under_the_new_word(tmp_path):
    import json

    from ltvl.plan import record

    old = {"config": {"early_stop": {"kind": "below_dense", "p": 0.9}, "params": {"steps": 10}}, "chains": ["a"]}
    (tmp_path / record.RECORD).write_text(json.dumps(old))
    same = {"config": {"early_stop": {"kind": "below_dense", "keep": 0.9}, "params": {"steps": 10}}, "chains": ["a"]}
    assert record.check_resume(tmp_path, same) is None
    moved = {"config": {"early_stop": {"kind": "below_dense", "keep": 0.8}, "params": {"steps": 10}}, "chains": ["a"]}
    with pytest.raises(Exception, match=r"early_stop.keep: 0.9 → 0.8"):
        record.check_resume(tmp_path, moved)
