"""The MLflow UI answers the paper's two questions, in a real browser (headless Chromium).

A small real sweep (tiny model, synthetic VQA, real Ray) writes into a real `mlflow server` on
loopback; the test opens the deep link the sweep printed and reads the page as a researcher
would: the chain runs listed best ticket first with the best-ticket columns, the metric-vs-sparsity
chart, then one round run's lineage tags and its mask summary. Screenshots go to
``$LTVL_SCREENSHOTS`` (default: the test's tmp dir); README's come from here.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mlflow_server import MlflowServer

pytestmark = pytest.mark.long
CHROMIUM = Path("/usr/lib/chromium/chromium")  # the real binary: /usr/bin/chromium is a shell wrapper
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parents[1]


def browser(profile: Path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("no headless Chromium here: scripts/browser.sh installs Debian's chromium and chromium-driver "
                    "(needs root and apt-get)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1600,1000", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def wait_for(driver, predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate(driver)
        except Exception:  # noqa: BLE001 - the page is still rendering
            value = None
        if value:
            return value
        time.sleep(0.5)
    shot = Path(os.environ.get("LTVL_SCREENSHOTS", "/tmp")) / f"timeout-{int(time.time())}.png"
    driver.save_screenshot(str(shot))
    raise AssertionError(f"the page never showed {what} (screenshot {shot}); it shows:\n"
                         + driver.find_element("tag name", "body").text[:3000])


def body(driver) -> str:
    return driver.find_element("tag name", "body").text


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A finished tiny sweep in a real MLflow server: (server, sweep output)."""
    tmp = tmp_path_factory.mktemp("ui")
    server = MlflowServer(tmp / "server").start()
    env = {**os.environ, "LTVL_HOME": str(tmp / "home"), "LTVL_PROGRESS_LOG_S": "5"}
    try:
        out = subprocess.run([sys.executable, "sweeps/rewind_grid.py", "--config",
                              "tests/configs/tiny_rewind_grid.yaml", "--set", f"tracking_uri={server.uri}",
                              "--set", "name=ui-sweep", "--set", "grid.rewind_step=[0]"],  # IMP and RP
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-4000:] + out.stdout[-2000:]
        yield server, out.stderr + out.stdout, tmp
    finally:
        server.stop()


def test_sweep_log_is_quiet_and_timestamped(swept):
    _server, log, _tmp = swept
    for noise in ("Creating initial MLflow database tables", "Configuration for experiment", "TensorBoard",
                  "View detailed results here", "Generated new authentication token", "\x1b["):
        assert noise not in log, noise
    assert re.search(r"^\d\d:\d\d:\d\d IMP · vqa · rate 0\.5 · lr 0\.001 · seed 0  round 1 at 50\.0%: metric", log,
                     re.M)
    # a chain's status line (rounds of 4 steps are quick: whichever reading the view caught)
    assert re.search(r"^\d\d:\d\d:\d\d .*  (round \d/2 → \d+\.\d%|round dense)  step [1-4]/4  [\d.]+ steps/s", log,
                     re.M)
    assert "PYTHON worker processes" not in log
    assert "Metric against sparsity:" in log


def test_mlflow_ui_answers_which_chain_and_imp_vs_rp(swept, tmp_path):
    server, log, tmp = swept
    shots = Path(os.environ.get("LTVL_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    link = re.search(r"(http://127\.0\.0\.1:\d+/#/experiments/\S+)", log).group(1)
    assert link.startswith(server.uri)
    from mlflow import MlflowClient
    client = MlflowClient(server.uri)
    exp = client.get_experiment_by_name("ui-sweep")
    chains = client.search_runs([exp.experiment_id], "tags.`ltvl.kind` = 'chain'")
    names = sorted(r.info.run_name for r in chains)
    assert names == ["IMP · vqa · rate 0.5 · lr 0.001 · seed 0", "RP · vqa · rate 0.5 · lr 0.001 · seed 0"]

    driver = browser(tmp_path / "profile")
    try:
        # 1. the deep link: chain runs only, in chart view, with the metric-vs-sparsity chart
        driver.get(link)
        wait_for(driver, lambda d: all(n in body(d) for n in names), "the IMP and RP chain runs")
        wait_for(driver, lambda d: "metric_vs_sparsity_bp" in body(d), "the metric-vs-sparsity chart")
        text = body(driver)
        assert "round 1" not in text and "dense ·" not in text  # round and dense runs are filtered out
        driver.save_screenshot(str(shots / "mlflow-chains-chart.png"))
        # 2. the same runs as a table (MLflow 3.17 shows no metric columns by default): Columns ->
        # tick "Metrics" adds them; the rows stay sorted best ticket first
        driver.get(link.replace("compareRunsMode=CHART", "compareRunsMode=TABLE"))
        wait_for(driver, lambda d: [e for e in d.find_elements("css selector", "button")
                                    if e.text.strip() == "Columns"], "the Columns button")[0].click()
        wait_for(driver, lambda d: d.find_elements("xpath", "//*[starts-with(normalize-space(text()), 'Metrics (')]"),
                 "the Metrics group of the column picker")[0].click()
        from selenium.webdriver.common.keys import Keys
        driver.find_element("tag name", "body").send_keys(Keys.ESCAPE)
        for close in driver.find_elements("css selector", 'button[aria-label="Close"]'):  # the Assistant panel
            close.click()
        driver.execute_script("document.querySelectorAll('.ag-body-horizontal-scroll-viewport, "
                              ".ag-center-cols-viewport').forEach(v => v.scrollLeft = 100000)")
        headers = wait_for(driver, lambda d: (lambda h: h if {"best_sparsity_p99", "metric_at_best"} <= set(h)
                                              else None)(d.execute_script(
                                                  "return Array.from(document.querySelectorAll('.ag-header-cell'))"
                                                  ".map(e => e.innerText.trim())")), "the best-ticket columns")
        assert "metric_vs_sparsity_bp" in headers
        driver.save_screenshot(str(shots / "mlflow-chains-table.png"))
        best = max(chains, key=lambda r: (r.data.metrics["best_sparsity_p99"], r.data.metrics["metric_at_best"]))
        rows = driver.execute_script("return Array.from(document.querySelectorAll('.ag-pinned-left-cols-container "
                                     ".ag-row, .ag-center-cols-container .ag-row')).map(e => e.innerText)")
        assert any(best.info.run_name[:12] in r for r in rows)
        # 3. one round run: its lineage tags and its mask summary
        rnd = client.search_runs([exp.experiment_id], "tags.`ltvl.kind` = 'round' and tags.`ltvl.round` = '2'")[0]
        driver.get(f"{server.uri}/#/experiments/{exp.experiment_id}/runs/{rnd.info.run_id}")
        wait_for(driver, lambda d: rnd.info.run_name in body(d), "the round run's page")
        wait_for(driver, lambda d: "ltvl.mask_sha256" in body(d) and "ltvl.arm" in body(d), "the lineage tags")
        assert rnd.data.tags["ltvl.mask_sha256"][:12] in body(driver)
        driver.save_screenshot(str(shots / "mlflow-round-run.png"))
        run_page = f"{server.uri}/#/experiments/{exp.experiment_id}/runs/{rnd.info.run_id}"
        driver.get(f"{run_page}/artifacts/mask/summary.json")
        wait_for(driver, lambda d: '"empty_tensors"' in body(d) or "empty_tensors" in body(d), "the mask summary")
        assert rnd.data.tags["ltvl.mask_sha256"] in body(driver)
        driver.save_screenshot(str(shots / "mlflow-mask-summary.png"))
    finally:
        driver.quit()


def test_a_ticket_of_the_sweep_exports_verifies_and_scores_again(swept, tmp_path, monkeypatch):
    """#34: the sweep's sparsest IMP ticket, trained again from its store and held to its record, exported;
    verify passes and then names an edited card; eval scores the files to the recorded metrics exactly."""
    import json

    from typer.testing import CliRunner

    from ltvl.cli import app
    from ltvl.core.imp import ChainStore
    from ltvl.plan.config import load_config
    from ltvl.plan.plan import build_plan
    from ltvl.tickets.from_sweep import eval_ticket, export_from_sweep

    server, _log, tmp = swept
    monkeypatch.setenv("LTVL_HOME", str(tmp / "home"))
    config = str(REPO / "tests" / "configs" / "tiny_rewind_grid.yaml")
    sets = [f"tracking_uri={server.uri}", "name=ui-sweep", "grid.rewind_step=[0]"]
    imp = next(j for j in build_plan(load_config("rewind_grid", config, sets)).chains if j.label.startswith("IMP"))
    out = export_from_sweep(config, sets, imp.job.chain.short_hash, tmp_path / "ticket", keep=0.0)
    root = tmp / "home" / "sweeps" / "ui-sweep" / "chains"
    last = ChainStore(root, imp.job.chain, writer=False).finished_rounds()[-1]
    card = json.loads((out / "ticket.json").read_text())
    assert (card["round"], card["mask_sha256"], card["metrics"]) == (last["round"], last["mask_sha256"],
                                                                      last["metrics"])
    assert card["chain_sha256"] == imp.job.chain.sha256 and card["arm"] == "IMP" and len(card["data_sha256"]) == 64
    assert "ltvl sweep run" in card["command"] and card["verdict"]
    now, recorded, same_data = eval_ticket(out)
    assert same_data and now == recorded
    runner = CliRunner()
    assert runner.invoke(app, ["ticket", "verify", str(out)]).exit_code == 0
    readme = out / "README.md"
    readme.write_text(readme.read_text().replace("IMP", "a better arm", 1))
    res = runner.invoke(app, ["ticket", "verify", str(out)])
    assert res.exit_code == 1 and "README.md: differs from the card" in res.output


def test_the_sweep_s_tickets_are_registered_listed_on_the_models_page_and_exported_back(swept, tmp_path,
                                                                                        monkeypatch):
    """#34 item 4 on a real `mlflow server`: each chain's ticket is a model version with its card and mask
    as artifacts and tags for arm, sparsity, metric and dense run; registering again adds nothing; the
    Models page lists the tickets; `ltvl ticket export models:/NAME/VERSION` trains the weights again and
    the export verifies and scores its recorded metrics."""
    from mlflow import MlflowClient

    from ltvl.plan.config import load_config
    from ltvl.tickets.from_sweep import eval_ticket
    from ltvl.tickets.registry import export_from_registry, register_sweep

    server, log, tmp = swept
    monkeypatch.setenv("LTVL_HOME", str(tmp / "home"))
    config = str(REPO / "tests" / "configs" / "tiny_rewind_grid.yaml")
    # keep 1%: every chain's sparsest round is its answer (the sweep registered those keeping 99%, if any)
    cfg = load_config("rewind_grid", config, [f"tracking_uri={server.uri}", "name=ui-sweep", "grid.rewind_step=[0]",
                                              "keep=0.01"])
    register_sweep(cfg, server.uri)
    assert register_sweep(cfg, server.uri) == []  # idempotent: a re-run never duplicates a version
    client = MlflowClient(server.uri, registry_uri=server.uri)
    versions = {(mv.name, mv.tags["ltvl.round"]): mv for mv in client.search_model_versions("name LIKE 'ui-sweep.%'")}
    assert {name for name, _ in versions} == {"ui-sweep.vqa.IMP", "ui-sweep.vqa.RP"}
    imp = versions[("ui-sweep.vqa.IMP", "2")]
    assert imp.tags["ltvl.arm"] == "IMP" and float(imp.tags["ltvl.sparsity"]) == pytest.approx(0.75)
    assert {"ltvl.metric", "ltvl.dense", "ltvl.chain", "ltvl.mask_sha256", "ltvl.verdict"} <= set(imp.tags)
    # this tiny sweep's dense run answers like the majority: registered, and said to be no evidence
    assert imp.tags["ltvl.evidence"].startswith("none: its dense run") and "No evidence of a ticket" in imp.description
    assert "## Lineage" in imp.description
    arts = {a.path for a in client.list_artifacts(imp.run_id, "ticket-round-2")}
    assert {"ticket-round-2/README.md", "ticket-round-2/mask.safetensors", "ticket-round-2/ticket.json"} <= arts

    out = export_from_registry(server.uri, f"models:/ui-sweep.vqa.IMP/{imp.version}", tmp_path / "ticket")
    from ltvl.tickets.export import verify_ticket
    assert verify_ticket(out) == []
    now, recorded, same_data = eval_ticket(out)
    assert same_data and now == recorded and recorded["metric"] == pytest.approx(float(imp.tags["ltvl.metric"]))

    driver = browser(tmp_path / "profile")
    try:
        driver.get(f"{server.uri}/#/models")
        wait_for(driver, lambda d: "ui-sweep.vqa.IMP" in body(d) and "ui-sweep.vqa.RP" in body(d),
                 "the registered tickets on the Models page")
        shots = Path(os.environ.get("LTVL_SCREENSHOTS", tmp_path))
        driver.save_screenshot(str(shots / "mlflow-models.png"))
    finally:
        driver.quit()
