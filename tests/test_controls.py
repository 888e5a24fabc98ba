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
    assert "⚠ IMP · vqa · seed 2: its dense run (0.3700) does not beat the majority-answer control (0.3700)" in out
    assert "IMP · vqa · seed 0:" not in out  # only the stuck one is flagged
    assert "0.3700 ⚠" in out
