"""A table of bad inputs, each refused before any compute with exit 2, the key or file it is about,
and no traceback: every config section and key of a sweep, the ltvl command's arguments, and the
environment variables ltvl reads. (Bad files have their own tests: test_untrusted_files.py,
test_checkpoints.py, test_published_data.py, test_importers.py, test_mask.py.)"""

import sys
from pathlib import Path

import pytest

from ltvl.sweep.main import main as sweep_main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "sweeps" / "configs"

# (--set or other sweep arguments, what the message must say)
SWEEP_CASES = [
    # top level
    (["--set", "foo=1"], r"unknown config key 'foo'"),
    (["--set", "name=../x"], r"not a safe directory name"),
    (["--set", "name=a/b"], r"not a safe directory name"),
    (["--set", "kind=search"], r"kind: this entry point runs 'rewind_grid' sweeps, not 'search'"),
    (["--set", "keep=2"], r"keep 2.0 outside \(0, 1\]"),
    (["--set", "keep=0"], r"keep 0.0 outside"),
    (["--set", "report_p=0.9"], r"config key 'report_p' is now 'keep'"),
    (["--set", "early_stop.p=0.9"], r"config key 'early_stop.p' is now 'early_stop.keep'"),
    (["--set", "retry_unlearned=-1"], r"retry_unlearned -1 is outside \[0, 10\]"),
    (["--set", "retry_unlearned=11"], r"retry_unlearned 11 is outside"),
    (["--set", "share_masks=true"], r"share_masks needs seed_informed"),
    (["--set", "controls=3"], r"controls must be bool"),
    (["--set", "tracking_uri=ftp://x"], r"not an MLflow tracking URI"),
    (["--set", "tracking_uri=mlflow.db"], r"not an MLflow tracking URI"),
    (["--set", "novalue"], r"is not key=value"),
    (["--set", "=3"], r"is not key=value"),
    (["--set", "params.lr=[1,2"], r"cannot parse"),
    (["--set", "baselines=[lucky]"], r"baselines\[0\]: unknown ticket 'lucky'"),
    (["--set", "baselines=imp"], r"baselines must be a list"),
    (["--set", "transfer_to=[vqaa]"], r"transfer_to\[0\]: unknown task 'vqaa'"),
    (["--scale", "big"], r"no scale 'big'"),
    (["--config", "/nonexistent.yaml"], r"does not exist"),
    # params, one per parameter and kind of mistake
    (["--set", "params.unknown=1"], r"unknown chain parameter 'unknown'"),
    (["--set", "params.stpes=1"], r"did you mean 'steps'"),
    (["--set", "params.lr=fast"], r"params.lr must be float"),
    (["--set", "params.lr=-1"], r"below its range"),
    (["--set", "params.lr=.nan"], r"finite"),
    (["--set", "params.steps=0"], r"params.steps = 0 is below its range"),
    (["--set", "params.steps=1.5"], r"params.steps must be int"),
    (["--set", "params.steps=2000000"], r"beyond the limit"),
    (["--set", "params.batch_size=0"], r"below its range"),
    (["--set", "params.batch_size=100000"], r"beyond the limit"),
    (["--set", "params.weight_decay=-0.1"], r"below its range"),
    (["--set", "params.warmup_ratio=1"], r"above its range"),
    (["--set", "params.seed=-1"], r"below its range"),
    (["--set", "params.seed=true"], r"must be int"),
    (["--set", "params.amp=fp8"], r"unknown amp 'fp8'"),
    (["--set", "params.adamw_impl=foreach"], r"unknown adamw_impl"),
    (["--set", "params.preset=minilmm"], r"did you mean 'minilm'"),
    (["--set", "params.task=vqaa"], r"did you mean 'vqa'"),
    (["--set", "params.pooling=mean"], r"unknown pooling"),
    (["--set", "params.preset=tiny-lxmert", "--set", "params.pooling=cls+image"], r"applies to UNITER-style"),
    (["--set", "params.layers=0"], r"below its range"),
    (["--set", "params.layers=two"], r"must be int or one of 'preset'"),
    (["--set", "params.max_len=-1"], r"below its range"),
    (["--set", "params.eval_limit=0"], r"below its range"),
    (["--set", "params.rewind_fraction=1.5"], r"above its range"),
    (["--set", "params.schedule=cosine"], r"unknown schedule"),
    (["--set", "params.method=magic"], r"unknown method"),
    (["--set", "params.scope=local"], r"unknown scope"),
    (["--set", "params.rate=0"], r"below its range"),
    (["--set", "params.rate=1"], r"above its range"),
    (["--set", "params.target_sparsity=1"], r"above its range"),
    (["--set", "params.rounds=0"], r"below its range"),
    (["--set", "params.rounds=101", "--set", "params.target_sparsity=null"], r"beyond the limit"),
    (["--set", "params.jump=0"], r"below its range"),
    (["--set", "params.keep=0"], r"below its range"),
    (["--set", "params.keep=1.5"], r"above its range"),
    (["--set", "params.start_level=2"], r"start_level 2 needs schedule: adaptive"),
    (["--set", "params.masks_of_seed=1"], r"masks_of_seed 1 needs schedule: adaptive"),
    (["--set", "params.adv_use=always"], r"unknown adv_use"),
    (["--set", "params.adv_modality=audio"], r"unknown adv_modality"),
    (["--set", "params.adv_epsilon=-1"], r"below its range"),
    (["--set", "params.adv_steps=1000"], r"beyond the limit"),
    (["--set", "params.adv_kl=-1"], r"below its range"),
    (["--set", "params.loader_workers=100"], r"above its range"),
    (["--set", "params.checkpoint=/nonexistent"], r"preset 'minilm' takes no checkpoint"),
    (["--set", "params.preset=uniter-base", "--set", "params.checkpoint=/nonexistent"],
     r"checkpoint path does not exist"),
    (["--set", "params.checkpoint=random"], r"checkpoint: random applies to base presets"),
    (["--set", "params.preset=lxmert-base", "--set", "params.pooling=cls"], r"needs its pre-trained weights"),
    (["--set", "params.tokenizer=/nonexistent"], r"tokenizer directory does not exist"),
    (["--set", "params.allow_missing=("], r"invalid regex"),
    (["--set", "params.custom_size=1"], r"custom_size must be bool"),
    (["--set", "params.ticket=random"], r"ticket|source"),
    (["--set", "params.prime_checkpoint=3"], r"prime_checkpoint must be str"),
    (["--set", "params.data=/nonexistent"], r"not a dataset directory"),
    (["--set", "params.data=synthetic:nothing"], r"names no task"),
    (["--set", "params.rewind_step=5", "--set", "params.rewind_fraction=0.5", "--set", "grid={}"],
     r"both rewind_step \(5\) and rewind_fraction"),
    (["--set", "params.rate=0.001", "--set", "grid={}"], r"needs .* rounds to reach sparsity"),
    # grid and chains
    (["--set", "grid.seed=[0,0]"], r"grid.seed lists 0 twice"),
    (["--set", "grid.seed=5"], r"grid.seed must be a non-empty list"),
    (["--set", "grid.seed=[]"], r"grid.seed must be a non-empty list"),
    (["--set", "grid.seeds=[0]"], r"unknown chain parameter 'seeds'"),
    (["--set", "grid.lr=[fast]"], r"grid.lr\[0\] must be float"),
    (["--set", "grid.rate=[0.5, 2]"], r"grid.rate\[1\]"),
    (["--set", "grid.seed=[" + ",".join(map(str, range(10001))) + "]"], r"beyond 10,000 chains"),
    (["--set", "chains=[3]"], r"chains\[0\] must be a mapping"),
    (["--set", "chains={a: 1}"], r"chains must be a list"),
    (["--set", "chains=[{stepz: 1}]"], r"chains\[0\].stepz: unknown chain parameter"),
    (["--set", "chains=[{rewind_step: 0}]", "--set", "grid={}"], r"chains\[0\] is the same chain as grid point 0"),
    # resources
    (["--set", "resources.num_workers=0"], r"num_workers must be >= 1"),
    (["--set", "resources.num_workers=two"], r"resources.num_workers must be int"),
    (["--set", "resources.cpus_per_worker=0"], r"cpus_per_worker must be > 0"),
    (["--set", "resources.cpus_per_worker=-1"], r"cpus_per_worker must be > 0"),
    (["--set", "resources.max_failures=-1"], r"max_failures must be >= 0"),
    (["--set", "resources.max_concurrent_trials=0"], r"max_concurrent_trials must be >= 1"),
    (["--set", "resources.use_gpu=3"], r"use_gpu must be bool"),
    (["--set", "resources.gpus=1"], r"unknown config key 'resources.gpus'"),
    (["--set", "resources.driver_resources={trial_driver: lots}"], r"driver_resources.trial_driver must be an amount"),
    (["--set", "resources.driver_resources={trial_driver: -1}"], r"driver_resources.trial_driver must be an amount"),
    (["--set", "resources.driver_resources=[1]"], r"driver_resources must be a dict"),
    # early stopping
    (["--set", "early_stop.kind=soon"], r"unknown early_stop 'soon'"),
    (["--set", "early_stop.keep=1.5"], r"early-stop fraction 1.5 outside"),
    (["--set", "early_stop.keep=0"], r"early-stop fraction 0.0 outside"),
    # search (Optuna)
    (["--set", "search.algorithm=bayes"], r"unknown search 'bayes'"),
    (["--set", "search.num_samples=0"], r"num_samples must be >= 1"),
    (["--set", "search.num_samples=100000"], r"beyond 10,000 trials"),
    (["--set", "search.metric=metrc"], r"unknown search.metric 'metrc'.*did you mean 'metric'"),
    (["--set", "search.space={lr: {loguniform: [1e-4]}}"], r"search.space.lr.loguniform must be two numbers"),
    (["--set", "search.space={lr: {loguniform: 1e-4}}"], r"must be two numbers"),
    (["--set", "search.space={lr: {uniform: [a, b]}}"], r"must be two numbers"),
    (["--set", "search.space={lr: {uniform: [1, 0]}}"], r"bad bounds"),
    (["--set", "search.space={lr: {loguniform: [0, 1]}}"], r"bad bounds"),
    (["--set", "search.space={lr: {choice: []}}"], r"choice must be a non-empty list"),
    (["--set", "search.space={lr: {choice: 3}}"], r"choice must be a non-empty list"),
    (["--set", "search.space={lr: {normal: [0, 1]}}"], r"unknown distribution 'normal'"),
    (["--set", "search.space={lr: 3}"], r"must be one of"),
    (["--set", "search.space={lrr: {uniform: [0, 1]}}"], r"unknown chain parameter 'lrr'"),
    (["--set", "search.space={rate: {uniform: [0.5, 1.5]}}"], r"above its range"),
    (["--set", "search.space={method: {choice: [magnitude, magic]}}"], r"unknown method 'magic'"),
]


@pytest.mark.parametrize("argv,message", SWEEP_CASES, ids=[" ".join(a)[:60] for a, _ in SWEEP_CASES])
def test_a_bad_sweep_setting_is_refused_with_its_key(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LTVL_HOME", str(tmp_path / "home"))
    rc = sweep_main("rewind_grid", ["--dry-run", *argv], config_dir=CONFIGS)
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2, err[-2000:]
    assert "Traceback" not in err
    import re

    assert re.search(message, err), err[-2000:]


def _yaml_case(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return ["--config", str(p)]


YAML_CASES = [
    ("kind: [rewind_grid\n", r"not valid YAML"),
    ("- a\n- b\n", r"must be a mapping of config keys"),
    ("", r"is empty"),
    ("kind: transfer\n", r"is a 'transfer' config, this entry point runs 'rewind_grid'"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
     r"expands to more than 200,000 values"),
    ("params: {checkpoint: !required 'the UNITER file'}\n", r"params.checkpoint is required: the UNITER file"),
    ("params: !!python/object/apply:os.system ['true']\n", r"not valid YAML"),
    ("scales: {smoke: {params: {stpes: 3}}}\n", r"scales.smoke.params.stpes: unknown chain parameter"),
    ("scales: {smoke: {scales: {}}}\n", r"a scale cannot define scales"),
    ("\xff\xfe garbage", r"not valid YAML"),
]


@pytest.mark.parametrize("text,message", YAML_CASES, ids=[m[:40] for _, m in YAML_CASES])
def test_a_bad_config_file_is_refused(text, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LTVL_HOME", str(tmp_path / "home"))
    p = tmp_path / "c.yaml"
    p.write_bytes(text.encode("latin-1") if text.startswith("\xff") else text.encode())
    rc = sweep_main("rewind_grid", ["--dry-run", "--config", str(p)], config_dir=CONFIGS)
    err = " ".join(capsys.readouterr().err.split())
    import re

    assert rc == 2 and "Traceback" not in err and re.search(message, err), err[-2000:]


def test_a_config_file_too_large_is_refused_before_it_is_parsed(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LTVL_HOME", str(tmp_path / "home"))
    p = tmp_path / "big.yaml"
    p.write_text("chains:\n" + "  - {seed: 0}\n" * 200_000)
    rc = sweep_main("rewind_grid", ["--dry-run", "--config", str(p)], config_dir=CONFIGS)
    assert rc == 2 and "beyond 1,048,576 for a config" in " ".join(capsys.readouterr().err.split())


def _cli(argv, capsys, monkeypatch):
    from ltvl.cli import main

    monkeypatch.setattr(sys, "argv", ["ltvl", *map(str, argv)])
    with pytest.raises(SystemExit) as e:
        main()
    return e.value.code, " ".join(capsys.readouterr().err.split())


CLI_CASES = [
    (["imp", "--task", "toy", "--rounds", "0"], r"option.rounds = 0 is below its range"),
    (["imp", "--task", "toy", "--layers", "x"], r"--layers 'x' is not a number"),
    (["imp", "--task", "toy", "--rewind-step", "500", "--steps", "10"], r"rewind step 500"),
    (["imp", "--task", "toy", "--ticket", "random"], r"needs --ticket .* and --source"),
    (["imp", "--task", "toy", "--steps", "2", "--root", "/proc/ltvl-no"], r"/proc/ltvl-no: No such file or directory"),
    (["prune", "/nonexistent.safetensors", "--out", "m.mask"], r"checkpoint path does not exist"),
    (["prune", "CK", "--sparsity", "1.5", "--out", "m.mask"], r"outside \[0, 1\)"),
    (["prune", "CK", "--random", "--high-magnitude", "--out", "m.mask"], r"exclude each other"),
    (["prune", "CK"], r"missing --out"),
    (["prune", "CK", "--preset", "nope", "--out", "m.mask"], r"unknown backbone preset 'nope'"),
    (["mask", "info", "/nonexistent.mask"], r"mask file does not exist"),
    (["report", "--experiment", "x", "--p", "150"], r"--p 150.0 is outside \(0, 100\]"),
    (["report", "--experiment", "x", "--p", "0"], r"outside \(0, 100\]"),
    (["data", "prepare", "coco", "--out", "x"], r"unknown dataset 'coco'"),
    (["data", "import", "uniter", "--task", "gqa", "--out", "x", "--split", "train=/nonexistent"],
     r"does not read task 'gqa'"),
    (["data", "import", "vilt", "--task", "gqa", "--out", "x", "--split", "train=/nonexistent"],
     r"ViLT publishes no GQA files"),
    (["data", "import", "lxmert", "--task", "vqa", "--out", "x", "--split", "train"], r"is not NAME=PATH"),
    (["data", "import", "tsv", "--task", "vqa", "--out", "x", "--split", "train=a"], r"unknown format 'tsv'"),
    (["data", "synth", "vqa", "--out", "OUT", "--regions", "3"], r"regions must be >= 9"),
    (["data", "info", "/nonexistent"], r"not a dataset directory"),
    (["cluster", "up", "--head-cpus", "0"], r"--head-cpus 0.0 is below 1"),
    (["cluster", "up", "--timeout", "0"], r"--timeout 0 must be positive"),
    (["cluster", "up", "--max-workers", "3"], r"need --autoscale"),
    (["lineage"], r"give a mask sha256 or a run id"),
]


@pytest.mark.parametrize("argv,message", CLI_CASES, ids=[" ".join(a)[:50] for a, _ in CLI_CASES])
def test_a_bad_command_line_is_refused_with_its_argument(argv, message, capsys, monkeypatch, tmp_path):
    import re

    import torch
    from safetensors.torch import save_file

    monkeypatch.setenv("LTVL_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    ck = tmp_path / "ck.safetensors"
    save_file({"encoder.layer.0.attention.self.query.weight": torch.ones(4, 4)}, str(ck))
    argv = [str(ck) if a == "CK" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    code, err = _cli(argv, capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err and re.search(message, err), err[-2000:]


ENV_CASES = [
    ({"LTVL_PROGRESS_S": "often"}, r"LTVL_PROGRESS_S"),
    ({"LTVL_PROGRESS_LOG_S": "-1"}, r"LTVL_PROGRESS_LOG_S"),
    ({"LTVL_TRACKING_TIMEOUT": "soon"}, r"LTVL_TRACKING_TIMEOUT"),
    ({"LTVL_GPU_TFLOPS": "fast"}, r"LTVL_GPU_TFLOPS='fast' is not a positive throughput"),
    ({"LTVL_GPU_TFLOPS": "0"}, r"LTVL_GPU_TFLOPS='0' is not a positive throughput"),
    ({"LTVL_HOME": "/proc/ltvl-home"}, r"No such file or directory|/proc/ltvl-home"),
]


@pytest.mark.parametrize("env,message", ENV_CASES, ids=[next(iter(e)) for e, _ in ENV_CASES])
def test_a_bad_environment_variable_is_named(env, message, capsys, tmp_path, monkeypatch):
    import re

    monkeypatch.setenv("LTVL_HOME", str(tmp_path / "home"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    rc = sweep_main("rewind_grid", ["--set", "params.preset=tiny", "--set", "params.data=synthetic:vqa",
                                    "--set", f"tracking_uri=sqlite:///{tmp_path / 'm.db'}"], config_dir=CONFIGS)
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and "Traceback" not in err and re.search(message, err), err[-2000:]


def test_the_table_has_over_a_hundred_cases():
    assert len(SWEEP_CASES) + len(YAML_CASES) + len(CLI_CASES) + len(ENV_CASES) + 1 >= 100
