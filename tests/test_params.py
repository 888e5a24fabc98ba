"""The parameter schema, resolved once: identity, roles, checks, and the lineage defects it fixed."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ltvl.core.dense import DenseStore
from ltvl.core.imp import ChainSpec, ChainStore, run_chain
from ltvl.core.toy import ToyTask, make_toy_model
from ltvl.core.train import TrainConfig, Trainer
from ltvl.params.resolve import resolve, resolve_chain
from ltvl.params.schema import CHAIN, DEFAULTS, DENSE, INFO, NONE, TICKET, check
from ltvl.plan.config import load_config
from ltvl.pruning import Schedule
from ltvl.tracking.records import chain_name, chain_ops, lineage_tags
from ltvl.util.errors import LtvlError
from ltvl.vl.models.presets import PRESETS

REPO = Path(__file__).resolve().parents[1]
FORMAT0 = Path(__file__).parent / "fixtures" / "format0_toy_root"  # written by ltvl before the schema


# --- identity ----------------------------------------------------------------------------------
ALT = {"task": "gqa", "data": "/data/x", "preset": "tiny", "layers": 1, "max_len": 8, "custom_size": True,
       "allow_missing": r"pooler\.",
       "pooling": "cls+image",
       "eval_limit": 10, "steps": 100, "lr": 3e-4, "batch_size": 16, "weight_decay": 0.0, "warmup_ratio": 0.2,
       "seed": 1, "amp": "bf16", "rewind_step": 5, "rewind_fraction": 0.3, "schedule": "linear", "rate": 0.2,
       "target_sparsity": 0.8, "rounds": 3, "method": "random", "scope": "layerwise", "adv_use": "finetune",
       "adv_modality": "text", "adv_epsilon": 0.1, "adv_step_size": 1e-2, "adv_steps": 2, "adv_kl": 1.0,
       "override_limits": True, "loader_workers": 2, "adamw_impl": "fused", "jump": 2, "keep": 0.95, "start_level": 2,
       "masks_of_seed": 1, "retrain": "finetune", "calibration_examples": 64}
BASE = {"adv_use": "both"}  # so that every adversarial knob acts (with adv_use off they are inert)


# what the chain must look like for a parameter to act (e.g. adversarial knobs need adv_use on)
BASES = {"rounds": {**BASE, "target_sparsity": None, "rounds": 2}, "target_sparsity": BASE, "adv_use": {},
         "schedule": {**BASE, "rate": 0.3, "target_sparsity": 0.6},
         **{k: {**BASE, "schedule": "adaptive"} for k in ("jump", "keep", "start_level")},  # adaptive knobs
         "masks_of_seed": {**BASE, "schedule": "adaptive", "start_level": 2},
         "calibration_examples": {**BASE, "method": "wanda"},  # read by activation-aware methods only
         "checkpoint": {**BASE, "preset": "uniter-base", "custom_size": True, "checkpoint": "random"}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Parameters whose values are files: a UNITER checkpoint (with its vocabulary beside it) and a
    tokenizer directory of MiniLM's size whose vocabulary differs in one token."""
    from tests.helpers import checkpoints as C

    root = tmp_path_factory.mktemp("files")
    C.uniter_pt(root / "uniter" / "uniter-base.pt")
    C.vocab_file(root / "uniter", C.CASED_VOCAB)
    tok = C.vocab_file(root / "tok", C.UNCASED_VOCAB)
    lines = (tok / "vocab.txt").read_text().splitlines()
    lines[2000] = "[another]"
    (tok / "vocab.txt").write_text("\n".join(lines) + "\n")
    return {"checkpoint": str(root / "uniter" / "uniter-base.pt"), "tokenizer": str(tok)}


@pytest.mark.parametrize("name", [n for n, i in INFO.items() if i.role != TICKET])
def test_each_parameter_changes_exactly_the_identities_its_role_declares(name, files):
    base = BASES.get(name, BASE)
    a, b = resolve_chain(base), resolve_chain({**base, name: files.get(name, ALT.get(name))})
    if name == "rewind_fraction":  # resolves to a rewind step, which is what the chain is
        assert b.rewind_step == int(0.3 * DEFAULTS["steps"])
    role = INFO[name].role
    changes_chain, changes_dense = a.chain.sha256 != b.chain.sha256, a.dense.sha256 != b.dense.sha256
    if role == DENSE:
        assert changes_chain, f"{name} is declared to define the dense run but changes no hash"
        if name != "adv_use":  # off -> finetune touches only the chain's re-training, by design
            assert changes_dense
    elif role == CHAIN:
        assert changes_chain and not changes_dense, f"{name} is a chain parameter: it must not touch the dense run"
    elif role == NONE:
        assert not changes_chain and not changes_dense


def test_identity_hashes_only_non_default_fields():
    from ltvl.core.identity import identity
    a = resolve_chain({})
    assert resolve_chain({"steps": DEFAULTS["steps"], "lr": DEFAULTS["lr"]}).chain.sha256 == a.chain.sha256
    ident = identity(a.chain)
    assert ident["schedule"] == {"rate": 0.5}  # the schema's rate differs from Schedule's default; kind does not
    assert "scope" not in ident and "method" not in ident and "finetune_adversarial" not in ident
    assert ChainStore("/nonexistent", a.chain, writer=False).format == 1


def _toy_chain(root, train=None):
    train = train or TrainConfig(steps=6, batch_size=8, lr=3e-3)
    spec = ChainSpec(train=train, rewind_step=2, schedule=Schedule("geometric", 0.5, 0.7),
                     context=(("task", "toy"),))
    tr = Trainer(ToyTask(), spec.train)
    return run_chain(spec, lambda: make_toy_model(0), tr.train, tr.evaluate, root)


def test_a_store_written_before_a_new_defaulted_field_still_replays(tmp_path):
    first = _toy_chain(tmp_path)
    # a future ltvl adds a knob with a default to the training recipe
    Newer = dataclasses.make_dataclass("TrainConfig", [("label_smoothing", float, dataclasses.field(default=0.0))],
                                       bases=(TrainConfig,), frozen=True)
    old = first.spec.train
    again = _toy_chain(tmp_path, Newer(**{f.name: getattr(old, f.name) for f in dataclasses.fields(TrainConfig)}))
    assert again.directory == first.directory
    assert all(r.replayed for r in again.rounds)  # read back, nothing retrained
    assert [r.mask_sha256 for r in again.rounds] == [r.mask_sha256 for r in first.rounds]
    changed = Newer(**{**{f.name: getattr(old, f.name) for f in dataclasses.fields(TrainConfig)},
                       "label_smoothing": 0.1})
    assert dataclasses.replace(first.spec, train=changed).sha256 != first.spec.sha256  # a set knob is identity


def test_a_format0_store_is_found_under_its_old_hash_and_replayed(tmp_path):
    """A chain store written by ltvl before the schema (format 0: every field hashed, absolute
    paths in its records) is found by what its spec means and replayed in place."""
    root = tmp_path / "root"
    shutil.copytree(FORMAT0, root)
    old_dirs = sorted(p.name for p in root.iterdir())
    res = subprocess.run([sys.executable, "-m", "ltvl.cli", "imp", "--task", "toy", "--steps", "6", "--rate", "0.5",
                          "--target", "0.7", "--rewind-step", "2", "--root", str(root)],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("(resumed)") == 3, res.stdout  # rounds 0, 1, 2: nothing retrained
    assert sorted(p.name for p in root.iterdir()) == old_dirs  # no new store beside the old one
    assert f"chain store: {root / 'b5f888e096b2b7a4'}" in res.stdout.replace("\n", "")


# --- the lineage defects -------------------------------------------------------------------------
@pytest.mark.parametrize("preset", list(PRESETS))
def test_trial_name_is_the_chain_directory_for_every_preset(tmp_path, preset):
    from ltvl.ray.space import job_entry, trial_name
    params = {"preset": preset, "rewind_step": 2, **({"checkpoint": "random"} if PRESETS[preset].accepts else {})}
    job = resolve_chain(params)
    assert job.chain.prunable == PRESETS[preset].prunable  # what the worker's model uses and hashes
    trial = SimpleNamespace(config={"root": str(tmp_path), "job": job_entry(params, tmp_path)}, trial_id="t1")
    assert trial_name(trial) == f"chain-{ChainStore(tmp_path, job.chain).dir.name}-t1"


def test_rewind_fraction_is_recorded_as_the_step_rewound_to():
    job = resolve({"steps": 200, "rewind_fraction": 0.1})
    assert job.rewind_step == 20
    assert lineage_tags(job)["ltvl.rewind_step"] == 20 and lineage_tags(job)["ltvl.init"] == "theta_i"
    assert chain_name(job).startswith("IMP θi@20 · ")
    assert chain_ops("chain:x", job, None)[0]["params"]["rewind_step"] == 20
    assert job.chain.sha256 == resolve({"steps": 200, "rewind_step": 20}).chain.sha256  # the same chain


def test_rewind_step_and_fraction_together_are_refused():
    with pytest.raises(LtvlError, match="both rewind_step .* and rewind_fraction"):
        resolve({"rewind_step": 0, "rewind_fraction": 0.1})


WRONG = {int: "ten", float: "fast", str: 3, bool: "yes", (dict, list): 7}


@pytest.mark.parametrize("name", list(INFO))
def test_every_parameter_of_the_wrong_type_is_named(name):
    bad = WRONG[INFO[name].type]
    with pytest.raises(LtvlError, match=rf"params\.{name}"):
        load_config("rewind_grid", None, [f"params.{name}={json.dumps(bad)}"])


@pytest.mark.parametrize("setting, message", [
    ("params.scope=layerwse", "(?s)unknown scope 'layerwse'.*did you mean 'layerwise'"),
    ("params.target_sparsity=high", "params.target_sparsity must be float"),
    ("params.rounds=2.5", "params.rounds must be int"),
    ("params.amp=true", "params.amp must be str"),
    ("params.adv_modality=audio", "unknown adv_modality 'audio'"),
    ("params.steps=1000000000000", "(?s)beyond the limit.*override_limits"),
    ("params.rate=1.0e-9", "(?s)needs .* rounds .* beyond the limit"),
    ("resources.num_workers=0", "resources.num_workers must be >= 1"),
    ("name=../../x", "not a safe directory name"),
    ("grid.rate=[0.5, 1.5]", r"grid.rate\[1\] = 1.5 is above its range"),
])
def test_bad_values_are_refused_with_the_key(setting, message):
    with pytest.raises(LtvlError, match=message):
        cfg = load_config("rewind_grid", None, [setting])
        from ltvl.ray.space import validate_space
        from ltvl.sweep.main import space_of
        validate_space(space_of(cfg))


def test_limits_can_be_overridden_explicitly():
    cfg = load_config("rewind_grid", None, ["params.steps=2000000", "params.override_limits=true"])
    assert check(cfg.params).steps == 2_000_000


def test_numbers_parse_as_researchers_write_them(tmp_path):
    cfg = load_config("rewind_grid", None, ["params.lr=1e-4", "params.adv_step_size=5E-3", "grid.lr=[1e-4,3e-4]"])
    assert cfg.params["lr"] == 1e-4 and cfg.params["adv_step_size"] == 5e-3 and cfg.grid["lr"] == [1e-4, 3e-4]
    f = tmp_path / "c.yaml"
    f.write_text("kind: rewind_grid\nparams:\n  lr: 3e-5\n")
    assert load_config("rewind_grid", f, []).params["lr"] == 3e-5


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("- kind: rewind_grid\n", "must be a mapping of config keys, got a list"),
    ("kind: rewind_grid\nname: ../../x\n", "not a safe directory name"),
])
def test_bad_config_files_are_refused(tmp_path, text, message):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(LtvlError, match=message):
        load_config("rewind_grid", f, [])


@pytest.mark.parametrize("setting, ok", [("params.scope=layerwse", False), ("params.lr=1e-4", True)])
def test_sweep_dry_run_exit_codes(setting, ok):
    res = subprocess.run([sys.executable, "sweeps/rewind_grid.py", "--dry-run", "--set", setting],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == (0 if ok else 2), res.stderr
    assert "Traceback" not in res.stderr
    if not ok:
        assert "params.scope" in res.stderr


def test_ticket_source_is_resolved_with_its_own_where():
    with pytest.raises(LtvlError, match=r"params\.source\.rate"):
        resolve({"ticket": "theta0_shuffled", "source": {"rate": 2.0}})
    job = resolve({"ticket": "imp", "task": "gqa", "source": {"task": "vqa", "rewind_fraction": 0.1}})
    assert job.source.rewind_step == 20 and job.source_task == "vqa" and lineage_tags(job)["ltvl.task"] == "gqa"


def test_the_dense_store_of_a_chain_is_found_for_format0_roots(tmp_path):
    shutil.copytree(FORMAT0, tmp_path / "r")
    ref = json.loads((tmp_path / "r" / "b5f888e096b2b7a4" / "spec.json").read_text())
    assert "format" not in ref  # truly the old layout
    from ltvl.core.dense import DenseSpec
    spec = ChainSpec(train=TrainConfig(steps=6), rewind_step=2, schedule=Schedule("geometric", 0.5, 0.7),
                     context=(("task", "toy"), ("backbone", "toy-bert")))
    from ltvl.pruning import PrunableSpec
    spec = dataclasses.replace(spec, prunable=PrunableSpec())
    assert ChainStore(tmp_path / "r", spec, writer=False).dir.name == "b5f888e096b2b7a4"
    assert DenseStore(tmp_path / "r", DenseSpec.of(spec), writer=False).dir.name == "61dd55bdceef96d5"


def test_the_reference_documents_every_parameter_with_its_default():
    readme = (REPO / "docs" / "reference" / "parameters.md").read_text()
    for name, default in DEFAULTS.items():
        shown = "null" if default is None else default
        assert f"| `{name}` | `{shown}` | {INFO[name].role} |" in readme, f"docs/reference/parameters.md lacks {name}"


@pytest.mark.parametrize("setting, message", [
    ("resources.cpus_per_worker=0", "resources.cpus_per_worker must be > 0"),
    ("resources.max_failures=-1", "resources.max_failures must be >= 0"),
    ("resources.max_concurrent_trials=0", "resources.max_concurrent_trials must be >= 1"),
    ("search.num_samples=0", "search.num_samples must be >= 1"),
    ("search.algorithm=bayes", "unknown search 'bayes'"),
    ("early_stop.kind=soon", "unknown early_stop 'soon'"),
    ("early_stop.keep=1.5", "early-stop fraction 1.5 outside"),
    ("baselines=[lucky]", r"(?s)baselines\[0\]: unknown ticket 'lucky'"),
    ("transfer_to=[vqq]", r"(?s)transfer_to\[0\]: unknown task 'vqq'.*did you mean 'vqa'"),
])
def test_bad_sweep_options_are_refused_with_the_key(setting, message):
    with pytest.raises(LtvlError, match=message):
        load_config("rewind_grid", None, [setting])


def test_python_api_options_are_checked():
    from ltvl.plan.options import SweepOptions
    with pytest.raises(LtvlError, match="unknown sweep option 'num_wrkers'"):
        SweepOptions.from_flat(num_wrkers=2)
    opts = SweepOptions.from_flat(num_workers=2, early_stop="asha", search="optuna", driver_resources=(("d", 1),))
    assert (opts.resources.num_workers, opts.early_stop.kind, opts.search.algorithm) == (2, "asha", "optuna")
    assert opts.resources.driver_resources == {"d": 1}


def test_adaptive_knobs_are_inert_on_other_schedules_and_start_level_is_checked():
    """jump/keep act on schedule: adaptive only, so setting them elsewhere never renames a chain;
    a start_level outside the levels, or without an adaptive schedule, is refused with its key."""
    assert resolve_chain({"keep": 0.9, "jump": 2}).chain.sha256 == resolve_chain({}).chain.sha256
    job = resolve_chain({"schedule": "adaptive", "rate": 0.2, "target_sparsity": 0.95, "start_level": 6})
    assert job.chain.schedule.start == 6 and len(job.chain.sparsities()) == 14
    with pytest.raises(LtvlError, match=r"(?s)params.start_level.*adaptive start level 15 is not in \[1, 14\]"):
        resolve_chain({"schedule": "adaptive", "rate": 0.2, "target_sparsity": 0.95, "start_level": 15})
    with pytest.raises(LtvlError, match=r"(?s)params.start_level.*needs schedule: adaptive"):
        resolve_chain({"start_level": 2})
    adaptive = {"schedule": "adaptive", "rate": 0.2, "target_sparsity": 0.95, "start_level": 6}
    assert resolve_chain({**adaptive, "masks_of_seed": 1}).chain.schedule.masks_of_seed == 1
    for raw, message in (({"masks_of_seed": 1}, "needs schedule: adaptive"),
                         ({**adaptive, "masks_of_seed": 0}, "masks_of_seed 0 is this chain's own seed"),
                         ({**adaptive, "start_level": None, "masks_of_seed": 1}, "adaptive with a start"),
                         ({**adaptive, "masks_of_seed": -1}, r"-1 is below its range \(\[0, inf\)\)")):
        with pytest.raises(LtvlError, match=rf"(?s)params.masks_of_seed.*{message}"):
            resolve_chain(raw)


def test_a_ticket_reads_its_recipe_as_its_target_chain_does():
    """Before: a ticket job kept `layers: preset` unresolved, so the report put every ticket in
    'another recipe' (layers preset, not 2) and Table 1's θ''0 column was empty."""
    from ltvl.params.resolve import resolve_chain, resolve_ticket

    raw = {"preset": "tiny", "task": "vqa", "rounds": 2}
    ticket = resolve_ticket({**raw, "ticket": "theta0_shuffled", "source": {"task": "vqa"}})
    chain = resolve_chain(raw)
    assert ticket.params.layers == chain.params.layers == 2
    assert ticket.params.target_sparsity is None and chain.params.target_sparsity is None
