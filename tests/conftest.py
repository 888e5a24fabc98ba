import json
import os
import secrets
import shutil
import tempfile

import pytest
import torch
from transformers import BertConfig, BertModel

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two xdist workers on a 2-core machine: one torch thread each (and in the processes they
    # start), or four threads fight over two cores and CPU-bound tests run several times slower.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_runtest_logreport(report):
    """With LTVL_TEST_TIMELINE=<file>, one JSON line per test phase (worker, test, phase, start,
    stop): where the suite's time goes, per file and per xdist worker (tests/helpers/timeline.py)."""
    path = os.environ.get("LTVL_TEST_TIMELINE")
    if path and not hasattr(report, "node"):  # under xdist the controller sees every report again
        with open(path, "a") as f:
            f.write(json.dumps({"worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "test": report.nodeid,
                                "phase": report.when, "start": report.start, "stop": report.stop}) + "\n")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` with one file queued ahead per worker instead of xdist's two tests.

    Why: xdist hands a worker its next file once two of its tests are left, so a worker ending a
    file whose last tests are long (test_ray_chains' sweeps) claims the queue's one-test files
    meanwhile, and the other worker runs dry minutes early (2026-11-25: workers ended at 1248
    and 1550 s). Asking for a file only when one test is left is the least a worker can hold
    (it runs a test once it knows the next); replaying that run's test times, the workers end at
    1433 and 1363 s."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    if not all(hasattr(LoadFileScheduling, a) for a in ("_reschedule", "_pending_of", "_assign_work_unit")):
        return None  # xdist's internals moved (written for 3.6-3.8): its own scheduler, only slower

    class OneFileAhead(LoadFileScheduling):
        def _reschedule(self, node) -> None:
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
                return
            if self._pending_of(self.assigned_work[node]) <= 1:
                self._assign_work_unit(node)

    return OneFileAhead(config, log)


@pytest.fixture(scope="session", autouse=True)
def ltvl_home(tmp_path_factory):
    """Every test session gets its own LTVL_HOME, HOME and Ray token path: datasets ltvl prepares,
    the prep cache, the MLflow store, ~/.ray and its auth token all start empty, so nothing an
    earlier run left on this machine can make a test pass (or fail)."""
    keys = ("LTVL_HOME", "HOME", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_AUTH_TOKEN", "MLFLOW_TRACKING_URI",
            "RAY_TMPDIR")
    old = {k: os.environ.get(k) for k in keys}
    path = tmp_path_factory.mktemp("ltvl_home")
    home = tmp_path_factory.mktemp("home")
    for k in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "MLFLOW_TRACKING_URI"):  # never a cluster or server of the user's
        os.environ.pop(k, None)
    token = home / ".ray" / "auth_token"  # Ray refuses a RAY_AUTH_TOKEN_PATH that names no file
    token.parent.mkdir()
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    # Ray's sessions (logs, a copy of each job's working_dir) go to a short dir of our own, not a
    # shared /tmp/ray that Ray never empties; short, because Ray's unix socket paths must fit 107 bytes.
    ray_tmp = tempfile.mkdtemp(prefix="ltvl-t-", dir="/tmp")
    os.environ.update(LTVL_HOME=str(path), HOME=str(home), RAY_AUTH_TOKEN_PATH=str(token), RAY_TMPDIR=ray_tmp)
    yield path
    shutil.rmtree(ray_tmp, ignore_errors=True)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def tiny_bert():
    """A real transformers BERT small enough for brute-force checks."""
    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=20))


def brute_force_prune(weights: dict, alive: dict | None, k: int, scores=None) -> dict:
    """Reference: stable sort of all live scores, take the first k."""
    names = list(weights)
    sc = scores or {n: weights[n].abs().float() for n in names}
    flat = torch.cat([sc[n].flatten() for n in names])
    live = torch.cat([alive[n].flatten() for n in names]) if alive else torch.ones_like(flat, dtype=torch.bool)
    idx = torch.arange(flat.numel())[live]
    chosen = idx[torch.argsort(flat[live], stable=True)][:k]
    out = torch.zeros(flat.numel(), dtype=torch.bool)
    out[chosen] = True
    res, off = {}, 0
    for n in names:
        res[n] = out[off: off + weights[n].numel()].view(weights[n].shape)
        off += weights[n].numel()
    return res
