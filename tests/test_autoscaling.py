"""Autoscaling, exercised: `cluster/local.sh up --autoscale` starts a head with no workers whose
autoscaler launches real raylets on this machine (node types from cluster/aws.yaml). A sweep
submitted with `ray job submit` makes it grow, finishes every chain with masks bit-identical to
the same sweep run locally, and the cluster shrinks back when idle. A worker node preempted
through the provider mid-round is replaced, and its chain resumes from its last finished round:
masks and MLflow records equal the undisturbed run's, with no duplicate. One cluster serves the
module (it takes ~10 s to start, and each test leaves it idle)."""
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ltvl.cluster.local import ClusterState, ray_nodes
from ltvl.cluster.procs import group_members
from tests.helpers.cluster import BIN, REPO, ListenerSampler, NodeCountSampler, fresh_env, job_env, local_sh

pytestmark = [pytest.mark.long, pytest.mark.xdist_group("autoscaling-cluster")]  # one cluster, in order
IDLE_TIMEOUT_S = 12
SWEEP = ["--config", "tests/configs/tiny_rewind_grid.yaml", "--set", "chains=[]",  # θ0, θi: one dense run, no control
         "--set", "resources={driver_resources: {trial_driver: 1}, max_failures: 2}"]


class Cluster:
    def __init__(self, tmp: Path):
        self.tmp, self.dir = tmp, tmp / "cluster"
        self.env = fresh_env(tmp)
        self.done: dict = {}  # what one test leaves for the next (the undisturbed sweep's results)

    def start(self) -> None:
        rc, out = local_sh("up", "--autoscale", "--max-workers", "2", "--idle-timeout", str(IDLE_TIMEOUT_S),
                           "--dir", str(self.dir), env=self.env)
        assert rc == 0, out[-3000:]
        assert "autoscaling up to 2 worker nodes" in out, out[-2000:]
        self.state = ClusterState.load(self.dir)
        self.job_env = job_env(self.dir, self.env)
        self.nodes = NodeCountSampler(self.state)
        self.ports = ListenerSampler(self.state)
        self.nodes.start()
        self.ports.start()

    def submit(self, name: str, *sets: str, env: dict | None = None, wait: bool = True):
        cmd = [str(BIN / "ray"), "job", "submit", "--working-dir", str(REPO)]
        if env:
            cmd += ["--runtime-env-json", json.dumps({"env_vars": env})]
        cmd += ["--", sys.executable, "sweeps/rewind_grid.py", *SWEEP, "--set", f"name={name}",
                "--set", f"root={self.tmp / name / 'chains'}", "--set", f"storage={self.tmp / name / 'ray'}", *sets]
        log = open(self.tmp / f"{name}.log", "w")
        proc = subprocess.Popen(cmd, env=self.job_env, stdout=log, stderr=subprocess.STDOUT, text=True)
        if not wait:
            return proc
        proc.wait(timeout=600)
        return proc.returncode, (self.tmp / f"{name}.log").read_text()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("autoscale"))
    c.start()
    yield c
    c.nodes.stop.set()
    c.ports.stop.set()
    t = time.monotonic()
    rc, out = local_sh("down", "--dir", str(c.dir), env=c.env, timeout=180)
    print(f"down took {time.monotonic() - t:.1f} s")
    assert rc == 0 and "ray-head" in out, out
    assert all(group_members(s.pid) == [] for s in c.state.services)  # the autoscaled nodes went with the head
    assert not Path(c.state.ray_tmp).exists() and (c.dir / "ray-logs" / "head").is_dir()
    # every port any cluster process (head, autoscaled nodes, Train workers) listened on was loopback
    assert c.ports.seen and [str(s) for s in c.ports.seen if not s.loopback] == []


def chain_masks(root: Path) -> dict[str, list[tuple[int, str, float]]]:
    """Each chain's rounds from its store: (round, mask sha256, metric). (Not the train loss: the
    dense stage trains on as many threads as the largest node has cores, and a float sum over 2
    threads differs from one over 1 in its last bits: bit-identical masks, not losses.)"""
    out = {}
    for chain in sorted(p for p in root.iterdir() if (p / "rounds").is_dir()):
        recs = [json.loads(f.read_text()) for f in sorted((chain / "rounds").iterdir())]
        out[chain.name] = sorted((r["round"], r["mask_sha256"], r["metrics"]["metric"]) for r in recs)
    return out


def mlflow_records(uri: str, experiment: str) -> dict:
    """The sweep's MLflow runs, keyed so two sweeps of the same config compare equal."""
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=500)
    out = {"status": sorted(r.info.status for r in runs)}
    for r in runs:
        kind, tags = r.data.tags["ltvl.kind"], r.data.tags
        key = (kind, tags.get("ltvl.init", ""), tags.get("ltvl.round", ""))
        assert key not in out, f"duplicate {kind} run {key}"
        history = client.get_metric_history(r.info.run_id, "metric")
        out[key] = (tags.get("ltvl.mask_sha256"), sorted((m.step, m.value) for m in history))
    return out


def test_a_sweep_scales_a_zero_worker_cluster_up_then_down_and_matches_a_local_run(cluster, tmp_path):
    assert cluster.nodes.wait_for(lambda n: n == 1, 30), cluster.nodes.samples  # the head alone
    # a worker larger than any node type is refused before anything runs, naming the node types
    rc, log = cluster.submit("too-big", "--set", "resources={cpus_per_worker: 2, driver_resources: {trial_driver: 1}}")
    assert rc != 0 and "needs CPU 2, more than any node has" in log, log[-3000:]
    assert "gpu_spot (CPU 1, up to 2 nodes)" in log and "head (CPU 0, trial_driver 1000)" in log
    assert "resources.num_workers/cpus_per_worker" in log
    assert max(cluster.nodes.counts()) == 1  # … and nothing was launched for it

    t0 = cluster.nodes.now()
    rc, log = cluster.submit("grown")
    t1 = cluster.nodes.now()
    assert rc == 0, log[-4000:]
    during = cluster.nodes.counts(since=t0)
    assert during[0] == 1 and max(during) == 3, cluster.nodes.samples  # 0 → 2 workers: one per chain
    assert log.count("│ done ") == 2 and "Cluster nodes: 1 at 0:00 → " in log and "(peak 3;" in log, log[-3000:]
    got = chain_masks(cluster.tmp / "grown" / "chains")
    assert len(got) == 2 and all(len(rounds) == 3 for rounds in got.values())

    # the same sweep on this machine's own embedded Ray (no cluster): bit-identical masks and metrics
    local_env = fresh_env(tmp_path)
    out = subprocess.run([sys.executable, "sweeps/rewind_grid.py", *SWEEP, "--set", f"root={tmp_path / 'chains'}",
                          "--set", f"storage={tmp_path / 'ray'}", "--set", "resources={driver_resources: {}}"],
                         cwd=REPO, env=local_env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert chain_masks(tmp_path / "chains") == got

    # idle: back to the head alone after the idle timeout (the local run above took longer than it)
    assert cluster.nodes.wait_for(lambda n: n == 1, 90), cluster.nodes.samples
    timeline = [(t, len(ids)) for t, ids in cluster.nodes.samples if t >= t0]
    (cluster.tmp / "timeline.json").write_text(json.dumps({"t_job_start": t0, "t_job_end": t1, "samples": timeline}))
    print(f"autoscaling timeline: {cluster.tmp / 'timeline.json'}")
    cluster.done["grown"] = got


def test_a_preempted_node_is_replaced_and_its_chain_resumes_losing_nothing(cluster):
    if "grown" not in cluster.done:
        pytest.skip("needs the undisturbed sweep of the test before")
    gate, rounds_log = cluster.tmp / "gate", cluster.tmp / "rounds.log"
    gate.mkdir()
    t0 = cluster.nodes.now()
    job = cluster.submit("preempted", env={"LTVL_HOLD_AT_ROUND": f"2:{gate}", "LTVL_ROUND_LOG": str(rounds_log)},
                         wait=False)
    try:
        deadline = time.monotonic() + 300
        while not list(gate.glob("holding-*")) and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.5)
        holders = list(gate.glob("holding-*"))
        assert holders, (cluster.tmp / "preempted.log").read_text()[-3000:]
        victim = holders[0].read_text()  # the Ray node id of a worker whose round 2 is in flight
        assert victim in {n["node_id"] for n in ray_nodes(cluster.state)}
        out = subprocess.run([str(BIN / "ltvl"), "cluster", "preempt", victim, "--dir", str(cluster.dir)],
                             env=cluster.env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and f"preempted {victim} (gpu_" in out.stdout, out.stdout + out.stderr
        t_lost = cluster.nodes.now()
        (gate / "release").touch()
        rc = job.wait(timeout=600)
    finally:
        if job.poll() is None:
            job.kill()
    log = (cluster.tmp / "preempted.log").read_text()
    (cluster.tmp / "timeline-preempted.json").write_text(json.dumps(
        {"t_job_start": t0, "t_preempted": t_lost, "victim": victim,
         "samples": [(t, sorted(ids)) for t, ids in cluster.nodes.samples if t >= t0]}))
    assert rc == 0, log[-4000:]
    assert victim not in {n["node_id"] for n in ray_nodes(cluster.state)}
    samples = [(t, ids) for t, ids in cluster.nodes.samples if t >= t0]
    t_left = next(t for (t, ids), (_, prev) in zip(samples[1:], samples) if victim in prev and victim not in ids)
    assert t_left <= t_lost  # it went when the provider terminated it
    before = set().union(*(ids for t, ids in samples if t < t_left))
    after = set().union(*(ids for t, ids in samples if t >= t_left))
    assert victim in before and victim not in after
    assert after - before, cluster.nodes.samples  # a replacement node was launched
    # the summary's node line counts the preempted node among those that left (idle ones leave too)
    assert re.search(r"\(peak \d+; \d+ joined, [1-9]\d* left during the sweep\)", log), log[-2000:]

    # nothing lost, nothing twice: the masks and metrics of the undisturbed sweep …
    assert chain_masks(cluster.tmp / "preempted" / "chains") == cluster.done["grown"]
    computed = rounds_log.read_text().splitlines()  # "chain round" per round computed (not replayed)
    assert len(computed) == len(set(computed)), computed  # no round computed twice, the lost one included
    assert {line.split()[1] for line in computed} >= {"1", "2"} and len({line.split()[0] for line in computed}) == 2
    # … and the same MLflow records: one run per chain/round, one metric point per round, none left open
    uri = cluster.state.tracking_uri
    grown, preempted = mlflow_records(uri, "grown"), mlflow_records(uri, "preempted")
    assert preempted == grown and set(grown["status"]) == {"FINISHED"}
    assert sum(1 for k in grown if k[0] == "round") == 6


def test_two_clusters_on_one_machine_leave_each_other_alone(cluster, tmp_path):
    before = {n["node_id"] for n in ray_nodes(cluster.state)}
    env = fresh_env(tmp_path)
    other = tmp_path / "other"
    out = subprocess.run([str(BIN / "ltvl"), "cluster", "up", "--no-mlflow", "--dir", str(other)], env=env,
                         capture_output=True, text=True, timeout=300)
    try:
        assert out.returncode == 0, out.stdout + out.stderr
        second = ClusterState.load(other)
        assert second.gcs_port != cluster.state.gcs_port and second.token_path != cluster.state.token_path
        theirs = {n["node_id"] for n in ray_nodes(second)}
        assert len(theirs) == 2 and not theirs & before
        assert {n["node_id"] for n in ray_nodes(cluster.state)} <= before  # the first saw nobody join (idle
        # workers of the sweep before may still be leaving)
    finally:
        down = subprocess.run([str(BIN / "ltvl"), "cluster", "down", "--dir", str(other)], env=env,
                              capture_output=True, text=True, timeout=180)
    assert "stopped: ray-worker-1, ray-head" in down.stdout, down.stdout + down.stderr
    head = cluster.state.nodes["ltvl-head"]
    assert head in {n["node_id"] for n in ray_nodes(cluster.state)} <= before  # and lives on when it went
