"""Failures that must never read as success or hang (issue 14)."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.test_cli import ltvl


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers (a hung server, a black-holed proxy)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    t.join()
    for c in conns:
        c.close()
    srv.close()


def _timed(*args, env=None):
    t = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "ltvl.cli", *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=120)
    return res, time.monotonic() - t


@pytest.mark.parametrize("command", [["lineage", "abcdef12"], ["report", "--experiment", "x"]])
def test_a_dead_tracking_server_fails_fast_with_its_uri(tmp_path, command):
    uri = "http://127.0.0.1:9"  # the discard port: connection refused
    res, took = _timed(*command, "--tracking-uri", uri, *(["--out", tmp_path] if command[0] == "report" else []))
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"MLflow at {uri} did not answer" in res.stderr and "curl" in res.stderr
    assert took < 30


def test_a_silent_tracking_server_times_out_as_configured(silent_server):
    res, took = _timed("lineage", "abcdef12", "--tracking-uri", silent_server, env={"LTVL_TRACKING_TIMEOUT": "2"})
    assert res.returncode == 2, res.stderr
    assert f"MLflow at {silent_server} did not answer within 2 s" in res.stderr
    assert took < 20  # the timeout, plus interpreter and import start-up


def test_a_bad_timeout_setting_is_named():
    res, _ = _timed("lineage", "abcdef12", "--tracking-uri", "http://127.0.0.1:9",
                    env={"LTVL_TRACKING_TIMEOUT": "soon"})
    assert res.returncode == 2 and "LTVL_TRACKING_TIMEOUT='soon' is not a positive number" in res.stderr


def test_prune_out_that_is_a_directory_is_named(tmp_path, tiny_bert):
    from safetensors.torch import save_file

    ckpt = tmp_path / "bert.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_bert.state_dict().items()}, str(ckpt))
    (tmp_path / "masks").mkdir()
    res = ltvl("prune", ckpt, "--sparsity", "0.5", "--out", tmp_path / "masks")
    assert res.returncode == 2, res.stderr
    assert "is a directory" in res.stderr and "Traceback" not in res.stderr


HOLD = """
import sys, time
from pathlib import Path
from ltvl.sweep.lock import SweepLock
with SweepLock(Path(sys.argv[1]), "twin"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_second_sweep_of_the_same_name_is_refused_at_once_naming_the_holder(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "LTVL_HOME": str(home)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(home / "sweeps" / "twin"), "60"],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        t = time.monotonic()
        res = subprocess.run([sys.executable, "sweeps/rewind_grid.py", "--set", "name=twin"],
                             capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode == 2, res.stdout + res.stderr
        assert f"sweep 'twin' is already running (pid {holder.pid} on " in res.stderr
        assert time.monotonic() - t < 30  # refused before Ray or MLflow start
    finally:
        holder.kill()
        holder.wait()
    # a killed holder cannot leave the lock stuck: the kernel released it with the process
    from ltvl.sweep.lock import SweepLock

    with SweepLock(home / "sweeps" / "twin", "twin"):
        pass


HOLD_SHARED = """
import sys, time
from pathlib import Path
from ltvl.sweep.lock import SweepLock
with SweepLock(Path(sys.argv[1]), "twin", [Path(sys.argv[2])]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_twin_from_another_ltvl_home_is_refused_on_the_root_they_share(tmp_path):
    """The name lock in one LTVL_HOME cannot see a driver with another home; the lock in the root
    they both write can."""
    root = tmp_path / "shared-root"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_SHARED, str(tmp_path / "home1" / "sweeps" / "twin"),
                               str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = subprocess.run([sys.executable, "sweeps/rewind_grid.py", "--set", "name=twin", "--set", f"root={root}"],
                             capture_output=True, text=True, env={**os.environ, "LTVL_HOME": str(tmp_path / "home2")},
                             timeout=120)
        err = " ".join(res.stderr.split())
        assert res.returncode == 2 and f"a sweep named 'twin' is already writing {root}" in err, err[-2000:]
    finally:
        holder.kill()
        holder.wait()


CONNECT = """
import sys
from ltvl.tracking.mlflow_lineage import LineageTracker
t = LineageTracker(sys.argv[1], sys.argv[2], "rewind_grid", sys.argv[3])
print(t.connect())
"""


def test_sweeps_of_different_names_start_together_on_a_fresh_store(tmp_path):
    """Before: one of them died in alembic (`table _alembic_tmp_experiments already exists`)."""
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", CONNECT, uri, f"sweep-{k}", str(tmp_path / f"spool{k}.jsonl")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    from mlflow import MlflowClient

    names = {e.name for e in MlflowClient(tracking_uri=uri).search_experiments()}
    assert {"sweep-0", "sweep-1", "sweep-2"} <= names


@pytest.mark.long
def test_a_sweep_with_a_failed_chain_exits_non_zero_and_says_why_once(tmp_path):
    """Before: the trial died inside ~70 lines of Ray traceback and the driver exited 0 with a
    normal-looking summary. The failure here: a dataset file truncated after it was written
    (the driver's up-front check sees dataset.json; the worker's open sees the truncation)."""
    from ltvl.vl.data.synthetic import make_synthetic

    data = tmp_path / "data"
    make_synthetic("vqa", data, n_train=64, n_test=16)
    images = data / "train" / "images.arrow"
    images.write_bytes(images.read_bytes()[:1000])
    env = {**os.environ, "LTVL_HOME": str(tmp_path / "home"), "RAY_ADDRESS": ""}
    res = subprocess.run([sys.executable, "sweeps/rewind_grid.py", "--set", "name=broken",
                          "--set", f"params.data={data}", "--set", "params.preset=tiny", "--set", "params.steps=2",
                          "--set", "grid.rewind_step=[0]", "--set", "grid.rate=[0.5]", "--set", "chains=[]",
                          "--set", "controls=false",
                          "--set", "resources.max_failures=0"],
                         capture_output=True, text=True, env=env, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-3000:]
    assert "1 trial(s) FAILED" in out
    assert "train/images.arrow: file is 1000 bytes but the manifest says" in out
    assert out.count("truncated or replaced") == 1 and "in 1 trial(s): chains chain-" in out  # said once
    assert "Traceback" not in out
    row = next(line for line in out.splitlines() if "IMP · vqa · rate 0.5" in line and "│" in line)
    assert "FAILED" in row and "0/4" in row  # the summary marks it from its store (no round finished)
    log = tmp_path / "home" / "sweeps" / "broken" / "failures.log"
    text = log.read_text()
    assert "ltvl/vl/assemble.py" in text and "truncated or replaced" in text  # the remote traceback


def test_a_missing_local_dataset_is_refused_before_ray_starts(tmp_path):
    env = {**os.environ, "LTVL_HOME": str(tmp_path / "home")}
    t = time.monotonic()
    res = subprocess.run([sys.executable, "sweeps/rewind_grid.py", "--set", f"params.data={tmp_path / 'nope'}"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2
    assert f"params.data={tmp_path / 'nope'}: not a dataset directory" in res.stderr
    assert time.monotonic() - t < 30 and not (tmp_path / "home" / "sweeps").exists()


def _sweep(tmp_path, name: str, data, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """A real sweep driver (sweeps/rewind_grid.py) on its own local Ray, tiny model, synthetic data."""
    env = {**os.environ, "LTVL_HOME": str(tmp_path / "home"), "RAY_ADDRESS": "",
           "LTVL_ROUND_LOG": str(tmp_path / f"{name}.rounds"), **(env or {})}
    args = ["--set", f"name={name}", "--set", f"params.data={data}", "--set", "params.preset=tiny",
            "--set", "params.steps=4", "--set", "grid.rate=[0.5]", "--set", "chains=[]",
            "--set", "controls=false", *extra]
    return subprocess.Popen([sys.executable, "sweeps/rewind_grid.py", *args], env=env, start_new_session=True,
                            stdout=open(tmp_path / f"{name}.log", "w"), stderr=subprocess.STDOUT)


def _rounds_computed(tmp_path, name: str) -> int:
    f = tmp_path / f"{name}.rounds"
    return len(f.read_text().splitlines()) if f.exists() else 0


def _runs(uri: str, experiment: str):
    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


@pytest.mark.long
def test_mlflow_restarted_three_times_under_load_loses_and_duplicates_nothing(tmp_path):
    """Before: after the server came back the driver made no progress for minutes (a trial blocked
    in Queue.put), one chain's last round never reached MLflow, its run stayed RUNNING, and the
    summary showed an older sparsity. Here the server is killed and restarted three times while
    a chain trains on a loaded machine; MLflow must end up with exactly what an undisturbed
    run records: one run per chain, dense run and round, one metric point per round, the stores'
    values, nothing RUNNING."""
    from ltvl.tracking.records import BY_SPARSITY, CHAIN_METRICS, LIVE_PREFIX, chain_progress
    from ltvl.vl.data.synthetic import make_synthetic
    from tests.mlflow_server import MlflowServer

    make_synthetic("vqa", tmp_path / "data", n_train=64, n_test=16)
    server = MlflowServer(tmp_path / "server").start()
    # the machine is loaded: a busy loop at the lowest priority keeps every core's run queue full
    burner = subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", "while True: pass"])
    gate = tmp_path / "gate"
    gate.mkdir()
    sweep = _sweep(tmp_path, "outage", tmp_path / "data", "--set", "grid.rewind_step=[0]",
                   "--set", "params.target_sparsity=0.95", "--set", f"tracking_uri={server.uri}",  # 6 rounds
                   env={"LTVL_ROUND_GATE": str(gate)})
    try:
        deadline = time.monotonic() + 900
        for r in range(6):  # rounds 1, 2 and 3 each reach the driver while the server is down
            while _rounds_computed(tmp_path, "outage") <= r and sweep.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert sweep.poll() is None, (tmp_path / "outage.log").read_text()[-3000:]
            if r in (1, 2, 3):
                time.sleep(1)  # round r's records met the outage
                server.start()
            if r in (0, 1, 2):
                server.crash()  # round r + 1 will be reported into an outage
            (gate / str(r)).touch()  # the chain goes on to the next round
        rc = sweep.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        burner.kill()
        if sweep.poll() is None:
            os.killpg(sweep.pid, 9)
    out = (tmp_path / "outage.log").read_text()
    try:
        assert rc == 0, out[-4000:]
        assert out.count("is not answering") >= 1 and "answers again" in out
        assert "View run" not in out  # MLflow's per-run URL lines stay out of the sweep log
        assert "│ all " in out and "lags" not in out  # the summary: every round of every chain is in MLflow
        client, runs = _runs(server.uri, "outage")
        kinds = sorted(r.data.tags["ltvl.kind"] for r in runs)
        assert kinds == ["chain", "dense"] + ["round"] * 6, kinds  # once each
        assert {r.info.status for r in runs} == {"FINISHED"}  # nothing left RUNNING
        root = tmp_path / "home" / "sweeps" / "outage" / "chains"
        for chain in (r for r in runs if r.data.tags["ltvl.kind"] == "chain"):
            store = next(d for d in root.iterdir() if chain.data.tags["ltvl.chain"].startswith(d.name))
            records = [json.loads(f.read_text()) for f in (store / "rounds").glob("*.json")]
            disk = {rec["round"]: rec for rec in records}
            assert sorted(disk) == list(range(6))
            for metric in ("metric", "sparsity"):
                history = client.get_metric_history(chain.info.run_id, metric)
                assert sorted(m.step for m in history) == list(range(6)), (metric, history)  # one point per round
                want = {r: rec["metrics"]["metric"] if metric == "metric" else rec["sparsity"]
                        for r, rec in disk.items()}
                assert {m.step: m.value for m in history} == pytest.approx(want)
            chain_keys = {*CHAIN_METRICS, *chain_progress([], 0.99), BY_SPARSITY}  # per round, best ticket, by sparsity
            assert {k for k in chain.data.metrics if not k.startswith(LIVE_PREFIX)} <= chain_keys
        assert not list(root.glob("mlflow-spool*.jsonl"))  # everything delivered
    finally:
        server.stop()


@pytest.mark.long
def test_an_interrupted_sweep_exits_130_marks_its_chain_incomplete_and_leaves_nothing_running(tmp_path):
    """Before: Tune swallowed Ctrl-C and the driver went on to the next stage; runs stayed RUNNING."""
    import signal

    from ltvl.vl.data.synthetic import make_synthetic
    make_synthetic("vqa", tmp_path / "data", n_train=64, n_test=16)
    sweep = _sweep(tmp_path, "stopme", tmp_path / "data", "--set", "grid.rewind_step=[0]",
                   "--set", "params.target_sparsity=0.95", "--set", "baselines=[random_init]")
    deadline, log = time.monotonic() + 600, tmp_path / "stopme.log"
    while "round 1 at " not in log.read_text() and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # round 1 reached the driver: the chain's MLflow run exists
    assert sweep.poll() is None, (tmp_path / "stopme.log").read_text()[-3000:]
    os.killpg(sweep.pid, signal.SIGINT)  # Ctrl-C in the driver's terminal reaches its process group
    rc = sweep.wait(timeout=300)
    out = (tmp_path / "stopme.log").read_text()
    assert rc == 130, out[-4000:]
    assert "incomplete" in out and "--resume" in out
    assert "stopme-tickets" not in out  # the next stage never started
    _, runs = _runs(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}", "stopme")
    status = {r.data.tags["ltvl.kind"]: r.info.status for r in runs if r.data.tags["ltvl.kind"] != "round"}
    assert status == {"chain": "KILLED", "dense": "FINISHED"}
    assert {r.info.status for r in runs if r.data.tags["ltvl.kind"] == "round"} == {"FINISHED"}


def _alive(pid: int, start: int) -> bool:
    from ltvl.cluster.procs import same_process
    return same_process(pid, start)


@pytest.mark.long
def test_a_killed_driver_s_ray_helpers_are_stopped_by_the_next_run_and_nothing_else(tmp_path):
    """Before: after a driver SIGKILL, ray::DashboardAgent and ray::RuntimeEnvAgent ran on forever."""
    import signal

    from ltvl.cluster.procs import proc_info
    from ltvl.vl.data.synthetic import make_synthetic
    make_synthetic("vqa", tmp_path / "data", n_train=64, n_test=16)
    decoy = subprocess.Popen(["sleep", "600"])  # someone else's process: must survive
    sweep = _sweep(tmp_path, "orphans", tmp_path / "data", "--set", "grid.rewind_step=[0]")
    record = tmp_path / "home" / "sweeps" / "orphans" / "ray-helpers.json"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and sweep.poll() is None:
            names = [h[2] for h in json.loads(record.read_text())["helpers"]] if record.exists() else []
            if any("Dashboard" in n for n in names) and any("RuntimeEnv" in n for n in names):
                break
            time.sleep(0.5)
        assert sweep.poll() is None, (tmp_path / "orphans.log").read_text()[-3000:]
        os.kill(sweep.pid, signal.SIGKILL)  # the driver alone, as the OOM killer would
        sweep.wait()
        time.sleep(3)
        helpers = [tuple(h) for h in json.loads(record.read_text())["helpers"]]
        left = [h for h in helpers if _alive(h[0], h[1])]
        assert left, "nothing outlived the driver: the orphan case did not happen"
        # the next run of the sweep stops them; a dead tracking server then ends it at once
        res = subprocess.run([sys.executable, "sweeps/rewind_grid.py", "--set", "name=orphans",
                              "--set", f"params.data={tmp_path / 'data'}", "--set", "tracking_uri=http://127.0.0.1:9"],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "LTVL_HOME": str(tmp_path / "home"), "RAY_ADDRESS": ""})
        assert res.returncode == 2 and f"Stopped {len(left)} Ray helper process(es)" in res.stderr, res.stderr
        assert not [h for h in helpers if _alive(h[0], h[1])]
        assert decoy.poll() is None and proc_info(decoy.pid) is not None
        assert not record.exists()
    finally:
        decoy.kill()
        if sweep.poll() is None:
            os.killpg(sweep.pid, 9)
        for h in json.loads(record.read_text())["helpers"] if record.exists() else []:
            if _alive(h[0], h[1]):
                os.kill(h[0], 9)


def test_an_unreadable_helper_record_is_named_and_nothing_is_signalled(tmp_path):
    from ltvl.sweep.helpers import RECORD, reap_orphans
    from ltvl.util.errors import LtvlError
    other = subprocess.Popen(["sleep", "600"])
    try:
        (tmp_path / RECORD).write_text(f'{{"driver": [1, 2], "helpers": [[{other.pid}, "x"')
        with pytest.raises(LtvlError, match="unreadable record of a killed driver's Ray processes") as e:
            reap_orphans(tmp_path)
        assert str(tmp_path / RECORD) in str(e.value) and "delete this file" in e.value.fix
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_bad_tracking_timeout_is_refused_before_a_local_store_sweep_starts(tmp_path):
    """The sqlite store never needs the timeout to connect; the sweep's end (waiting for MLflow)
    does. Before: the whole sweep ran, then failed on the setting."""
    took = time.monotonic()
    res = subprocess.run([sys.executable, "sweeps/rewind_grid.py", "--set", "name=t"], capture_output=True, text=True,
                         env={**os.environ, "LTVL_HOME": str(tmp_path / "home"), "LTVL_TRACKING_TIMEOUT": "soon"},
                         timeout=120)
    assert res.returncode == 2 and "LTVL_TRACKING_TIMEOUT='soon' is not a positive number" in res.stderr
    assert "Ray" not in res.stderr and time.monotonic() - took < 60


def test_reaping_never_touches_a_recycled_pid_or_a_live_driver(tmp_path):
    from ltvl.cluster.procs import proc_info
    from ltvl.sweep.helpers import RECORD, reap_orphans
    other = subprocess.Popen(["sleep", "600"])
    try:
        me = proc_info(other.pid)
        (tmp_path / RECORD).write_text(json.dumps({"driver": [999_999_999, 1],  # long gone
                                                   "helpers": [[other.pid, me.start_ticks + 1, "sleep"]]}))
        assert reap_orphans(tmp_path) == [] and other.poll() is None  # same PID, other start time: not ours
        (tmp_path / RECORD).write_text(json.dumps({"driver": [other.pid, me.start_ticks],  # still running
                                                   "helpers": [[other.pid, me.start_ticks, "sleep"]]}))
        assert reap_orphans(tmp_path) == [] and other.poll() is None
    finally:
        other.kill()
        other.wait()


@pytest.mark.long
def test_mlflow_down_at_the_end_exits_3_and_sync_delivers_the_rest(tmp_path):
    """The chains finish but the server never comes back: the sweep waits 2 x LTVL_TRACKING_TIMEOUT,
    exits 3 (not 0), names the spool and the command; a later sync (`ltvl lineage --sync`, whose CLI
    is tested in test_tracking.py) sends it all, once."""
    from ltvl.vl.data.synthetic import make_synthetic
    from tests.mlflow_server import MlflowServer

    make_synthetic("vqa", tmp_path / "data", n_train=64, n_test=16)
    server = MlflowServer(tmp_path / "server").start()
    gate = tmp_path / "gate"
    gate.mkdir()
    sweep = _sweep(tmp_path, "late", tmp_path / "data", "--set", "grid.rewind_step=[0]",
                   "--set", "params.target_sparsity=0.5", "--set", f"tracking_uri={server.uri}",  # rounds 0, 1
                   env={"LTVL_ROUND_GATE": str(gate), "LTVL_TRACKING_TIMEOUT": "1"})
    try:
        deadline = time.monotonic() + 600
        while _rounds_computed(tmp_path, "late") < 1 and sweep.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        server.crash()  # for good: round 1 and the ends are reported into the outage
        (gate / "0").touch()
        (gate / "1").touch()
        rc = sweep.wait(timeout=max(1, deadline - time.monotonic()))
        out = (tmp_path / "late.log").read_text()
        spool = tmp_path / "home" / "sweeps" / "late" / "chains" / "mlflow-spool.late.jsonl"
        assert rc == 3, out[-4000:]
        assert "has not taken" in out and str(spool) in out.replace("\n", "") and "lineage --sync" in out
        assert "MLflow could not be compared" in out and "│ done" in out  # the table still stands, from the stores
        assert spool.exists()
        server.start()
        from ltvl.tracking.mlflow_lineage import LineageTracker
        assert LineageTracker(server.uri, "late", "rewind_grid", spool).connect()  # what `lineage --sync` runs
        assert not spool.exists()
        _, runs = _runs(server.uri, "late")
        assert sorted(r.data.tags["ltvl.kind"] for r in runs) == ["chain", "dense", "round", "round"]
        assert {r.info.status for r in runs} == {"FINISHED"}
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, 9)
        server.stop()


@pytest.mark.long
def test_a_deleted_sqlite_store_mid_sweep_is_one_line_not_a_traceback_per_record(tmp_path):
    """Before: with the local MLflow store deleted mid-sweep, MLflow's store logged a whole
    SQLAlchemy traceback for every record the sender retried (31 in one sweep). Now the sender
    says once that MLflow is away, MLflow's own messages go to a log the summary names, and the
    outcome is as before: exit 3, every record kept in the spool."""
    from ltvl.vl.data.synthetic import make_synthetic

    make_synthetic("vqa", tmp_path / "data", n_train=64, n_test=16)
    gate = tmp_path / "gate"
    gate.mkdir()
    sweep = _sweep(tmp_path, "gone", tmp_path / "data", "--set", "grid.rewind_step=[0]",
                   "--set", "params.target_sparsity=0.5",  # rounds 0 and 1
                   env={"LTVL_ROUND_GATE": str(gate), "LTVL_TRACKING_TIMEOUT": "1"})
    try:
        deadline = time.monotonic() + 600
        while _rounds_computed(tmp_path, "gone") < 1 and sweep.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # round 0's records reach the store before it goes
        for f in (tmp_path / "home").glob("mlflow.db*"):
            f.unlink()
        (gate / "0").touch()
        (gate / "1").touch()
        rc = sweep.wait(timeout=max(1, deadline - time.monotonic()))
        out = (tmp_path / "gone.log").read_text()
        log = tmp_path / "home" / "sweeps" / "gone" / "mlflow-errors.log"
        assert rc == 3, out[-4000:]
        assert "Traceback" not in out and "sqlalchemy" not in out.lower().replace("sqlalchemy/e/", ""), out[-4000:]
        assert out.count("is not answering") == 1 and "attempt to write a readonly database" in out, out[-4000:]
        assert str(log) in out.replace("\n", "") and "Traceback" in log.read_text()
        assert "│ done" in out and "has not taken" in out
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, 9)


def test_resume_refuses_a_config_changed_since_the_sweep_began(tmp_path, monkeypatch, capsys):
    """Tune would restore the old param space: a grid value added since the start would be counted
    and never run. The driver's record of the start config makes the resume refuse, naming it."""
    from pathlib import Path

    from ltvl.plan import record as plan_record
    from ltvl.plan.config import load_config
    from ltvl.sweep.main import main, space_of, sweep_plan, sweep_points

    configs = Path(__file__).resolve().parents[1] / "sweeps" / "configs"
    monkeypatch.setenv("LTVL_HOME", str(tmp_path / "home"))
    sets = ["params.preset=tiny", "params.data=synthetic:vqa", "grid.rewind_step=[0]",
            f"tracking_uri=sqlite:///{tmp_path / 'm.db'}"]
    cfg = load_config("rewind_grid", configs / "rewind_grid.yaml", [*sets, "grid.rate=[0.5]"])
    base = tmp_path / "home" / "sweeps" / cfg.name
    grid, _, chains = sweep_points(cfg, space_of(cfg))
    plan = sweep_plan(cfg, grid + chains)
    plan_record.save(base, plan)
    assert plan_record.check_resume(base, plan) is None  # the same config resumes
    argv = ["--resume"] + [x for s in [*sets, "grid.rate=[0.5,0.8]"] for x in ("--set", s)]
    rc = main("rewind_grid", argv, config_dir=configs)
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2, err[-2000:]
    assert "differs from the one this sweep started with" in err and "grid.rate: [0.5] → [0.5, 0.8]" in err
    assert "1 chain(s) added, 0 removed" in err  # the new rate's chain (its dense run and control are shared)


def test_chains_a_stopped_sweep_never_reached_are_listed_unfinished(tmp_path):
    """Interrupted in the dense stage, no chain trial ever ran: the summary still lists every planned
    chain as incomplete, so it never says "0 chain(s) unfinished" over an empty table."""
    from ltvl.sweep.main import not_started
    from ltvl.sweep.summary import INCOMPLETE, chain_summaries

    points = [{"preset": "tiny", "data": "synthetic:vqa", "rewind_step": r} for r in (0, 2)]
    outcomes = not_started([], points + points[:1], tmp_path)  # a repeat is listed once
    rows = chain_summaries(outcomes, tmp_path, early_stop=False, interrupted=True)
    assert len(rows) == 2 and {r.status for r in rows} == {INCOMPLETE}
