"""A verdict on every ticket, with its uncertainty: matching, relaxed, within noise of the p line,
no better than random pruning, below a control; and the range an answer can take within noise."""

import math

import pytest

from ltvl.core.verdict import Estimate, plausible_answers, verdict

N = 1000  # the main job's evaluated questions


def one(m: float, n: float = N) -> Estimate:
    return Estimate.of([m], n)


def test_estimates_use_seeds_when_there_are_several_and_the_binomial_error_otherwise():
    single = one(0.75)
    assert single.se == pytest.approx(math.sqrt(0.75 * 0.25 / N)) and single.seeds == 1
    seeds = Estimate.of([0.70, 0.72, 0.74], N)
    assert seeds.mean == pytest.approx(0.72) and seeds.se == pytest.approx(0.02 / math.sqrt(3))
    assert math.isnan(Estimate.of([0.7]).se)  # no example count: its noise is unknown, not zero


def test_a_ticket_no_better_than_random_pruning_is_called_so():
    v = verdict(0.75, one(0.745), one(0.766), 0.99, random=one(0.735))
    assert v.beats_random is False and "no better than random pruning" in v.words()
    clear = verdict(0.75, one(0.761), one(0.766), 0.99, random=one(0.66))
    assert clear.beats_random is True and "no better than random pruning" not in clear.words()


def test_a_ticket_within_noise_of_the_line_says_so_on_either_side():
    line = 0.99 * 0.766
    above = verdict(0.75, one(line + 0.002), one(0.766), 0.99)
    below = verdict(0.75, one(line - 0.002), one(0.766), 0.99)
    assert above.relaxed and not below.relaxed  # the threshold test flips on 2 questions in 1,000 ...
    assert above.near_line and below.near_line  # ... and the verdict says both sit in the noise
    assert "within noise of the 99% line" in below.words()
    tight = verdict(0.75, Estimate.of([0.80, 0.801, 0.799]), Estimate.of([0.766, 0.767, 0.765]), 0.99)
    assert tight.relaxed and not tight.near_line  # three seeds that agree: clear of the line


def test_matching_means_not_below_dense_beyond_noise_and_controls_come_first():
    assert verdict(0.5, one(0.755), one(0.766), 0.99).matching
    far = verdict(0.9, one(0.70), one(0.766), 0.99)
    assert not far.matching and not far.relaxed and far.words()[0] == "below 99% of dense"
    dud = verdict(0.99, one(0.365), one(0.766), 0.99, controls=[one(0.37), one(0.35)])
    assert dud.above_controls is False and dud.words()[0] == "below a control"
    assert "-40.1 ±" in dud.label()


def test_the_main_jobs_answer_is_anywhere_from_dense_to_87_5_percent_within_noise():
    imp = [(0.5, one(0.773)), (0.75, one(0.761)), (0.875, one(0.752))]
    assert plausible_answers(imp, one(0.766), 0.99) == (0.0, 0.875)
    exact = [(s, one(e.mean, 1e9)) for s, e in imp]  # with a billion questions the noise is gone
    assert plausible_answers(exact, one(0.766, 1e9), 0.99) == (0.75, 0.75)


def test_the_sweep_summary_states_each_answers_uncertainty():
    from ltvl.sweep.summary import ChainSummary, uncertainty_lines

    def row(name, arm, metrics):
        return ChainSummary("k", name, "vqa", arm, "done", 4,
                            [(0, 0.0, 0.766)] + [(i + 1, s, m) for i, (s, m) in enumerate(metrics)],
                            0.766, 0.37, float(N), "dense1", 0.35)

    rows = [row("IMP · vqa", "IMP", [(0.5, 0.773), (0.75, 0.761), (0.875, 0.752)]),
            row("RP · vqa", "RP", [(0.5, 0.75), (0.75, 0.72), (0.875, 0.659)]),
            row("100%-sparse control · vqa", "100%-sparse control", [(1.0, 0.35)])]
    lines = uncertainty_lines(rows, 0.99)
    assert lines[0].startswith("Uncertainty: a difference counts beyond 2 standard errors")
    assert "1.6 pts on 1,000 examples" in lines[0]
    assert ("IMP · vqa: keeps 99% of dense up to 75.0%; within noise the answer could be anywhere from 0.0% to "
            "87.5%. At 75.0%: matching, within noise of the 99% line (-0.5 ± 3.8 pts vs dense)") in lines
    assert any(line.startswith("RP · vqa: no round keeps 99% of dense") for line in lines)
    assert not any("control ·" in line for line in lines)  # a control is not a ticket


def test_mlflow_records_carry_the_answers_range_and_each_rounds_verdict():
    from ltvl.tracking.records import chain_progress, verdict_tag

    history = [(0, 0.0, 0.766), (1, 0.5, 0.773), (2, 0.75, 0.761), (3, 0.875, 0.752)]
    got = chain_progress(history, 0.99, N)
    assert got["best_sparsity_p99"] == 0.75
    assert (got["best_sparsity_p99_low"], got["best_sparsity_p99_high"]) == (0.0, 0.875)
    assert set(chain_progress([], 0.99)) == set(got)  # the same keys before any round
    tag = verdict_tag(history, 2, 0.99, N)["ltvl.verdict"]
    assert tag == "matching, within noise of the 99% line (-0.5 ± 3.8 pts vs dense)"
    assert verdict_tag(history, 0, 0.99, N) == {}  # the dense run is no ticket
