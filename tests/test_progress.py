"""Live progress: the worker's progress file and the driver's board, without Ray."""
import io
import re

from rich.console import Console

from ltvl.core.progress import RoundProgress, read_progress
from ltvl.ray.board import DONE, RUNNING, WAITING, ProgressBoard, Row


class Clock:
    def __init__(self, t=1_000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_progress_file_is_throttled_and_counts_steps_across_rounds(tmp_path):
    clock = Clock()
    path = tmp_path / "progress.json"
    prog = RoundProgress(path, [0.0, 0.5, 0.75], steps=100, rewind_step=20, interval_s=10, clock=clock)
    prog.begin(0, 100)  # the dense run
    first = read_progress(path)
    assert (first.round, first.rounds, first.step, first.chain_step) == (0, 3, 0, 0)
    for step in range(1, 50):
        clock.t += 0.1
        prog.step(step, 2.0)
    assert read_progress(path).step == 0  # 4.9 s: not written yet
    clock.t += 5.2
    prog.step(50, 1.0)
    snap = read_progress(path)
    assert snap.step == 50 and abs(snap.steps_per_s - 50 / 10.1) < 1e-3
    assert abs(snap.train_loss - (49 * 2.0 + 1.0) / 50) < 1e-9  # mean of the steps since the last reading
    prog.finished(0)
    prog.begin(20, 100)  # round 1 from θi (step 20)
    clock.t += 1
    prog.step(100, 0.5)  # the last step is always written
    snap = read_progress(path)
    assert (snap.round, snap.sparsity, snap.step, snap.chain_step) == (1, 0.5, 100, 100 + 80)
    assert snap.fraction == 1.0


def test_board_counts_chains_estimates_eta_and_prints_plain_timestamped_lines(tmp_path):
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    board = ProgressBoard(console, live=False)
    board.started = 0.0
    clock = Clock(100.0)
    rows = [Row(f"chain:{i}", f"IMP · vqa · rate 0.5 · seed {i}", "chains", [0.0, 0.5, 0.75], [0, 80, 80],
                tmp_path / f"{i}.json") for i in range(3)]
    board.plan(rows)
    assert board.counts()[WAITING] == 3
    board.started_row("chain:0")
    board.round_done("chain:0", 0, 0.8)
    prog = RoundProgress(tmp_path / "0.json", [0.0, 0.5, 0.75], 100, 20, interval_s=1, clock=clock)
    prog.finished(0)
    prog.begin(20, 100)
    clock.t += 10
    prog.step(60, 0.7)  # 40 steps in 10 s: 4 steps/s
    assert [r.key for r, _ in board.poll()] == ["chain:0"]
    row = board.rows["chain:0"]
    assert row.state == RUNNING and row.remaining_steps() == 40 + 80
    assert board.chain_eta(row) == 30.0
    # every unfinished chain's steps over the running chains' rate: (120 + 160 + 160) / 4
    assert board.sweep_eta() == 110.0
    lines = board.status_lines(now=1_000.0, every=60)
    assert lines[0].startswith("IMP · vqa · rate 0.5 · seed 0  round 1/2 → 50.0%  step 60/100  4.00 steps/s")
    assert "ETA 30 s" in lines[0] and lines[-1].startswith("trials: 0 done · 1 running · 2 waiting of 3")
    assert board.status_lines(now=1_030.0, every=60) == []  # each chain speaks at most once a minute
    for line in lines:
        board.say(line)
    out = buf.getvalue()
    assert "\x1b[" not in out  # no ANSI codes in logs
    assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in out.splitlines())
    board.round_done("chain:0", 1, 0.79)
    board.round_done("chain:0", 2, 0.70)
    board.finished("chain:0", DONE)
    board.finished("chain:1", DONE)  # ended with rounds missing (an early stopper): not "done"
    assert board.rows["chain:0"].state == DONE and board.rows["chain:1"].state == "stopped"


def test_an_adaptive_chain_s_eta_is_shown_as_an_upper_bound(tmp_path):
    """Its tries end once the answer is settled, so 'every level' is a maximum, not a forecast."""
    board = ProgressBoard(Console(file=io.StringIO(), force_terminal=False, width=200), live=False)
    board.started = 0.0
    clock = Clock(100.0)
    levels = [0.0, 0.2, 0.36, 0.488, 0.59]
    board.plan([Row("chain:s", "IMP (adaptive) · vqa · rate 0.2 · seed 0", "chains", levels, [0, 80, 80, 80, 80],
                    tmp_path / "s.json", search=True)])
    board.round_done("chain:s", 0, 0.8)
    prog = RoundProgress(tmp_path / "s.json", levels, 100, 20, interval_s=1, clock=clock)
    prog.finished(0)
    prog.begin(20, 100)
    clock.t += 10
    prog.step(60, 0.7)  # 4 steps/s, 40 + 3 x 80 steps left at most
    board.poll()
    lines = board.status_lines(now=1_000.0, every=60)
    assert "ETA ≤ 1 min 10 s" in lines[0] and "sweep ETA ≤ 1 min 10 s" in lines[-1]
    board.round_done("chain:s", 2, 0.7)
    board.finished("chain:s", DONE)  # settled after two tries: done, not "stopped"
    assert board.rows["chain:s"].state == DONE
    assert "sweep ETA ≈" in board.headline()  # nothing left that searches


def test_quiet_stdout_drops_only_the_named_noise():
    from ltvl.sweep.main import DroppingLines
    buf = io.StringIO()
    out = DroppingLines(buf, ("PYTHON worker processes have been started on node",))
    out.write("(raylet) WARNING: 8 PYTHON worker processes have been started on node: abc …\n")
    out.write("IMP · vqa  round 1 at 50.0%\n")
    assert buf.getvalue() == "IMP · vqa  round 1 at 50.0%\n"


def test_quiet_libraries_quiets_only_while_the_sweep_runs(monkeypatch):
    import logging
    import os
    import sys

    import mlflow  # noqa: F401 - imported already in a sweep driver

    from ltvl.sweep.main import quiet_libraries
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    before = logging.getLogger("mlflow").level
    stdout = sys.stdout
    with quiet_libraries():
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0" and os.environ["RAY_COLOR_PREFIX"] == "0"
        assert logging.getLogger("mlflow").level == logging.ERROR  # set after mlflow configured itself
        assert logging.getLogger("mlflow.store.db.utils").getEffectiveLevel() == logging.ERROR
        assert sys.stdout is not stdout
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ and sys.stdout is stdout
    assert logging.getLogger("mlflow").level == before


def test_terminal_table_shows_every_chain_with_round_and_eta(tmp_path):
    buf = io.StringIO()
    board = ProgressBoard(Console(file=buf, width=160, force_terminal=True), live=True)
    board.plan([Row("dense:x", "dense · vqa · seed 0 (shared by 2 chains)", "dense", [0.0], [100]),
                Row("chain:a", "IMP · vqa · rate 0.5 · seed 0", "chains", [0.0, 0.5], [0, 80])])
    board.started_row("dense:x")
    board.console.print(board.table())
    out = buf.getvalue()
    assert "trials: 0 done · 1 running · 1 waiting of 2" in out
    assert "dense · vqa · seed 0" in out and "IMP · vqa · rate 0.5 · seed 0" in out and "waiting  0/1" in out


def test_a_bad_progress_interval_is_refused_before_anything_runs(monkeypatch, capsys):
    """Both knobs are read by the sweep driver before any trial (a worker would only meet a bad
    LTVL_PROGRESS_S halfway through the sweep)."""
    from pathlib import Path

    import pytest

    from ltvl.core.progress import seconds_from_env
    from ltvl.sweep.main import main
    from ltvl.util.errors import LtvlError

    monkeypatch.delenv("LTVL_PROGRESS_S", raising=False)
    assert seconds_from_env("LTVL_PROGRESS_S", 10.0) == 10.0
    for bad in ("abc", "0", "-5", "inf", "nan"):
        monkeypatch.setenv("LTVL_PROGRESS_S", bad)
        with pytest.raises(LtvlError, match=rf"LTVL_PROGRESS_S='{bad}' is not a positive number of seconds"):
            seconds_from_env("LTVL_PROGRESS_S", 10.0)
    monkeypatch.setenv("LTVL_PROGRESS_S", "2.5")
    assert seconds_from_env("LTVL_PROGRESS_S", 10.0) == 2.5
    monkeypatch.setenv("LTVL_PROGRESS_LOG_S", "soon")
    configs = Path(__file__).resolve().parents[1] / "sweeps" / "configs"
    assert main("rewind_grid", ["--dry-run", "--set", "params.preset=tiny"], config_dir=configs) == 2
    err = capsys.readouterr().err
    assert "LTVL_PROGRESS_LOG_S='soon' is not a positive number of seconds" in err and "unset it (60 s)" in err
