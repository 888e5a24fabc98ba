"""MLflow lineage records: idempotent replays, mask artifacts, lineage walks, outages — against a
real sqlite store and a real `mlflow server`."""
import os
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from ltvl.params.resolve import resolve
from ltvl.pruning import Mask, load_mask, prune_to_sparsity, save_mask
from ltvl.tracking.lineage_tree import ancestry
from ltvl.tracking.mlflow_lineage import LineageTracker
from ltvl.tracking.records import chain_ops, dense_ops, round_op
from ltvl.tracking.spool import Spool
from ltvl.util.errors import LtvlError

PARAMS = {"task": "vqa", "preset": "tiny", "rewind_step": 2, "rate": 0.5, "steps": 10}


def _masks(tmp_path):
    torch.manual_seed(0)
    w = {"a": torch.randn(8, 8), "b": torch.randn(16)}
    m0 = Mask.dense_like(w)
    m1 = prune_to_sparsity(w, m0, 0.5)
    m2 = prune_to_sparsity(w, m1, 0.75)
    paths = []
    for m in (m0, m1, m2):
        p = tmp_path / "masks" / f"{m.sha256}.mask.safetensors"
        save_mask(m, p)
        paths.append(str(p))
    return [m0, m1, m2], paths


def _ops(tmp_path, chain="c" * 64, dense="d" * 64):
    masks, paths = _masks(tmp_path)
    ops = dense_ops(dense, resolve(PARAMS), {"metric": 0.8}) + chain_ops(f"chain:{chain}", resolve(PARAMS), dense)
    for r, (m, p) in enumerate(zip(masks, paths)):
        result = {"round": r, "sparsity": m.sparsity, "metric": 0.8 - 0.1 * r, "train_loss": 1.0, "wall_s": 2.0,
                  "dense_ratio": (0.8 - 0.1 * r) / 0.8, "mask_sha256": m.sha256, "parent_sha256": m.parent or ""}
        ops.append(round_op(f"chain:{chain}", resolve(PARAMS), result, dense, p))
    return ops, masks


def _check_experiment(uri, name, masks, tmp_path):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    kinds = sorted(r.data.tags["ltvl.kind"] for r in runs)
    assert kinds == ["chain", "dense", "round", "round", "round"]  # no duplicates
    chain = next(r for r in runs if r.data.tags["ltvl.kind"] == "chain")
    assert chain.data.params["rewind_step"] == "2" and chain.data.tags["ltvl.init"] == "theta_i"
    dense = next(r for r in runs if r.data.tags["ltvl.kind"] == "dense")
    assert chain.data.tags["ltvl.dense_run_id"] == dense.info.run_id
    history = client.get_metric_history(chain.info.run_id, "metric")
    assert sorted((m.step, round(m.value, 6)) for m in history) == [(0, 0.8), (1, 0.7), (2, 0.6)]
    for r in (r for r in runs if r.data.tags["ltvl.kind"] == "round"):
        assert r.data.tags["mlflow.parentRunId"] == chain.info.run_id
        sha = r.data.tags["ltvl.mask_sha256"]
        local = client.download_artifacts(r.info.run_id, f"mask/{sha}.mask.safetensors", str(tmp_path / "dl"))
        assert load_mask(local).sha256 == sha  # the artifact verifies against its hash
    walk = ancestry(uri, masks[2].sha256)
    assert [a.round for a in walk] == [2, 1, 0, None] and walk[-1].kind == "dense"
    assert walk[-1].run_id == dense.info.run_id


def test_records_are_idempotent_and_lineage_walks_to_dense(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = LineageTracker(uri, "exp", "rewind_grid", tmp_path / "spool.jsonl")
    tracker.connect()
    ops, masks = _ops(tmp_path)
    for op in ops + ops:  # a replay after a crash sends everything again
        tracker.record(op)
    fresh = LineageTracker(uri, "exp", "rewind_grid", tmp_path / "spool.jsonl")  # a restarted driver
    fresh.connect()
    for op in ops:
        fresh.record(op)
    _check_experiment(uri, "exp", masks, tmp_path)
    with pytest.raises(LtvlError, match="holds a 'rewind_grid' sweep, this is a 'transfer' sweep"):
        LineageTracker(uri, "exp", "transfer", tmp_path / "s2").connect()


def test_unreachable_tracking_uri_fails_before_anything_runs(tmp_path):
    from tests.mlflow_server import free_port
    tracker = LineageTracker(f"http://127.0.0.1:{free_port()}", "exp", "rewind_grid", tmp_path / "spool.jsonl")
    with pytest.raises(LtvlError, match=r"MLflow at http://127.0.0.1:\d+ did not answer \(.*refused"):
        tracker.connect()


@pytest.mark.long
def test_server_outage_spools_records_and_delivers_them_when_it_returns(tmp_path):
    """Through the driver's sender thread: while the server is down, handing records over never
    waits on the network; when it is back, everything goes out in order, once."""
    from ltvl.tracking.sender import LineageSender
    from tests.mlflow_server import MlflowServer
    server = MlflowServer(tmp_path / "server").start()
    said: list[str] = []
    try:
        tracker = LineageTracker(server.uri, "exp", "rewind_grid", tmp_path / "spool.jsonl")
        tracker.connect()
        sender = LineageSender(tracker, say=said.append, max_backoff_s=0.5).start()
        ops, masks = _ops(tmp_path)
        sender.submit(ops[:4])
        deadline = time.monotonic() + 60
        while len(tracker.spool) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(tracker.spool) == 0
        server.crash()  # the server goes away mid-sweep
        t = time.monotonic()
        for op in ops[4:]:
            sender.submit([op])  # what Tune's event loop does: must not wait on the dead server
        assert time.monotonic() - t < 1.0
        time.sleep(2)
        assert len(tracker.spool) == len(ops) - 4  # nothing lost, nothing sent
        assert sum("is not answering" in m for m in said) == 1  # said once, not per record
        server.start()
        assert sender.close(timeout_s=60) == 0 and not (tmp_path / "spool.jsonl").exists()
        assert sum("answers again" in m for m in said) == 1
        _check_experiment(server.uri, "exp", masks, tmp_path)
    finally:
        server.stop()


def test_spool_survives_a_torn_line_and_a_lost_count(tmp_path):
    """A driver killed mid-append leaves half a line; one killed between sending and counting
    leaves the count behind. Neither loses or duplicates a record in MLflow."""
    from ltvl.tracking.spool import Spool
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ops, masks = _ops(tmp_path)
    spool = Spool(tmp_path / "spool.jsonl")
    spool.append(ops)
    tracker = LineageTracker(uri, "exp", "rewind_grid", tmp_path / "spool.jsonl")
    tracker.connect()  # sends everything
    assert not spool.path.exists() and not spool.sent_path.exists()
    spool = Spool(tmp_path / "spool.jsonl")
    spool.append(ops)  # the same records again, as a killed driver that never counted them
    with spool.path.open("a") as f:
        f.write('{"op": "run", "key": "chain:torn')  # killed mid-write
    again = LineageTracker(uri, "exp", "rewind_grid", tmp_path / "spool.jsonl")
    assert again.pending() == len(ops)  # the torn line is not a record
    again.spool.append([{"op": "end", "key": "dense:" + "d" * 64, "status": "FINISHED"}])  # not glued onto it
    assert Spool(tmp_path / "spool.jsonl").pending_records()[-1]["op"] == "end"
    again.connect()
    assert again.pending() == 0
    _check_experiment(uri, "exp", masks, tmp_path)  # still one run per record, complete


def test_damage_inside_the_spool_is_named_and_drops_nothing(tmp_path):
    """Only a torn *last* line is a killed append; a bad line with records behind it is damage, and
    skipping it would silently lose them."""
    from ltvl.tracking.spool import Spool
    ops, _ = _ops(tmp_path)
    Spool(tmp_path / "spool.jsonl").append(ops)
    lines = (tmp_path / "spool.jsonl").read_text().splitlines()
    lines[2] = lines[2][:20]
    (tmp_path / "spool.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(LtvlError, match=rf"line 3 of {len(ops)} is not a lineage record") as e:
        LineageTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", "rewind_grid", tmp_path / "spool.jsonl")
    assert str(tmp_path / "spool.jsonl") in str(e.value)
    assert len((tmp_path / "spool.jsonl").read_text().splitlines()) == len(ops)  # left as it was


def test_a_record_that_can_never_go_through_does_not_block_the_next_run(tmp_path, capsys):
    """The synchronous path (a sweep's start, `ltvl lineage --sync`) sets it aside like the sender."""
    from ltvl.tracking.spool import Spool
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ops, masks = _ops(tmp_path)
    Spool(tmp_path / "spool.jsonl").append([{"op": "teleport", "key": "x"}, *ops])
    tracker = LineageTracker(uri, "exp", "rewind_grid", tmp_path / "spool.jsonl")
    tracker.connect()
    assert tracker.pending() == 0 and "refused record x" in capsys.readouterr().err
    assert "teleport" in (tmp_path / "spool.rejected.jsonl").read_text()
    _check_experiment(uri, "exp", masks, tmp_path)


def test_a_silent_server_never_holds_up_the_sender_s_caller(tmp_path):
    """A server that accepts and never answers: each send waits for the HTTP timeout in the sender
    thread; the caller's hand-over stays a local append."""
    import socket

    from ltvl.tracking.sender import LineageSender
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = LineageTracker(uri, "exp", "rewind_grid", tmp_path / "spool.jsonl")
    tracker.connect()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    from mlflow import MlflowClient
    tracker.client = MlflowClient(tracking_uri=f"http://127.0.0.1:{srv.getsockname()[1]}")  # the server hangs
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"], old = "3", os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT")
    try:
        tracker._ids.clear()
        sender = LineageSender(tracker, say=lambda m: None).start()
        ops, _ = _ops(tmp_path)
        t = time.monotonic()
        for op in ops:
            sender.submit([op])
        assert time.monotonic() - t < 1.0
        assert sender.close(timeout_s=1) == len(ops)  # bounded: kept for the next run, not waited on forever
    finally:
        srv.close()
        if old is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_TIMEOUT", None)
        else:
            os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = old


def test_lineage_command_prints_the_tree(tmp_path):
    from typer.testing import CliRunner

    from ltvl.cli import app
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = LineageTracker(uri, "exp", "rewind_grid", tmp_path / "spool.jsonl")
    tracker.connect()
    ops, masks = _ops(tmp_path)
    for op in ops:
        tracker.record(op)
    res = CliRunner().invoke(app, ["lineage", masks[2].sha256[:12], "--tracking-uri", uri], terminal_width=200)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "dense run" in lines[0]
    order = [next(i for i, line in enumerate(lines) if m.sha256[:16] in line) for m in masks]
    assert order == sorted(order)  # dense → round 0 → round 1 → round 2
    res = CliRunner().invoke(app, ["lineage", "deadbeef00", "--tracking-uri", uri])
    assert res.exit_code != 0 and "no round run has mask deadbeef00" in str(res.exception or res.output)


def test_lineage_sync_sends_what_a_sweep_left_in_its_spool(tmp_path):
    """A sweep that ended while MLflow was down leaves its records in the spool (exit code 3);
    `ltvl lineage --sync` sends them later, in order, once."""
    from typer.testing import CliRunner

    from ltvl.cli import app
    from ltvl.tracking.spool import Spool
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    LineageTracker(uri, "exp", "rewind_grid", tmp_path / "other.jsonl").connect()  # the sweep's experiment
    ops, masks = _ops(tmp_path)
    Spool(tmp_path / "spool.jsonl").append(ops)
    res = CliRunner().invoke(app, ["lineage", "--sync", str(tmp_path / "spool.jsonl"), "--experiment", "exp",
                                   "--tracking-uri", uri])
    assert res.exit_code == 0 and "all records sent" in res.output, res.output
    assert not (tmp_path / "spool.jsonl").exists()
    _check_experiment(uri, "exp", masks, tmp_path)


def test_a_record_mlflow_can_never_take_is_set_aside_not_blocking_the_rest(tmp_path):
    """A spooled record of an unknown kind (another ltvl version wrote it) is kept beside the spool
    and reported; the records behind it still go out."""
    from ltvl.tracking.sender import LineageSender
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = LineageTracker(uri, "exp", "rewind_grid", tmp_path / "spool.jsonl")
    tracker.connect()
    said: list[str] = []
    sender = LineageSender(tracker, say=said.append).start()
    ops, masks = _ops(tmp_path)
    sender.submit([{"op": "teleport", "key": "x"}, *ops])
    assert sender.close(timeout_s=30) == 0
    rejected = (tmp_path / "spool.rejected.jsonl").read_text()
    assert "unknown tracking op 'teleport'" in rejected and any("refused record x" in m for m in said)
    _check_experiment(uri, "exp", masks, tmp_path)


def test_records_answer_the_papers_questions_in_the_ui(tmp_path):
    """What the MLflow UI shows: the experiment opens on training runs with a description; names,
    the arm tag and params speak the report's vocabulary; chain runs carry their best ticket and a
    sparsity-indexed metric; rounds carry the worker's timings and a mask summary."""
    import json

    from ltvl.tracking.mlflow_lineage import deep_link
    from ltvl.tracking.records import BY_SPARSITY, chain_progress

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = LineageTracker(uri, "exp", "rewind_grid", tmp_path / "spool.jsonl")
    exp_id = tracker.connect()
    masks, paths = _masks(tmp_path)
    job, key, dense = resolve(PARAMS), "chain:" + "c" * 64, "d" * 64
    ops = dense_ops(dense, job, {"metric": 0.8}) + chain_ops(key, job, dense)
    history, t0 = [], 1_700_000_000.0
    for r, (m, p) in enumerate(zip(masks, paths)):
        metric = [0.8, 0.7999, 0.6][r]  # round 1 keeps 99% of dense, round 2 does not
        history.append((r, m.sparsity, metric))
        result = {"round": r, "sparsity": m.sparsity, "metric": metric, "train_loss": 1.23456789, "wall_s": 2.0,
                  "mask_sha256": m.sha256, "parent_sha256": m.parent or "", "started_at": t0 + 10 * r,
                  "ended_at": t0 + 10 * r + 7}
        ops.append(round_op(key, job, result, dense, p, chain_progress(history, 0.99)))
    for op in ops:
        tracker.record(op)
    tracker.record({"op": "live", "key": key, "step": 15, "metrics": {"live/steps_per_s": 2.5, "live/train_loss": 0.9}})
    tracker.record({"op": "live", "key": "chain:" + "e" * 64, "step": 1, "metrics": {"steps_per_s": 1.0}})  # no run

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment(exp_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # not the GenAI overview
    assert "best_sparsity_p99" in exp.tags["mlflow.note.content"]
    runs = {r.data.tags["ltvl.kind"] + r.data.tags.get("ltvl.round", ""): r
            for r in client.search_runs([exp_id], max_results=100)}
    chain = runs["chain"]
    assert chain.info.run_name == "IMP θi@2 · vqa · rate 0.5 · seed 0"
    assert chain.data.tags["ltvl.arm"] == "IMP θi@2" and chain.data.tags["mlflow.note.content"]
    assert "None" not in chain.data.params.values()  # only active params
    assert not any(k.startswith("adv_") and k != "adv_use" for k in chain.data.params)
    assert chain.data.params["lr"] == "0.0001"
    assert chain.data.metrics["best_sparsity_p99"] == 0.5 and chain.data.metrics["metric_at_best"] == 0.7999
    assert "train_loss" not in chain.data.metrics and "wall_s" not in chain.data.metrics  # on the round runs
    by_sparsity = client.get_metric_history(chain.info.run_id, BY_SPARSITY)
    assert sorted((m.step, m.value) for m in by_sparsity) == [(0, 0.8), (5000, 0.7999), (7500, 0.6)]
    live = client.get_metric_history(chain.info.run_id, "live/steps_per_s")
    assert [(m.step, m.value) for m in live] == [(15, 2.5)]
    round2 = runs["round2"]
    assert round2.info.run_name == "IMP θi@2 · vqa · rate 0.5 · seed 0/r2 (75.0%)"
    assert round2.data.metrics["train_loss"] == 1.235  # rounded for reading
    assert (round2.info.start_time, round2.info.end_time) == (int((t0 + 20) * 1000), int((t0 + 27) * 1000))
    summary = json.loads(open(client.download_artifacts(round2.info.run_id, "mask/summary.json",
                                                        str(tmp_path / "dl"))).read())
    assert summary["sha256"] == masks[2].sha256 and summary["parent_sha256"] == masks[1].sha256
    assert summary["kept"] == sum(int(t.sum()) for t in masks[2].tensors.values())
    assert set(summary["tensors"]) == {"a", "b"}
    link = deep_link(uri, exp_id)
    assert link.startswith(f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?")
    assert "compareRunsMode=CHART" in link and "best_sparsity_p99" in link and "workflowType=machine_learning" in link


def test_sweeps_sharing_a_root_never_share_a_spool(tmp_path):
    """Each sweep spools into a file of its own, and each record names its experiment: one sweep can
    never send another's records into its own experiment (or delete them)."""
    from ltvl.tracking.spool import spool_path
    from ltvl.util.errors import LtvlError

    a, b = spool_path(tmp_path, "sweep-a"), spool_path(tmp_path, "sweep-b")
    assert a != b
    Spool(a, "sweep-a").append([{"op": "tags", "key": "k", "tags": {"x": "1"}}])
    assert Spool(a, "sweep-a").pending_records()[0]["experiment"] == "sweep-a"
    assert len(Spool(b, "sweep-b")) == 0
    b.write_text(a.read_text())  # a record of sweep-a in sweep-b's spool
    with pytest.raises(LtvlError, match=r"record of experiment 'sweep-a', not 'sweep-b'"):
        Spool(b, "sweep-b")


def test_a_sweep_refuses_an_old_shared_spool_and_says_how_to_send_it(tmp_path, monkeypatch, capsys):
    from ltvl.sweep.main import main

    monkeypatch.setenv("LTVL_HOME", str(tmp_path / "home"))
    root = tmp_path / "root"
    root.mkdir()
    (root / "mlflow-spool.jsonl").write_text('{"op": "end", "key": "x"}\n')
    rc = main("rewind_grid", ["--set", f"root={root}", "--set", "params.preset=tiny", "--set",
                              f"tracking_uri=sqlite:///{tmp_path / 'm.db'}", "--set", "params.data=synthetic:vqa"],
              config_dir=Path(__file__).resolve().parents[1] / "sweeps" / "configs")
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and "an older ltvl left unsent lineage records" in err and "ltvl lineage --sync" in err


def test_a_locked_sqlite_store_is_named_not_a_traceback(tmp_path):
    import sqlite3

    from mlflow import MlflowClient as Client

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    Client(uri).search_experiments()  # the store exists
    holder = sqlite3.connect(str(tmp_path / "m.db"), timeout=0)
    holder.execute("BEGIN EXCLUSIVE")  # another program holds it
    try:
        with pytest.raises(LtvlError, match=r"(?s)cannot open the MLflow store .*database is locked.*another program"):
            LineageTracker(uri, "x", "rewind_grid", tmp_path / "spool.jsonl")
    finally:
        holder.close()


def test_a_test_server_that_does_not_come_up_in_time_leaves_nothing_running(tmp_path):
    """CI on a loaded machine once left three `mlflow server` process groups (and their job runners)
    behind after their start timed out; the fixture now stops the whole group before it says so."""
    import os

    from tests.mlflow_server import MlflowServer

    server = MlflowServer(tmp_path / "server")
    with pytest.raises(TimeoutError, match="did not come up within 0 s"):
        server.start(timeout=0.3)
    assert server.proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(server.proc.pid, 0)  # no process of its group is left
