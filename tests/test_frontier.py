"""The frontier (#33 item 3): best arm per sparsity with its cost, sparsest subnetwork per budget,
and the benchmark's headline, recomputed from a hand-made set of rounds."""

import math

import pandas as pd

from ltvl.report import frontier


def rnd(key, line, rounds, steps=300, rewind=0, finetune=False, seed=0):
    """rounds: [(round, sparsity, metric, steps_trained)]"""
    return [{"chain_key": key, "task": "vqa", "line": line, "seed": seed, "round": r, "sparsity": s, "metric": m,
             "steps": steps, "rewind_step": rewind, "finetune": finetune, "steps_trained": st}
            for r, s, m, st in rounds]


ROUNDS = pd.DataFrame(
    rnd("chain:imp", "IMP", [(0, 0.0, 0.80, 300), (1, 0.5, 0.80, 300), (2, 0.75, 0.78, 300)])
    + rnd("chain:imp30", "IMP θi@30", [(0, 0.0, 0.80, 0), (1, 0.5, 0.79, 270), (2, 0.75, 0.77, 0)], rewind=30)
    + rnd("chain:os", "one-shot", [(0, 0.0, 0.80, 0), (1, 0.75, 0.70, 300)])
    + rnd("chain:pft", "prune + fine-tune", [(0, 0.0, 0.80, 0), (1, 0.75, 0.79, math.nan)], finetune=True)
    + rnd("chain:rp", "RP", [(0, 0.0, 0.80, 0), (1, 0.5, 0.75, 300), (2, 0.75, 0.60, 300)])
    + rnd("chain:ctl", "100%-sparse control", [(0, 0.0, 0.80, 0), (1, 1.0, 0.35, 300)])
    + rnd("ticket:x", "θ''0", [(1, 0.75, 0.5, 300)]))
DENSE = pd.DataFrame([{"task": "vqa", "seed": 0, "metric": 0.80, "n": 1000.0}])


def test_costs_count_the_dense_run_and_every_pruned_round_so_far():
    c = frontier.with_costs(ROUNDS).set_index(["chain_key", "round"])["cost"]
    assert c[("chain:imp", 1)] == 600 and c[("chain:imp", 2)] == 900
    assert c[("chain:imp30", 2)] == 300 + 270 + 270  # a missing count falls back to the recipe: t - i
    assert c[("chain:pft", 1)] == 600  # a fine-tuned round is its whole t
    assert ("chain:ctl", 1) not in c.index and ("ticket:x", 1) not in c.index  # controls and tickets are no arms


def test_the_best_arm_per_sparsity_says_its_cost_and_whether_it_is_ahead_beyond_noise():
    pts = frontier.points(ROUNDS, {"vqa": 1000.0})
    best = frontier.best_by_sparsity(pts).set_index("sparsity")
    at75 = best.loc["75.0%"]
    assert at75["best arm"] == "prune + fine-tune" and at75["steps"] == 600 and at75[frontier.RATIO] == "0.67"
    se = math.sqrt(0.79 * 0.21 / 1000)
    assert at75["metric"] == f"0.7900 ± {se:.4f} (n=1)"
    assert at75["runner-up"].startswith("IMP (0.7800")
    assert at75["ahead beyond noise"].startswith("no (+1.0 ± 3.7 pts)")  # 1 point apart, within two SE
    assert best.loc["50.0%"]["best arm"] == "IMP"
    line, noise = frontier.headline(pts, 0.75)
    assert line == f"at 75.0% best arm = prune + fine-tune (metric 0.7900 ± {se:.4f} (n=1), 0.67× IMP's training steps)"
    assert "ahead beyond noise: no" in noise


def test_the_sparsest_subnetwork_within_each_budget():
    b = frontier.sparsest_by_budget(ROUNDS, DENSE, 0.97).set_index("budget (steps)")
    assert list(b.index) == [570, 600, 840, 900]
    assert b.loc[570]["sparsest keeping p"] == "50.0%" and b.loc[570]["arm"] == "IMP θi@30"
    assert b.loc[600]["sparsest keeping p"] == "75.0%" and b.loc[600]["arm"] == "prune + fine-tune"
    strict = frontier.sparsest_by_budget(ROUNDS, DENSE, 1.0).set_index("budget (steps)")
    assert strict.loc[570]["sparsest keeping p"] == "none" and strict.loc[600]["arm"] == "IMP"


def test_every_arm_gets_a_verdict_with_its_noise():
    dense = DENSE.assign(majority=0.30)
    pts = frontier.points(ROUNDS, {"vqa": 1000.0})
    v = frontier.verdicts(pts, ROUNDS, dense, 0.99, {"vqa": 1000.0}).set_index(["sparsity", "arm"])["verdict"]
    assert v[("75.0%", "RP")].startswith("below 99% of dense (-20.0 ±")  # RP is not judged against itself
    assert v[("75.0%", "one-shot")].startswith("below 99% of dense")  # 0.70: beats RP's 0.60 beyond noise
    assert v[("75.0%", "prune + fine-tune")].startswith("matching, within noise of the 99% line")
    assert v[("50.0%", "IMP")].startswith("matching")
    low = frontier.verdicts(pts, ROUNDS.assign(metric=ROUNDS["metric"].where(ROUNDS["line"] != "100%-sparse control",
                                                                              0.79)), dense, 0.99, {"vqa": 1000.0})
    low = low.set_index(["sparsity", "arm"])["verdict"]  # a control that scores 0.79: RP's 0.60 is below it
    assert low[("75.0%", "RP")].startswith("below a control, below 99% of dense")
    assert low[("75.0%", "one-shot")].startswith("below a control, below 99% of dense")  # yet clearly above RP
