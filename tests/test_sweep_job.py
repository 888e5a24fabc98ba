"""The product path end to end: `ray job submit` of sweeps/rewind_grid.py to a real `ray start
--head`, lineage into a real `mlflow server` (sqlite + served artifacts), checked via MlflowClient."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ltvl.pruning import load_mask
from ltvl.tracking.lineage_tree import ancestry
from tests.mlflow_server import MlflowServer, free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def ray_head(tmp_path):
    # token auth on both sides: Ray >= 2.52 protects the job API with ~/.ray/auth_token
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    port, dash = free_port(), free_port()
    subprocess.run([str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2", "--node-ip-address=127.0.0.1",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
                    "--disable-usage-stats"], check=True, env=env, capture_output=True)
    yield f"http://127.0.0.1:{dash}", env
    subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True)


@pytest.mark.long
def test_ray_job_submit_sweep_records_lineage_in_mlflow_server(tmp_path, ray_head):
    address, env = ray_head
    server = MlflowServer(tmp_path / "mlflow").start()
    try:
        env = {**env, "LTVL_HOME": str(tmp_path / "home")}
        cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
               sys.executable, "sweeps/rewind_grid.py", "--config", "tests/configs/tiny_rewind_grid.yaml",
               "--set", f"tracking_uri={server.uri}", "--set", f"root={tmp_path / 'chains'}",
               "--set", f"storage={tmp_path / 'ray'}"]
        job = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        out = job.stdout + job.stderr
        (tmp_path / "job.log").write_text(out)
        assert job.returncode == 0, out[-4000:]
        assert "sparsest round keeping" in out, out[-3000:]  # the summary table …
        assert f"Open the comparison:  open {server.uri}" in out  # … and how to open it
        client = MlflowClient(tracking_uri=server.uri)
        exp = client.get_experiment_by_name("ci-rewind-grid")
        runs = client.search_runs([exp.experiment_id], max_results=500)
        by_kind = {}
        for r in runs:
            by_kind.setdefault(r.data.tags["ltvl.kind"], []).append(r)
        assert len(by_kind["chain"]) == 3 and len(by_kind["dense"]) == 1  # one run per chain; one shared dense run
        assert sorted(r.data.tags["ltvl.init"] for r in by_kind["chain"]) == ["RP", "theta0", "theta_i"]
        assert len(by_kind["round"]) == 3 * 3  # rounds 0, 1, 2 of each chain, once
        for chain in by_kind["chain"]:
            steps = sorted(m.step for m in client.get_metric_history(chain.info.run_id, "metric"))
            assert steps == [0, 1, 2]
            assert chain.data.tags["ltvl.dense_run_id"] == by_kind["dense"][0].info.run_id
        for r in by_kind["round"]:
            sha = r.data.tags["ltvl.mask_sha256"]
            local = client.download_artifacts(r.info.run_id, f"mask/{sha}.mask.safetensors", str(tmp_path / "dl"))
            assert load_mask(local).sha256 == sha
        last = next(r for r in by_kind["round"] if r.data.tags["ltvl.round"] == "2"
                    and r.data.tags["ltvl.init"] == "theta_i")
        walk = ancestry(server.uri, last.data.tags["ltvl.mask_sha256"])
        assert [a.round for a in walk] == [2, 1, 0, None] and walk[-1].kind == "dense"
        hint = json.loads(next((tmp_path / "chains").glob("*/mlflow.json")).read_text())
        assert hint["tracking_uri"] == server.uri
    finally:
        server.stop()
