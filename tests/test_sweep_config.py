"""Sweep configs: YAML + --set, every bad key or type named before anything runs."""
from pathlib import Path

import pytest

from ltvl.plan.config import load_config
from ltvl.util.errors import LtvlError

CONFIGS = Path(__file__).resolve().parents[1] / "sweeps" / "configs"


@pytest.mark.parametrize("kind", ["rewind_grid", "adversarial_grid", "transfer", "search"])
def test_shipped_configs_load_and_build_every_chain(kind):
    from ltvl.ray.space import validate_space
    from ltvl.sweep.main import space_of
    cfg = load_config(kind, CONFIGS / f"{kind}.yaml", [])
    assert cfg.kind == kind
    assert validate_space(space_of(cfg)) >= 1


def test_main_job_config_is_two_rewinds_with_rp_reading_the_image():
    cfg = load_config("rewind_grid", CONFIGS / "rewind_grid.yaml", [])
    assert 0 in cfg.grid["rewind_step"] and len(cfg.grid["rewind_step"]) >= 2 and cfg.grid["rate"]
    assert cfg.params["pooling"] == "cls+image"  # the recipe that reads the image (bench/recipe_check.py)
    assert any(c.get("method") == "random" for c in cfg.chains)
    assert cfg.params["preset"] == "minilm" and cfg.params["data"] == "easy-vqa"


def test_set_overrides_params_grid_and_nested_sections():
    cfg = load_config("rewind_grid", CONFIGS / "rewind_grid.yaml",
                      ["params.steps=50", "grid.rate=[0.2, 0.4]", "resources.max_failures=3", "name=mine",
                       "early_stop.kind=below_dense", "tracking_uri=http://127.0.0.1:5999"])
    assert cfg.params["steps"] == 50 and cfg.grid["rate"] == [0.2, 0.4]
    assert cfg.resources.max_failures == 3 and cfg.name == "mine" and cfg.early_stop.kind == "below_dense"
    assert cfg.tracking_uri == "http://127.0.0.1:5999"


@pytest.mark.parametrize("setting, message", [
    (["params.stpes=5"], "(?s)params.stpes: unknown chain parameter 'stpes'.*did you mean 'steps'"),
    (["resorces.num_workers=2"], "(?s)unknown config key 'resorces'.*did you mean resources"),
    (["resources.num_wrkers=2"], "(?s)unknown config key 'resources.num_wrkers'.*num_workers"),
    (["params.steps=ten"], "params.steps must be int, got str 'ten'"),
    (["resources.num_workers=1.5"], "resources.num_workers must be int, got float 1.5"),
    (["grid.rate=0.5"], "grid.rate must be a non-empty list"),
    (["keep=2"], "keep 2.0 outside"),
    (["kind=other"], "unknown sweep kind 'other'"),
    (["steps"], "not key=value"),
])
def test_bad_settings_are_named(setting, message):
    with pytest.raises(LtvlError, match=message):
        load_config("rewind_grid", CONFIGS / "rewind_grid.yaml", setting)


def test_bad_config_files(tmp_path):
    with pytest.raises(LtvlError, match="does not exist"):
        load_config("rewind_grid", tmp_path / "nope.yaml", [])
    (tmp_path / "t.yaml").write_text("kind: transfer\n")
    with pytest.raises(LtvlError, match="is a 'transfer' config, this entry point runs 'rewind_grid'"):
        load_config("rewind_grid", tmp_path / "t.yaml", [])
    (tmp_path / "b.yaml").write_text("params: {task: vqa\n")
    with pytest.raises(LtvlError, match="not valid YAML"):
        load_config("rewind_grid", tmp_path / "b.yaml", [])
    (tmp_path / "c.yaml").write_text("chains: [{methd: random}]\n")
    with pytest.raises(LtvlError, match=r"chains\[0\].methd"):
        load_config("rewind_grid", tmp_path / "c.yaml", [])


def test_sweep_cli_reports_bad_input_with_exit_2(capsys):
    from ltvl.sweep.main import main
    assert main("rewind_grid", ["--set", "params.lr=fast"], config_dir=CONFIGS) == 2
    assert "params.lr must be float" in capsys.readouterr().err
    assert main("rewind_grid", ["--dry-run"], config_dir=CONFIGS) == 0
    err = capsys.readouterr().err
    assert "4 chain(s), 1 of them a 100%-sparse control" in err
    assert "100%-sparse control · vqa · seed 0  1 round(s)" in err


@pytest.mark.parametrize("setting, message", [
    (["search.space={lr: {gaussian: [0, 1]}}"], "unknown distribution 'gaussian'"),
    (["search.space={lr: {loguniform: [0.0, 1.0e-3]}}"], "bad bounds"),
    (["search.space={lr: 3}"], "search.space.lr must be one of"),
    (["params.data=synthetic:vqq"], "data 'synthetic:vqq' names no task"),
])
def test_bad_search_space_and_data_are_named_before_running(setting, message, capsys):
    from ltvl.sweep.main import main
    assert main("search", ["--dry-run", *sum((["--set", s] for s in setting), [])], config_dir=CONFIGS) == 2
    assert message in capsys.readouterr().err


def test_synthetic_data_failure_leaves_no_half_dataset(tmp_path, monkeypatch):
    from ltvl.vl.datasets import ensure_synthetic
    monkeypatch.setenv("LTVL_HOME", str(tmp_path))
    with pytest.raises(LtvlError, match="no synthetic generator"):
        ensure_synthetic("vqq")
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


def test_lineage_sync_needs_an_experiment(tmp_path):
    from typer.testing import CliRunner

    from ltvl.cli import app
    res = CliRunner().invoke(app, ["lineage", "--sync", str(tmp_path / "spool.jsonl"),
                                   "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert res.exit_code != 0 and "--sync needs the sweep's experiment name" in str(res.exception)
    res = CliRunner().invoke(app, ["lineage", "--sync", str(tmp_path / "spool.jsonl"), "--experiment", "nope",
                                   "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert "no experiment 'nope'" in str(res.exception)


STUDIES = {"table1": "rewind_grid", "rewinding": "rewind_grid", "transfer": "transfer", "iou": "rewind_grid",
           "at": "adversarial_grid", "backbones": "rewind_grid"}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Small checkpoints in the published layouts, to fill a paper scale's required values."""
    from tests.helpers import checkpoints as C

    root = tmp_path_factory.mktemp("published")
    C.uniter_pt(root / "uniter" / "uniter-base.pt")
    C.vocab_file(root / "uniter", C.CASED_VOCAB)
    C.bert_dir(root / "bert", vocab=C.CASED_VOCAB)
    C.lxmert_dir(root / "lxmert")
    C.vilt_dir(root / "vilt")
    return {"uniter": root / "uniter" / "uniter-base.pt", "bert": root / "bert", "lxmert": root / "lxmert",
            "vilt": root / "vilt"}


PAPER_SCALES = {"backbones": {"paper-uniter": "uniter", "paper-lxmert": "lxmert", "paper-vilt": "vilt"}}


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_every_study_config_builds_every_chain_at_every_scale(study, published):
    """Paper scales name the files they need as required values: unfilled, they refuse to run (naming
    the key); filled (here with small checkpoints in the published layouts), every chain resolves
    within its backbone's limits."""
    from ltvl.ray.space import validate_space
    from ltvl.sweep.main import space_of
    names = set()
    for scale in ("smoke", "real-cpu"):
        cfg = load_config(STUDIES[study], CONFIGS / f"study_{study}.yaml", [], scale)
        assert validate_space(space_of(cfg)) >= 1
        names.add(cfg.name)
    for scale, ck in PAPER_SCALES.get(study, {"paper": "uniter"}).items():
        path = CONFIGS / f"study_{study}.yaml"
        with pytest.raises(LtvlError, match=rf"params\.(checkpoint|data) is required at scale '{scale}'"):
            load_config(STUDIES[study], path, [], scale)
        sets = [f"params.checkpoint={published[ck]}", "params.data=/data/{task}", "params.custom_size=true"]
        if study == "table1":
            sets.append(f"params.prime_checkpoint={published['bert']}")
        cfg = load_config(STUDIES[study], path, sets, scale)
        assert validate_space(space_of(cfg)) >= 1
        names.add(cfg.name)
    assert len(names) == 2 + len(PAPER_SCALES.get(study, {"paper": 1}))  # a report never mixes scales


def test_scale_updates_params_and_grid_and_is_checked(tmp_path):
    cfg = load_config("rewind_grid", CONFIGS / "study_table1.yaml", ["params.steps=7"], "smoke")
    assert cfg.params["preset"] == "tiny" and cfg.params["steps"] == 7  # --set wins over the scale
    assert cfg.grid == {"seed": [0, 1], "rewind_step": [0, 6]} and cfg.name == "study-table1-smoke"
    with pytest.raises(LtvlError, match="(?s)no scale 'big'.*smoke, real-cpu, paper"):  # the table1 config
        load_config("rewind_grid", CONFIGS / "study_table1.yaml", [], "big")
    (tmp_path / "s.yaml").write_text("scales: {smoke: {params: {stpes: 3}}}\n")  # checked even when not chosen
    with pytest.raises(LtvlError, match="(?s)scales.smoke.params.stpes: unknown chain parameter.*did you mean 'steps'"):
        load_config("rewind_grid", tmp_path / "s.yaml", [])
