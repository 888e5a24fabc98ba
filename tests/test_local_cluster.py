"""The product's multi-node path end to end: `cluster/local.sh up` (a Ray head, a second Ray node
and an MLflow server, all on 127.0.0.1), `ray job submit` of sweeps/rewind_grid.py with token
auth, lineage into that MLflow server (sqlite + served artifacts) checked via MlflowClient,
chains that ran on both nodes, no public listening port at any time, and `down` stopping exactly
what `up` started."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ltvl.cluster.local import ClusterState, up
from ltvl.cluster.procs import group_members, listeners, proc_info, stop_group
from ltvl.pruning import load_mask
from ltvl.tracking.lineage_tree import ancestry
from ltvl.util.errors import LtvlError
from tests.helpers.cluster import BIN, REPO, ListenerSampler, fresh_env
from tests.helpers.cluster import local_sh as _local_sh


@pytest.mark.long
def test_two_node_cluster_runs_a_submitted_sweep_on_both_nodes_on_loopback_only(tmp_path):
    cdir = tmp_path / "cluster"
    # its own HOME: nothing the cluster or the job writes under ~ (e.g. ~/.ray) may touch the user's,
    # and nothing already there (a token from an earlier run) may make this test pass
    env = fresh_env(tmp_path)
    bystander = subprocess.Popen(["sleep", "600"], start_new_session=True)  # not ours: must survive `down`
    rc, out = _local_sh("up", "--dir", str(cdir), env=env)
    assert rc == 0, out[-3000:]
    state = ClusterState.load(cdir)
    try:
        assert sorted(state.nodes) == ["ltvl-head", "ltvl-worker-1"], out
        rc, again = _local_sh("up", "--dir", str(cdir), env=env, timeout=120)
        assert rc == 2 and "already running" in again and "ltvl cluster down" in again
        sampler = ListenerSampler(state)
        sampler.start()
        # the job sees only what `env` exports: Ray's address and token mode, and the cluster's MLflow
        job_env = {**env, **dict(line.removeprefix("export ").split("=", 1)
                                 for line in _local_sh("env", "--dir", str(cdir), env=env)[1].splitlines()
                                 if line.startswith("export "))}
        assert job_env["MLFLOW_TRACKING_URI"] == state.tracking_uri
        cmd = [str(BIN / "ray"), "job", "submit", "--working-dir", str(REPO), "--",
               sys.executable, "sweeps/rewind_grid.py", "--config", "tests/configs/tiny_rewind_grid.yaml",
               "--set", f"root={tmp_path / 'chains'}", "--set", f"storage={tmp_path / 'ray'}",
               # one θi chain (θ0, RP and the rest through the job path: the main job); each chain takes
               # the whole cluster, so a second one would only run after it
               "--set", "chains=[]", "--set", "grid.rewind_step=[2]",
               "--set", "resources.num_workers=2"]  # 2 DDP ranks of 0.9 CPU: more than one 1-CPU node holds
        job = subprocess.run(cmd, env=job_env, capture_output=True, text=True, timeout=900)
        sampler.stop.set()
        sampler.join()
        log = job.stdout + job.stderr
        (tmp_path / "job.log").write_text(log)
        assert job.returncode == 0, log[-4000:]
        assert "sparsest round keeping" in log, log[-3000:]  # the summary table …
        assert f"Open the comparison:  open {state.tracking_uri}" in log  # … and how to open it

        client = MlflowClient(tracking_uri=state.tracking_uri)
        exp = client.get_experiment_by_name("ci-rewind-grid")
        by_kind: dict[str, list] = {}
        for r in client.search_runs([exp.experiment_id], max_results=500):
            by_kind.setdefault(r.data.tags["ltvl.kind"], []).append(r)
        assert len(by_kind["chain"]) == 1 and len(by_kind["dense"]) == 1  # one run per chain; its dense run
        assert [r.data.tags["ltvl.init"] for r in by_kind["chain"]] == ["theta_i"]
        assert len(by_kind["round"]) == 3  # rounds 0, 1, 2 of the chain, once
        for chain in by_kind["chain"]:
            assert sorted(m.step for m in client.get_metric_history(chain.info.run_id, "metric")) == [0, 1, 2]
            assert chain.data.tags["ltvl.dense_run_id"] == by_kind["dense"][0].info.run_id
        for r in by_kind["round"]:
            sha = r.data.tags["ltvl.mask_sha256"]
            local = client.download_artifacts(r.info.run_id, f"mask/{sha}.mask.safetensors", str(tmp_path / "dl"))
            assert load_mask(local).sha256 == sha
            # every chain's DDP group spanned both nodes, so every round names both (and the ranks
            # agreed on every round's mask: the worker all-gathers it and fails the chain otherwise)
            assert set(r.data.tags["ltvl.nodes"].split(",")) == set(state.nodes.values())
        last = next(r for r in by_kind["round"] if r.data.tags["ltvl.round"] == "2"
                    and r.data.tags["ltvl.init"] == "theta_i")
        walk = ancestry(state.tracking_uri, last.data.tags["ltvl.mask_sha256"])
        assert [a.round for a in walk] == [2, 1, 0, None] and walk[-1].kind == "dense"
        assert json.loads(next((tmp_path / "chains").glob("*/mlflow.json")).read_text())["tracking_uri"] == \
            state.tracking_uri

        # security: every port any cluster process listened on during the sweep was loopback
        ports = {s.port for s in sampler.seen}
        assert {state.gcs_port, state.dashboard_port, state.mlflow_port} <= ports  # the sampler saw the services
        assert [str(s) for s in sampler.seen if not s.loopback] == []
        rc, st = _local_sh("status", "--json", "--dir", str(cdir), env=env, timeout=120)
        assert rc == 0 and json.loads(st[st.index("{"):])["public"] == []
    finally:
        rc, down_out = _local_sh("down", "--dir", str(cdir), env=env, timeout=180)
    assert rc == 0 and "stopped: ray-worker-1, ray-head, mlflow" in down_out, down_out
    assert all(group_members(s.pid) == [] for s in state.services)  # nothing of ours is left …
    assert bystander.poll() is None  # … and nothing else was touched
    bystander.kill()
    assert not (cdir / "cluster.json").exists()
    # the Ray temp dir (a copy of the job's working_dir on every node) is gone; the logs are kept
    assert not Path(state.ray_tmp).exists()
    assert sorted(p.name for p in (cdir / "ray-logs").iterdir()) == ["head", "worker-1"]
    assert list((cdir / "ray-logs" / "head").glob("gcs_server*.out"))


def _forking_group(member_ignores_term: bool) -> tuple[subprocess.Popen, int]:
    """A group whose leader, told to stop, starts a new member (as a raylet restarts a dying
    worker) and exits."""
    import time
    trap = "trap \\\"\\\" TERM; " if member_ignores_term else ""
    code = f"trap 'bash -c \"{trap}while :; do sleep 0.1; done\" & exit 0' TERM; while :; do sleep 0.1; done"
    leader = subprocess.Popen(["bash", "-c", code], start_new_session=True)
    time.sleep(0.5)
    return leader, proc_info(leader.pid).start_ticks


def test_a_member_forked_during_shutdown_is_stopped_at_once_and_none_outlives_the_return():
    import time
    leader, ticks = _forking_group(member_ignores_term=False)
    t0 = time.monotonic()
    assert stop_group(leader.pid, ticks, grace_s=20) is True
    assert time.monotonic() - t0 < 5  # the newcomer got SIGTERM when seen, not SIGKILL after 20 s
    assert group_members(leader.pid) == []
    leader.wait(timeout=10)
    leader, ticks = _forking_group(member_ignores_term=True)  # deaf to SIGTERM: SIGKILL after the grace
    assert stop_group(leader.pid, ticks, grace_s=1) is True
    assert group_members(leader.pid) == []  # killed and gone from /proc before the return
    leader.wait(timeout=10)


def test_public_bind_is_detected_and_only_recorded_groups_are_stopped(tmp_path):
    """The security check can fail: a process in a recorded group that listens on 0.0.0.0 is
    flagged. And `stop_group` leaves a PID alone whose start time is not the recorded one."""
    code = ("import socket, time; s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(); "
            "t = socket.socket(); t.bind(('127.0.0.1', 0)); t.listen(); print(s.getsockname()[1], flush=True); "
            "time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        port = int(proc.stdout.readline())
        found = listeners([m.pid for m in group_members(proc.pid)])
        assert [(s.address, s.port) for s in found if not s.loopback] == [("0.0.0.0", port)]
        assert len([s for s in found if s.loopback]) == 1
        info = proc_info(proc.pid)
        assert stop_group(proc.pid, info.start_ticks + 1, grace_s=1) is False  # "recycled": not signalled …
        assert proc.poll() is None
        assert stop_group(proc.pid, info.start_ticks, grace_s=10) is True  # … the recorded one is
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cluster_bad_input_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(LtvlError, match="--worker-cpus 0.5 is below 1"):
        up(tmp_path / "c", worker_cpus=0.5)
    with pytest.raises(LtvlError, match="--timeout 0 must be positive"):
        up(tmp_path / "c", timeout_s=0)
    assert not (tmp_path / "c" / "cluster.json").exists()
    from typer.testing import CliRunner

    from ltvl.cli import app
    res = CliRunner().invoke(app, ["cluster", "env", "--dir", str(tmp_path / "none")])
    assert res.exit_code != 0 and "ltvl cluster up" in str(res.exception)
    res = CliRunner().invoke(app, ["cluster", "status", "--dir", str(tmp_path / "none")])
    assert res.exit_code == 0 and "no local cluster recorded" in res.output


def test_the_cluster_brings_its_own_auth_token(tmp_path, monkeypatch):
    """`ray start --head` with token auth refuses to start without a token: a fresh machine has
    no ~/.ray/auth_token, so the cluster makes its own (private to the user) and exports its path."""
    from ltvl.cluster.local import ensure_token
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    path = Path(ensure_token(tmp_path))
    assert path.parent == tmp_path and len(path.read_text()) == 64
    assert path.stat().st_mode & 0o077 == 0  # nobody else can read it
    assert ensure_token(tmp_path) == str(path) and len(path.read_text()) == 64  # kept, not regenerated
    state = ClusterState(str(tmp_path), 1, 2, None, token_path=str(path))
    assert state.env()["RAY_AUTH_TOKEN_PATH"] == str(path)
    mine = tmp_path / "mine" / "token"
    mine.parent.mkdir()
    mine.write_text("t" * 64)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(mine))
    assert ensure_token(tmp_path / "other") == str(mine) and mine.read_text() == "t" * 64  # the user's own token wins
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "new" / "token"))  # named but not there yet: made there
    assert ensure_token(tmp_path / "other") == str(tmp_path / "new" / "token")
    assert len((tmp_path / "new" / "token").read_text()) == 64 and not (tmp_path / "other" / "auth_token").exists()


def test_down_keeps_the_ray_logs_and_deletes_only_a_ray_temp_dir_ltvl_made(tmp_path):
    from ltvl.cluster.local import keep_ray_logs
    ray_tmp = tmp_path / "ltvl-ray-x1"
    logs = ray_tmp / "head" / "session_2026" / "logs"
    logs.mkdir(parents=True)
    (logs / "gcs_server.out").write_text("gcs")
    (ray_tmp / "head" / "session_latest").symlink_to(ray_tmp / "head" / "session_2026")
    (ray_tmp / "head" / "session_2026" / "runtime_resources").mkdir()  # the bulk: job working dirs
    (tmp_path / "c" / "ray-logs" / "old-node").mkdir(parents=True)  # an earlier cluster's logs: replaced
    keep_ray_logs(ray_tmp, tmp_path / "c" / "ray-logs")
    assert not ray_tmp.exists()
    assert [p.name for p in (tmp_path / "c" / "ray-logs").iterdir()] == ["head"]
    assert (tmp_path / "c" / "ray-logs" / "head" / "gcs_server.out").read_text() == "gcs"
    foreign = tmp_path / "ray"  # a directory ltvl did not make is never deleted
    foreign.mkdir()
    keep_ray_logs(foreign, tmp_path / "c" / "ray-logs")
    assert foreign.is_dir() and (tmp_path / "c" / "ray-logs" / "head").is_dir()


def test_mlflow_moves_to_a_new_port_when_its_port_was_taken_before_it_bound(tmp_path):
    """CI once saw Ray take the port picked for MLflow before the server bound it; the health
    probe then met Ray's gRPC and crashed. Now MLflow starts first, and a lost port is re-picked."""
    import socket

    from ltvl.cluster.local import _http_up, _start_mlflow
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    state = ClusterState(str(tmp_path), 1, 2, taken)
    try:
        _start_mlflow(state, tmp_path, timeout_s=300)  # generous: a loaded 2-core machine
        assert state.mlflow_port != taken and _http_up(state.tracking_uri + "/health")
        assert [s.name for s in state.services] == ["mlflow"]  # the server that lost its port is not recorded
        assert "address already in use" in (tmp_path / "mlflow.log").read_text().lower()  # why it moved
    finally:
        for s in state.services:
            stop_group(s.pid, s.start_ticks, grace_s=10)
        squatter.close()


def test_a_service_that_fails_transiently_while_starting_is_started_again(tmp_path):
    """Ray's raylet gives up after a fixed 30 s when the machine is busy ("timed out during
    startup": seen in CI while another worker ran Ray sweeps); `up` starts such a node again.
    Any other failure, or the same one too often, is raised with the service's log."""
    from ltvl.cluster.local import _start_retrying
    calls = []

    def cmd() -> list[str]:
        calls.append(len(calls))
        if len(calls) == 1:
            return [sys.executable, "-c", "import time; time.sleep(0.5); print('node timed out during startup')"]
        return ["sleep", "60"]
    state = ClusterState(str(tmp_path), 1, 2, None)
    try:
        _start_retrying(state, "node", cmd, tmp_path, {}, "the node", lambda: len(calls) == 2, 30,
                        "timed out during startup")
        assert len(calls) == 2 and [s.name for s in state.services] == ["node"]  # only the live one is recorded
    finally:
        for s in state.services:
            stop_group(s.pid, s.start_ticks, grace_s=5)
    state = ClusterState(str(tmp_path), 1, 2, None)
    with pytest.raises(LtvlError, match="exited while starting"):
        _start_retrying(state, "node", [sys.executable, "-c", "import time; time.sleep(0.5); print('boom')"],
                        tmp_path, {}, "the node", lambda: False, 30, "timed out during startup")


def test_cluster_env_is_quoted_for_eval(tmp_path):
    """README's `eval "$(ltvl cluster env)"`: a directory with a space stays one value, and one
    with $(…) in its name is never run."""
    d = tmp_path / "a dir $(touch pwned)"
    d.mkdir()
    ClusterState(str(d), 6379, 8265, 5000, token_path=str(d / "auth_token")).save()
    env = subprocess.run([sys.executable, "-m", "ltvl.cli", "cluster", "env", "--dir", str(d)],
                         capture_output=True, text=True)
    assert env.returncode == 0, env.stderr
    shown = subprocess.run(["bash", "-c", env.stdout + '\nprintf "%s" "$RAY_AUTH_TOKEN_PATH"'],
                           capture_output=True, text=True, cwd=tmp_path)
    assert shown.stdout == str(d / "auth_token") and not (tmp_path / "pwned").exists()
