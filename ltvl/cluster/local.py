"""A real two-node Ray cluster plus an MLflow server on this machine, all on 127.0.0.1.

``ltvl cluster up`` starts a Ray head, a *second* Ray node that joins it with its own
resources, and ``mlflow server`` (sqlite + served artifacts), each in its own session, and
records their PIDs in ``<dir>/cluster.json``. ``down`` stops exactly those process groups and
nothing else (never ``ray stop``, which kills every Ray on the machine). It is the multi-node
path you can test without a cloud account: jobs go through ``ray job submit`` with token auth,
and chains that need more than one node's CPUs are spread over both nodes.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from ltvl.cluster.autoscale import AutoscaleSpec
from ltvl.cluster.procs import Listener, group_members, listeners, proc_info, same_process, stop_group
from ltvl.util.atomic import atomic_write_text
from ltvl.util.errors import LtvlError

LOOPBACK = "127.0.0.1"
STATE_FILE = "cluster.json"
RAY_LOGS = "ray-logs"  # where `down` keeps each node's Ray logs
RAY_TMP_PREFIX = "ltvl-ray-"


def default_dir() -> Path:
    from ltvl.util.home import home
    return home() / "local-cluster"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@dataclass
class Service:
    name: str
    pid: int
    start_ticks: int
    log: str


@dataclass
class ClusterState:
    dir: str
    gcs_port: int
    dashboard_port: int
    mlflow_port: int | None
    ray_tmp: str = ""
    services: list[Service] = field(default_factory=list)
    token_path: str = ""  # Ray's auth token for this cluster (RAY_AUTH_TOKEN_PATH); never ~/.ray
    nodes: dict[str, str] = field(default_factory=dict)  # node name -> Ray node id
    autoscaling_config: str = ""  # set when the head's autoscaler launches the worker nodes

    @property
    def ray_address(self) -> str:
        return f"{LOOPBACK}:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://{LOOPBACK}:{self.dashboard_port}"

    @property
    def tracking_uri(self) -> str | None:
        return f"http://{LOOPBACK}:{self.mlflow_port}" if self.mlflow_port else None

    def env(self) -> dict[str, str]:
        """What a shell (or a job) needs to talk to this cluster."""
        out = {"RAY_ADDRESS": self.dashboard, "RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        if self.token_path:
            out["RAY_AUTH_TOKEN_PATH"] = self.token_path
        if self.tracking_uri:
            out["MLFLOW_TRACKING_URI"] = self.tracking_uri
        return out

    def save(self) -> None:
        atomic_write_text(Path(self.dir) / STATE_FILE, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: Path) -> ClusterState | None:
        f = Path(directory) / STATE_FILE
        if not f.exists():
            return None
        d = json.loads(f.read_text())
        d["services"] = [Service(**s) for s in d["services"]]
        return cls(**d)


def _bin(name: str) -> str:
    """The console script next to this interpreter (the project's venv), else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def agent_port() -> list[str]:
    """A node's dashboard agent listens on 52365 unless told otherwise: a second node or a second
    cluster on this machine then cannot start its agent, and jobs cannot be submitted to it."""
    return [f"--dashboard-agent-listen-port={free_port()}"]


def ensure_token(directory: Path) -> str:
    """The cluster's Ray auth token file: the one ``RAY_AUTH_TOKEN_PATH`` names if set (made there
    if it does not exist yet), else one made for this cluster in its state directory. ``ray start
    --head`` with token auth refuses to start without one, and relying on ``~/.ray/auth_token``
    would make a fresh machine fail."""
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path(directory) / "auth_token")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made by a concurrent `up` sharing the path: use theirs
            return str(path)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return str(path)


def service_env(mlflow_port: int | None, token_path: str = "") -> dict[str, str]:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if token_path and "RAY_AUTH_TOKEN" not in os.environ:
        env["RAY_AUTH_TOKEN_PATH"] = token_path
    if mlflow_port:  # jobs on this cluster log to its MLflow server unless told otherwise
        env["MLFLOW_TRACKING_URI"] = f"http://{LOOPBACK}:{mlflow_port}"
    env.pop("RAY_ADDRESS", None)
    return env


def _spawn(name: str, cmd: list[str], directory: Path, env: dict) -> Service:
    log = directory / f"{name}.log"
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=directory)
    time.sleep(0.2)
    info = proc_info(proc.pid)
    if info is None:
        raise LtvlError(f"{name} exited at once; see {log}", where="ltvl cluster up")
    return Service(name, proc.pid, info.start_ticks, str(log))


def _wait(what: str, ready, service: Service, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if ready():
            return
        if not same_process(service.pid, service.start_ticks):
            tail = Path(service.log).read_text(errors="replace")[-2000:]
            raise LtvlError(f"{what} exited while starting:\n{tail}", where=service.log)
        time.sleep(1)
    raise LtvlError(f"{what} did not come up within {timeout_s:.0f} s", where=service.log,
                    fix="read the log; on a busy machine give it longer with --timeout")


def _http_up(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except urllib.error.HTTPError:
        return True  # it answered (auth or 404): the server is up
    except (OSError, http.client.HTTPException):
        return False  # nothing there yet, or something that does not speak HTTP: not our server


def ray_nodes(state: ClusterState, env: dict | None = None) -> list[dict]:
    """Alive nodes, from Ray's state API behind the (token-protected) dashboard; [] while it does
    not answer. Plain HTTP: a ``ray list nodes`` process per look costs a core-second."""
    env = env if env is not None else os.environ
    token = env.get("RAY_AUTH_TOKEN") or (Path(state.token_path).read_text().strip() if state.token_path else "")
    req = urllib.request.Request(f"{state.dashboard}/api/v0/nodes?limit=1000&detail=false",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError):
        return []
    return [n for n in body.get("data", {}).get("result", {}).get("result", []) if n.get("state") == "ALIVE"]


_AGENT_READY = """
import sys, time
from ray._raylet import GcsClient
from ray._private.ray_constants import KV_NAMESPACE_DASHBOARD
from ray.dashboard.consts import DASHBOARD_AGENT_ADDR_NODE_ID_PREFIX
gcs, node, deadline = GcsClient(address=sys.argv[1]), sys.argv[2], time.time() + float(sys.argv[3])
key = (DASHBOARD_AGENT_ADDR_NODE_ID_PREFIX + node).encode()
ns = KV_NAMESPACE_DASHBOARD if isinstance(KV_NAMESPACE_DASHBOARD, bytes) else KV_NAMESPACE_DASHBOARD.encode()
while not gcs.internal_kv_get(key, ns, timeout=10):
    if time.time() > deadline:
        sys.exit(1)
    time.sleep(0.5)
"""


def wait_for_job_agent(state: ClusterState, head_node_id: str, env: dict, timeout_s: float) -> None:
    """Jobs go through the head's dashboard agent, which registers a few seconds after the head
    answers (longer on a loaded machine). A `ray job submit` before that fails with "No available
    agent to submit job", so `up` returns only once it has registered."""
    out = subprocess.run([sys.executable, "-c", _AGENT_READY, state.ray_address, head_node_id, str(timeout_s)],
                         env=env, capture_output=True, text=True, timeout=timeout_s + 60)
    if out.returncode != 0:
        raise LtvlError(f"the head's job agent did not register within {timeout_s:.0f} s:\n{out.stderr[-1500:]}",
                        where=str(Path(state.dir) / "ray-head.log"),
                        fix="read dashboard_agent.log under the cluster's Ray logs; retry with a longer --timeout")


def up(directory: Path, head_cpus: float = 1, worker_cpus: float = 1, with_mlflow: bool = True,
       object_store_mb: int = 256, timeout_s: float = 180, autoscale: AutoscaleSpec | None = None) -> ClusterState:
    """Start head, second node (or, with ``autoscale``, an autoscaler that launches worker nodes
    on demand) and MLflow; on any failure stop what was started and raise."""
    directory = Path(directory).resolve()
    if (old := ClusterState.load(directory)) is not None and any(
            same_process(s.pid, s.start_ticks) for s in old.services):
        raise LtvlError(f"a local cluster from {directory} is already running", where=str(directory / STATE_FILE),
                        fix="use it (ltvl cluster status), or stop it first with: ltvl cluster down")
    for name, v in (("--head-cpus", head_cpus), ("--worker-cpus", worker_cpus)):
        if v < 1 and not (autoscale and name == "--head-cpus"):
            raise LtvlError(f"{name} {v} is below 1: a node needs at least one CPU to run a chain's worker",
                            where=name, fix=f"{name} 1")
    if timeout_s <= 0:
        raise LtvlError(f"--timeout {timeout_s:g} must be positive", where="--timeout", fix="--timeout 180")
    directory.mkdir(parents=True, exist_ok=True)
    # Each node gets its own Ray temp dir: nodes sharing one would garbage-collect each other's
    # runtime-env files (the job's working_dir) and find each other via ray_current_cluster.
    # It is short and under /tmp because Ray's unix sockets live there (107-byte path limit).
    ray_tmp = tempfile.mkdtemp(prefix=RAY_TMP_PREFIX, dir="/tmp")
    state = ClusterState(str(directory), free_port(), free_port(), free_port() if with_mlflow else None, ray_tmp,
                         token_path="" if "RAY_AUTH_TOKEN" in os.environ else ensure_token(directory))
    store = ["--object-store-memory", str(object_store_mb * 1024 * 1024), "--disable-usage-stats"]
    head_resources: dict = {"trial_driver": 64}
    head_env: dict = {}
    head_extra: list[str] = []
    if autoscale is not None:
        config = autoscale.config(directory, Path(ray_tmp), state.gcs_port, worker_cpus, object_store_mb)
        head_resources = dict(config["available_node_types"][config["head_node_type"]]["resources"])
        head_cpus = head_resources.pop("CPU", 0)
        cfg_path = directory / "autoscaling.yaml"
        atomic_write_text(cfg_path, yaml.safe_dump(config, sort_keys=False))
        state.autoscaling_config = str(cfg_path)
        # RAY_FAKE_CLUSTER lets the autoscaler's provider start nodes on this machine
        head_env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "2"}
        head_extra = [f"--autoscaling-config={cfg_path}"]
    try:
        if with_mlflow:  # first: its port is bound before any Ray process picks random ports of its own
            _start_mlflow(state, directory, timeout_s)
        env = service_env(state.mlflow_port, state.token_path)
        head_env = {**env, **head_env}
        head = _spawn("ray-head", [
            _bin("ray"), "start", "--head", "--block", f"--port={state.gcs_port}", f"--node-ip-address={LOOPBACK}",
            "--node-name=ltvl-head", f"--temp-dir={ray_tmp}/head", f"--num-cpus={head_cpus:g}",
            "--resources", json.dumps(head_resources),
            "--include-dashboard=true", f"--dashboard-host={LOOPBACK}", f"--dashboard-port={state.dashboard_port}",
            f"--ray-client-server-port={free_port()}", *agent_port(), *store, *head_extra], directory, head_env)
        state.services.append(head)
        state.save()  # recorded at once: `down` can stop a half-started cluster
        _wait("the Ray head", lambda: _http_up(state.dashboard + "/api/version"), head, timeout_s)
        nodes: list[dict] = []
        expected = 1 if autoscale is not None else 2

        def all_nodes() -> bool:
            nodes[:] = ray_nodes(state, env)
            return len(nodes) >= expected
        if autoscale is None:
            worker_cmd = [sys.executable, "-m", "ltvl.cluster.loopback_node", "start", "--block",
                          f"--address={state.ray_address}", f"--node-ip-address={LOOPBACK}",
                          "--node-name=ltvl-worker-1", f"--temp-dir={ray_tmp}/worker-1", f"--num-cpus={worker_cpus:g}",
                          *agent_port(), *store]
            _start_retrying(state, "ray-worker-1", worker_cmd, directory, env, "the Ray nodes", all_nodes,
                            timeout_s, "timed out during startup")
        else:
            _wait("the Ray nodes", all_nodes, head, timeout_s)
        state.nodes = {n.get("node_name") or n["node_id"]: n["node_id"] for n in nodes}
        wait_for_job_agent(state, state.nodes["ltvl-head"], env, timeout_s)
        if autoscale is not None:
            from ltvl.ray.capacity import announce_capacity, capacity_from_config
            announce_capacity(state.ray_address, capacity_from_config(config), env)
        state.save()
        return state
    except BaseException:
        down(directory)
        raise


def _start_retrying(state: ClusterState, name: str, cmd: list[str], directory: Path, env: dict, what: str,
                    ready, timeout_s: float, retry_if: str, attempts: int = 3, before_retry=None) -> None:
    """Spawn a service and wait until ``ready()``; if it exits while starting with ``retry_if`` in
    its log (a transient failure: a lost port, Ray's fixed 30-s raylet registration wait on a
    busy machine), start it again, up to ``attempts`` times."""
    for attempt in range(1, attempts + 1):
        service = _spawn(name, cmd() if callable(cmd) else cmd, directory, env() if callable(env) else env)
        state.services.append(service)
        state.save()
        try:
            _wait(what, ready, service, timeout_s)
            return
        except LtvlError as e:
            if retry_if not in str(e).lower() or attempt == attempts:
                raise
            state.services.remove(service)
            if before_retry is not None:
                before_retry()


def _start_mlflow(state: ClusterState, directory: Path, timeout_s: float) -> None:
    """Start ``mlflow server`` and wait until it answers. A port picked free can be taken before
    the server binds it (another cluster's Ray on this machine picks random ports too): then the
    server exits saying so, and it is started again on a new port."""
    def cmd() -> list[str]:
        return [_bin("mlflow"), "server", "--host", LOOPBACK, "--port", str(state.mlflow_port), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}",
                "--artifacts-destination", str(directory / "mlflow-artifacts")]

    def new_port() -> None:
        state.mlflow_port = free_port()
    _start_retrying(state, "mlflow", cmd, directory, lambda: service_env(state.mlflow_port, state.token_path),
                    "the MLflow server", lambda: _http_up(state.tracking_uri + "/health"), timeout_s,
                    "address already in use", before_retry=new_port)


def down(directory: Path) -> list[str]:
    """Stop the recorded services, newest first; returns the names of those that were running."""
    state = ClusterState.load(Path(directory).resolve())
    if state is None:
        return []
    # Ray's gcs_server and `ray start --block` linger ~30 s on SIGTERM once jobs have run, and a
    # Ray node keeps nothing worth a graceful end (results live in the stores and MLflow): 5 s.
    stopped = [s.name for s in reversed(state.services)
               if stop_group(s.pid, s.start_ticks, grace_s=5 if s.name.startswith("ray") else 30)]
    if state.ray_tmp:
        keep_ray_logs(Path(state.ray_tmp), Path(state.dir) / RAY_LOGS)
    (Path(state.dir) / STATE_FILE).unlink(missing_ok=True)
    return stopped


def keep_ray_logs(ray_tmp: Path, dest: Path) -> None:
    """Move each node's Ray logs into the cluster directory, then delete the Ray temp dir.

    Why: every node's temp dir also holds a copy of each job's working_dir (tens of MB a node),
    and Ray never deletes it; a machine that runs many clusters fills its disk. The logs are
    the part worth keeping, so they outlive the cluster, under ``<dir>/ray-logs/<node>``
    (the previous cluster's logs are replaced)."""
    if not ray_tmp.name.startswith(RAY_TMP_PREFIX) or not ray_tmp.is_dir():
        return  # never delete a directory ltvl did not make
    shutil.rmtree(dest, ignore_errors=True)
    for node in sorted(p for p in ray_tmp.iterdir() if p.is_dir()):
        logs = node / "session_latest" / "logs"
        if logs.is_dir():
            shutil.copytree(logs, dest / node.name, symlinks=True, ignore_dangling_symlinks=True)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def preempt(directory: Path, node_id: str, timeout_s: float = 60) -> dict:
    """Take a worker node away through the autoscaler's provider, as a cloud reclaims a spot
    instance; returns the provider's record ({"node_type", "t", "terminated"})."""
    from ltvl.cluster.fake_provider import PREEMPT_DIR, PREEMPTED_DIR

    state = ClusterState.load(Path(directory).resolve())
    if state is None or not state.autoscaling_config:
        raise LtvlError("no autoscaling local cluster is recorded there", where=str(directory),
                        fix="start one with: ltvl cluster up --autoscale")
    done = Path(state.dir) / PREEMPTED_DIR / node_id
    done.unlink(missing_ok=True)
    (Path(state.dir) / PREEMPT_DIR).mkdir(exist_ok=True)
    (Path(state.dir) / PREEMPT_DIR / node_id).touch()
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if done.exists():
            record = json.loads(done.read_text())
            if not record["terminated"]:
                raise LtvlError(f"no worker node {node_id} to preempt", where="NODE_ID",
                                fix="pick a worker's id from: ltvl cluster status")
            return record
        time.sleep(0.5)
    raise LtvlError(f"the autoscaler did not act on the preemption of {node_id} within {timeout_s:.0f} s",
                    where=str(Path(state.dir) / "ray-head.log"))


def cluster_listeners(state: ClusterState) -> list[Listener]:
    """Every listening socket held by a process of the cluster's recorded process groups."""
    pids = [p.pid for s in state.services for p in group_members(s.pid)]
    return listeners(pids)


def status(directory: Path) -> dict:
    state = ClusterState.load(Path(directory).resolve())
    if state is None:
        return {"running": False, "dir": str(Path(directory).resolve())}
    alive = {s.name: same_process(s.pid, s.start_ticks) for s in state.services}
    socks = cluster_listeners(state)
    if state.autoscaling_config and alive.get("ray-head"):  # its worker nodes come and go
        live = ray_nodes(state, service_env(state.mlflow_port, state.token_path))
        state.nodes = {n["node_id"]: n.get("node_name") or "" for n in live}
    return {"running": all(alive.values()) and bool(alive), "dir": state.dir, "services": alive,
            "ray_address": state.ray_address, "dashboard": state.dashboard, "tracking_uri": state.tracking_uri,
            "nodes": state.nodes, "ray_logs": state.ray_tmp, "listening": [str(s) for s in socks],
            "public": [str(s) for s in socks if not s.loopback], "env": state.env(),
            "autoscaling": state.autoscaling_config or None}
