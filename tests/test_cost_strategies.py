"""The cheap routes to the winning sparsity (issue 16): the bracket search over IMP levels and
early-bird masks. The benchmark (bench/cost_to_ticket.py) measures their saving on real data;
these tests pin down that each does what it says on a real (tiny) transformers BERT."""
import dataclasses
import os
from pathlib import Path

import pytest
import torch

from ltvl.core.dense import DenseSpec, DenseStore, ensure_dense
from ltvl.core.early_bird import train_until_early_bird
from ltvl.core.imp import ChainSpec, run_chain
from ltvl.core.level_search import ImpLevels, Try, bracket_search, next_level, walk_level
from ltvl.core.toy import ToyTask, make_toy_model
from ltvl.core.train import TrainConfig, Trainer
from ltvl.pruning import Mask, Schedule
from ltvl.pruning.prunable import PrunableSpec, select_prunable
from ltvl.util.errors import LtvlError

TASK = ToyTask(n_train=256, n_test=128)


def _oracle(last_kept: int, calls: list):
    """A fake ticket trainer: levels up to ``last_kept`` keep p."""
    def try_level(level: int, parent: int) -> Try:
        calls.append((level, parent))
        return Try(level, parent, level / 20, 0.5, level <= last_kept, 10, 0.1, f"m{level}")
    return try_level


@pytest.mark.parametrize("last_kept, kw, expected", [
    (7, {"jump": 1}, [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4), (6, 5), (7, 6), (8, 7)]),  # early abandonment
    (7, {"jump": 4}, [(4, 0), (8, 4), (6, 4), (7, 6)]),  # jumps, then bisection from the last good level
    (7, {"jump": 4, "start": 7}, [(4, 0), (7, 4), (8, 7)]),  # jumps stop at another seed's answer
    (7, {"jump": 4, "start": 9}, [(4, 0), (8, 4), (6, 4), (7, 6)]),  # … or fail below it: bisection
    (12, {"jump": 4, "start": 7}, [(4, 0), (7, 4), (8, 7), (12, 8), (14, 12), (13, 12)]),  # … or resume above
    (7, {"jump": 1, "start": 3}, [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4), (6, 5), (7, 6), (8, 7)]),  # IMP's path
    (14, {"jump": 4}, [(4, 0), (8, 4), (12, 8), (14, 12)]),  # every level keeps p
    (0, {"jump": 4}, [(4, 0), (2, 0), (1, 0)]),  # none does
])
def test_bracket_search_tries_and_answer(last_kept, kw, expected):
    calls = []
    res = bracket_search(14, _oracle(last_kept, calls), **kw)
    assert calls == expected and res.answer == last_kept
    assert res.steps == 10 * len(expected) and [t.level for t in res.tries] == [c[0] for c in expected]


def test_bracket_search_bad_input():
    with pytest.raises(LtvlError, match="jump 0 must be >= 1"):
        bracket_search(5, _oracle(1, []), jump=0)
    with pytest.raises(LtvlError, match=r"start level 6 is not in \[1, 5\]"):
        bracket_search(5, _oracle(1, []), start=6)
    assert next_level(3, 4, 10, 2) is None and next_level(10, None, 10, 2) is None and next_level(2, 9, 10, 1) == 5
    assert next_level(4, None, 14, 4, start=6) == 6 and next_level(6, None, 14, 4, start=6) == 7


def test_imp_levels_with_jump_1_draw_exactly_the_chain_s_masks(tmp_path):
    """Pruning level k-1's trained weights to level k is an IMP round: the search's masks are the
    chain's, bit for bit, so early abandonment changes the cost and never the tickets."""
    spec = ChainSpec(train=TrainConfig(steps=12, lr=3e-3, batch_size=16), schedule=Schedule("geometric", 0.5, 0.8))
    tr = Trainer(TASK, spec.train)
    chain = run_chain(spec, make_toy_model, tr.train, tr.evaluate, tmp_path)
    got = ensure_dense(DenseStore(tmp_path, DenseSpec.of(spec)), {0}, make_toy_model, tr.train, tr.evaluate)
    levels = ImpLevels(spec.sparsities(), make_toy_model, tr, got.theta(0), got.final_weights(),
                       reference=1e-9, p=1.0, seed=spec.train.seed)  # every ticket "keeps p"
    res = bracket_search(len(spec.sparsities()), levels, jump=1)
    assert res.answer == 3 and [t.parent for t in res.tries] == [0, 1, 2]
    assert [t.mask_sha256 for t in res.tries] == [r.mask_sha256 for r in chain.rounds[1:]]
    assert [t.metric for t in res.tries] == [r.metrics["metric"] for r in chain.rounds[1:]]
    strict = ImpLevels(spec.sparsities(), make_toy_model, tr, got.theta(0), got.final_weights(), reference=2.0, p=1.0)
    assert bracket_search(3, strict, jump=2).answer == 0  # nothing reaches 2.0: judged against p x reference
    assert list(strict.kept) == [0]  # a level that fell below p keeps no weights


def test_early_bird_segments_equal_one_run_and_stop_once_the_mask_settles():
    cfg = TrainConfig(steps=40, lr=3e-3, batch_size=16)
    tr = Trainer(TASK, cfg)
    whole = make_toy_model()
    tr.train(whole)
    prunable = PrunableSpec()
    never = make_toy_model()
    eb = train_until_early_bird(tr, never, prunable, 0.5, interval=10, threshold=0.0, capture_at=[0, 15])
    assert not eb.settled and eb.step == 40 and [s for s, _ in eb.distances] == [20, 30, 40]
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), never.state_dict().values()))
    assert sorted(eb.captured) == [0, 15] and eb.captured[15].step == 15
    assert all(0 < d < 1 for _, d in eb.distances)  # the mask still moves while training goes on
    early = make_toy_model()
    eb = train_until_early_bird(tr, early, prunable, 0.5, interval=10, threshold=0.99)
    assert eb.settled and eb.step == 20 and len(eb.distances) == 1  # the first comparison already settles it
    weights = {n: p.detach() for n, p in select_prunable(early, prunable).items()}
    assert all(torch.equal(weights[n], eb.weights[n]) for n in weights)  # the model is left at the stop step
    assert abs(eb.mask.sparsity - 0.5) < 1e-3
    with pytest.raises(LtvlError, match="interval 50 is not in"):
        train_until_early_bird(tr, make_toy_model(), prunable, 0.5, interval=50, threshold=0.1)
    with pytest.raises(LtvlError, match="threshold 1.5"):
        train_until_early_bird(tr, make_toy_model(), prunable, 0.5, interval=10, threshold=1.5)


def test_mask_hamming_distance():
    a = Mask({"w": torch.tensor([True, True, False, False])})
    b = Mask({"w": torch.tensor([True, False, True, False])})
    assert a.hamming(a) == 0.0 and a.hamming(b) == 0.5 == b.hamming(a)
    with pytest.raises(LtvlError, match="does not exist"):
        a.hamming(Mask({"v": torch.tensor([True])}))


TOY_RECIPE = TrainConfig(steps=30, lr=3e-3, batch_size=16)  # its tickets beat dense up to 87%, not beyond


def _adaptive_spec(keep: float, jump: int = 3, start: int | None = None) -> ChainSpec:
    return ChainSpec(train=TOY_RECIPE, schedule=Schedule("adaptive", 0.4, 0.99, jump=jump, keep=keep, start=start))


def test_adaptive_schedule_chain_is_the_bracket_search_with_lineage_and_resumes(tmp_path):
    """``schedule: adaptive`` runs the bracket search as a chain: every try a round with its level,
    parent level and verdict, the same masks and metrics as the search, and a crash after a failed
    try (whose successor prunes from an older round's stored weights) resumes bit-identically."""
    keep = 1.0  # tickets must match dense
    spec = _adaptive_spec(keep)
    tr = Trainer(TASK, spec.train)
    chain = run_chain(spec, make_toy_model, tr.train, tr.evaluate, tmp_path / "a")
    got = ensure_dense(DenseStore(tmp_path / "a", DenseSpec.of(spec)), {0}, make_toy_model, tr.train, tr.evaluate)
    levels = ImpLevels(spec.sparsities(), make_toy_model, tr, got.theta(0), got.final_weights(),
                       chain.rounds[0].metrics["metric"], keep, seed=spec.train.seed)
    search = bracket_search(len(spec.sparsities()), levels, jump=3)
    tries = chain.rounds[1:]
    assert [(t.level, t.parent_level, t.kept) for t in tries] == [(t.level, t.parent, t.kept) for t in search.tries]
    assert [t.mask_sha256 for t in tries] == [t.mask_sha256 for t in search.tries]
    assert [t.metrics["metric"] for t in tries] == [t.metric for t in search.tries]
    assert any(t.kept for t in tries) and not all(t.kept for t in tries)
    assert tries[-1].next_level is None and tries[-1].next_mask_sha256 is None
    assert chain.rounds[0].next_level == 3 and tries[0].parent_sha256 == chain.rounds[0].mask_sha256
    best = max(t.level for t in tries if t.kept)
    assert best == search.answer and tries[0].sparsity == pytest.approx(1 - 0.6 ** 3, abs=1e-3)
    assert any(t.round > 1 and not tries[t.round - 2].kept and t.parent_level > 0 for t in tries), \
        "a try after a failure pruned from an older round's stored weights"
    # a re-run replays it; a crash right after a failed try resumes to the same records
    assert [r.replayed for r in run_chain(spec, make_toy_model, tr.train, tr.evaluate, tmp_path / "a").rounds] \
        == [True] * len(chain.rounds)
    failed = next(t.round for t in tries if not t.kept)
    calls = {"n": 0}

    def crashing(model, **kw):
        calls["n"] += 1
        if calls["n"] == failed + 1:  # dense = call 1, round r = call r + 1: the round after the failure
            raise RuntimeError("killed")
        return tr.train(model, **kw)

    with pytest.raises(RuntimeError, match="killed"):
        run_chain(spec, make_toy_model, crashing, tr.evaluate, tmp_path / "b")
    resumed = run_chain(spec, make_toy_model, tr.train, tr.evaluate, tmp_path / "b")
    assert [r.record() for r in resumed.rounds[failed + 1:]] != [] and \
        [(r.mask_sha256, r.metrics, r.kept, r.level) for r in resumed.rounds] == \
        [(r.mask_sha256, r.metrics, r.kept, r.level) for r in chain.rounds]


@pytest.mark.parametrize("keeps_up_to, start, expected", [
    (10, 10, [10]),  # the lead's answer is the schedule's end and holds: one try
    (8, 10, [10, 9, 8]),  # down until one keeps p
    (8, 6, [6, 7, 8, 9]),  # up while they keep p, stopping at the first loss
    (0, 3, [3, 2, 1]),  # none does
])
def test_walk_level_goes_up_while_tickets_keep_p_and_down_until_one_does(keeps_up_to, start, expected):
    good, bad, tried = 0, None, []
    while (level := walk_level(good, bad, 10, start)) is not None:
        tried.append(level)
        good, bad = (level, bad) if level <= keeps_up_to else (good, level if bad is None else min(bad, level))
    assert tried == expected and good == keeps_up_to


def test_a_chain_with_masks_of_seed_walks_the_lead_s_masks_on_its_own_seed_and_resumes(tmp_path):
    """``masks_of_seed``: the chain prunes nothing itself. Each try trains the lead's mask for its
    level (the one the lead tried, else pruned from the lead's highest kept level below it) from
    this seed's own θ0, judged against this seed's own dense run; it walks one level at a time
    from the start level. Before the lead has settled it is refused; a re-run replays it."""
    from ltvl.core.lead_masks import LeadMasks

    lead_spec = ChainSpec(train=TOY_RECIPE, schedule=Schedule("adaptive", 0.4, 0.99, jump=3, keep=1.0))
    follower = ChainSpec(train=TrainConfig(steps=30, lr=3e-3, batch_size=16, seed=1),
                         schedule=Schedule("adaptive", 0.4, 0.99, jump=3, keep=1.0, start=2, masks_of_seed=0))
    tr0, tr1 = Trainer(TASK, lead_spec.train), Trainer(TASK, follower.train)
    with pytest.raises(LtvlError, match=r"the lead chain \(seed 0\) has not settled its search"):
        run_chain(follower, make_toy_model, tr1.train, tr1.evaluate, tmp_path)
    lead = run_chain(lead_spec, make_toy_model, tr0.train, tr0.evaluate, tmp_path)
    answer = max(r.level for r in lead.rounds[1:] if r.kept)
    follower = dataclasses.replace(follower, schedule=dataclasses.replace(follower.schedule, start=answer))
    chain = run_chain(follower, make_toy_model, tr1.train, tr1.evaluate, tmp_path)
    tries = chain.rounds[1:]
    masks = LeadMasks(tmp_path, follower)
    by_level = {r.level: r.mask_sha256 for r in lead.rounds[1:]}
    assert [t.mask_sha256 for t in tries] == [masks.mask_at(t.level).sha256 for t in tries]
    assert all(t.mask_sha256 == by_level[t.level] for t in tries if t.level in by_level)  # the lead's own tries
    lead_parent = {r.level: r.parent_level for r in lead.rounds[1:]}
    stored = [r.level for r in lead.rounds[1:] if r.kept and r.weights_sha256]  # kept levels it can prune from

    def source(level: int) -> int:  # the lead's own parent for a level it tried, else its closest stored level
        return lead_parent.get(level, max([k for k in stored if k < level], default=0))
    assert [t.parent_level for t in tries] == [source(t.level) for t in tries]
    good, bad = 0, None
    for t in tries:  # the walk from the lead's answer, judged against this seed's dense run
        assert t.level == walk_level(good, bad, len(follower.sparsities()), answer)
        assert t.kept == (t.metrics["metric"] >= chain.rounds[0].metrics["metric"])
        good, bad = (t.level, bad) if t.kept else (good, t.level if bad is None else min(bad, t.level))
    assert tries[-1].next_level is None and chain.rounds[0].dense_sha256 != lead.rounds[0].dense_sha256
    untried = next(lv for lv in range(1, len(follower.sparsities()) + 1) if lv not in by_level)
    assert masks.mask_at(untried).sha256 == LeadMasks(tmp_path, follower).mask_at(untried).sha256  # deterministic
    assert abs(masks.mask_at(untried).sparsity - follower.sparsities()[untried - 1]) < 1e-3
    assert [r.replayed for r in run_chain(follower, make_toy_model, tr1.train, tr1.evaluate, tmp_path).rounds] \
        == [True] * len(chain.rounds)
    with pytest.raises(LtvlError, match="masks_of_seed 0 needs schedule: adaptive with a start level"):
        Schedule("adaptive", 0.4, 0.99, masks_of_seed=0).validate()


def test_adaptive_schedule_with_jump_1_is_imp_with_early_abandonment(tmp_path):
    plain = ChainSpec(train=TOY_RECIPE, schedule=Schedule("geometric", 0.4, 0.99))
    tr = Trainer(TASK, plain.train)
    naive = run_chain(plain, make_toy_model, tr.train, tr.evaluate, tmp_path)
    dense_metric = naive.rounds[0].metrics["metric"]
    first_bad = next(r.round for r in naive.rounds[1:] if r.metrics["metric"] < dense_metric)
    assert 1 < first_bad < len(naive.rounds) - 1
    chain = run_chain(_adaptive_spec(1.0, jump=1), make_toy_model, tr.train, tr.evaluate, tmp_path)
    assert [r.mask_sha256 for r in chain.rounds] == [r.mask_sha256 for r in naive.rounds[:first_bad + 1]]
    assert [r.level for r in chain.rounds] == list(range(first_bad + 1)) and not chain.rounds[-1].kept


def test_adaptive_schedule_bad_input():
    with pytest.raises(LtvlError, match="adaptive jump 0 must be >= 1"):
        _adaptive_spec(0.99, jump=0).validate()
    with pytest.raises(LtvlError, match=r"adaptive keep 1.5 is outside \(0, 1\]"):
        _adaptive_spec(1.5).validate()
    with pytest.raises(LtvlError, match=r"adaptive start level 30 is not in \[1, 10\]"):
        _adaptive_spec(0.99, start=30).validate()
    with pytest.raises(LtvlError, match="100%-sparse control has one round"):
        ChainSpec(schedule=Schedule("adaptive", 0.3, 0.95), method="all").validate()


def test_seed_informed_holds_back_only_adaptive_siblings_and_controls_take_no_adaptive_knobs():
    from ltvl.plan.controls import control_chains
    from ltvl.plan.options import EarlyStop
    from ltvl.ray.informed import split_by_seed
    from ltvl.ray.stopping import BelowDenseStopper, check_early_stop

    def entry(**p):
        return {"kind": "chain", "params": {"schedule": "adaptive", "rate": 0.2, **p}}

    fam = [entry(seed=2), entry(seed=0), entry(seed=1)]
    other = [entry(seed=1, rate=0.5), entry(seed=1, start_level=3), {"kind": "chain", "params": {"seed": 1}},
             {"kind": "chain", "params": {"seed": 2}}]
    first, held = split_by_seed(fam + other)
    assert [e["params"]["seed"] for e in first] == [0, 1, 1, 1, 2]  # seed 0 leads; the lone / geometric ones run
    assert len(held) == 1 and held[0][0] is fam[1] and [e["params"]["seed"] for e in held[0][1]] == [1, 2]
    control = control_chains([{"schedule": "adaptive", "jump": 2, "keep": 0.9, "start_level": 3}])
    assert control == [{"method": "all"}]  # one round at 100%: no levels to search
    with pytest.raises(LtvlError, match="asha compares chains round by round"):
        check_early_stop(EarlyStop("asha"), [{"schedule": "adaptive"}])
    check_early_stop(EarlyStop("below_dense"), [{"schedule": "adaptive"}])
    assert not BelowDenseStopper(0.99)("t", {"round": 3, "dense_ratio": 0.5, "kept": False})  # a try, not a stop
    assert BelowDenseStopper(0.99)("t", {"round": 3, "dense_ratio": 0.5})


def test_seed_informed_is_a_checked_sweep_key():
    from ltvl.plan.config import load_config
    assert load_config("rewind_grid", None, ["seed_informed=true"]).options().seed_informed is True
    with pytest.raises(LtvlError, match="seed_informed must be bool"):
        load_config("rewind_grid", None, ["seed_informed=maybe"])
    assert load_config("rewind_grid", None, ["seed_informed=true", "share_masks=true"]).options().share_masks
    with pytest.raises(LtvlError, match="(?s)share_masks.*needs seed_informed"):
        load_config("rewind_grid", None, ["share_masks=true"])


def test_the_cost_bench_report_needs_only_its_results_and_names_them_when_missing(tmp_path):
    """``--report`` re-prints the tables without training or preparing data; with no results
    it says where it looked and how to get them. An early-bird interval longer than the dense
    run is refused before anything is prepared."""
    import json
    import subprocess
    import sys

    bench = str(Path(__file__).resolve().parents[1] / "bench" / "cost_to_ticket.py")
    env = {**os.environ, "LTVL_HOME": str(tmp_path / "home")}  # no data there: --report must not need it
    res = subprocess.run([sys.executable, bench, "--report", "--work", str(tmp_path / "none")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode != 0 and f"no results at {tmp_path / 'none' / 'results.json'}" in res.stderr
    assert "run the benchmark first" in res.stderr
    res = subprocess.run([sys.executable, bench, "--set", "steps=10", "--work", str(tmp_path / "eb")],
                         capture_output=True, text=True, env=env, timeout=120)  # refused before data or training
    assert res.returncode != 0 and "--eb-interval 20 is not in (0, steps=10]" in res.stderr, res.stderr[-500:]
    assert not (tmp_path / "home" / "data").exists()
    question = {"seeds": "0,1,2", "rate": 0.2, "target": 0.95, "rewind": 0, "p": 0.99, "set": []}
    for name, args in (("w2", {**question, "seeds": "0"}), ("w3", question)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"args": args, "results": {}, "wall_s": 9.0}))
    for flags, message in ((["--share-jump", "0"], "--share-jump 0 is out of range"),
                           (["--only", "naive,lucky"], "--only naive,lucky: unknown strategies ['lucky']"),
                           (["--only", "shared"], f"--only merges into {tmp_path / 'w' / 'results.json'}, which "
                                                  "does not exist"),
                           (["--only", "shared", "--seeds", "0,1", "--work", str(tmp_path / "w2")],
                            "answers another question (--seeds 0,"),
                           (["--only", "shared", "--work", str(tmp_path / "w3")],
                            "--only: no dense run of this recipe for seed 0")):
        res = subprocess.run([sys.executable, bench, "--work", str(tmp_path / "w"), *flags], capture_output=True,
                             text=True, env=env, timeout=120)  # all refused before data or training
        assert res.returncode != 0 and message in res.stderr, (flags, res.stderr[-500:])
    assert not (tmp_path / "home" / "data").exists()

    def search(seed, start, answer, tries):
        return {"seed": seed, "dense_metric": 0.8, "dense_steps": 10, "dense_wall_s": 1.0, "answer": answer,
                "start": start, "early_bird": {"step": 4, "settled": True, "distances": [[4, 0.01]]},
                "tries": [{"level": lv, "parent": pa, "kept": k, "steps": 10, "wall_s": 1.0} for lv, pa, k in tries]}

    levels = [{"level": k, "metric": m, "steps": 10, "wall_s": 1.0} for k, m in ((1, 0.81), (2, 0.80), (3, 0.70))]
    results = {"naive/0": {"seed": 0, "dense_metric": 0.8, "dense_steps": 10, "dense_wall_s": 1.0, "levels": levels,
                           "n_eval": 1000, "majority": 0.4}}
    for kind in ("adaptive", "eb"):
        results[f"{kind}/0"] = search(0, None, 2, [(2, 0, True), (3, 2, False)])
    args = {"seeds": "0", "rate": 0.5, "target": 0.875, "p": 0.99, "jump": 2}
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "results.json").write_text(json.dumps({"args": args, "results": results, "wall_s": 9.0}))
    res = subprocess.run([sys.executable, bench, "--report", "--work", str(tmp_path / "w")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    # naive: 10 + 3 x 10 steps; the search: 10 + 2 x 10; answers L2 both
    last = res.stdout.strip().splitlines()[-1]
    assert last == "cost-to-ticket steps ratio = 0.75 (answers within one level: 1/1 seeds)"
    assert not (tmp_path / "home" / "data").exists()  # nothing prepared
    results["shared/0"] = {**search(0, None, 2, [(2, 0, True)]), "lead": None}  # the sweep's share_masks row
    (tmp_path / "w" / "results.json").write_text(json.dumps({"args": {**args, "share_jump": 2}, "results": results,
                                                              "wall_s": 9.0}))
    res = subprocess.run([sys.executable, bench, "--report", "--work", str(tmp_path / "w")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout.strip().splitlines()
    assert "shared masks (jump 2)" in out[-2] and out[-1] == \
        "cost-to-ticket steps ratio = 0.50 (answers within one level: 1/1 seeds)"  # 10 + 1 x 10 of naive's 40


@pytest.mark.parametrize("probe, flags", [
    ("eb_rounds_probe.py", (("--hop", "0"), ("--interval", "0"), ("--threshold", "1.5"), ("--procs", "0"))),
])
def test_a_cost_probe_refuses_bad_flags_missing_results_and_a_recipe_without_the_bench_s_dense_runs(
        tmp_path, probe, flags):
    """The probes reuse the cost bench's dense runs and naive answers: each bad input is refused,
    naming what and how to fix it, before any data is prepared or anything trains."""
    import json
    import subprocess
    import sys

    probe = str(Path(__file__).resolve().parents[1] / "bench" / probe)
    env = {**os.environ, "LTVL_HOME": str(tmp_path / "home")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, probe, *args], capture_output=True, text=True, env=env, timeout=120)

    for flag, value in flags:
        res = run(flag, value)
        assert res.returncode != 0 and f"{flag} {value} is out of range" in res.stderr, res.stderr[-500:]
    res = run("--work", str(tmp_path / "none"))
    assert res.returncode != 0 and f"no cost bench results at {tmp_path / 'none' / 'results.json'}" in res.stderr
    assert "run bench/cost_to_ticket.py first" in res.stderr
    (tmp_path / "w").mkdir()
    args = {"seeds": "0,1", "rate": 0.5, "target": 0.875, "p": 0.99, "rewind": 0, "set": ["steps=20"]}
    (tmp_path / "w" / "results.json").write_text(json.dumps({"args": args, "results": {}}))
    res = run("--work", str(tmp_path / "w"))
    assert res.returncode != 0 and "no dense run of this recipe for seed 0" in res.stderr, res.stderr[-500:]
    assert "it used --set ['steps=20']" in res.stderr
    assert not (tmp_path / "home" / "data").exists()  # refused before preparing anything
