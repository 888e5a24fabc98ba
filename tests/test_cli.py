"""The ltvl command end to end, as a user runs it (subprocesses, real files)."""
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from ltvl.pruning import load_mask


def ltvl(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ltvl.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def ckpt(tmp_path, tiny_bert):
    p = tmp_path / "bert.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_bert.state_dict().items()}, str(p))
    return p


def test_prune_info_iou_export(tmp_path, ckpt):
    m, r = tmp_path / "m.mask", tmp_path / "r.mask"
    res = ltvl("prune", ckpt, "--sparsity", "0.6", "--out", m)
    assert res.returncode == 0, res.stderr
    mask = load_mask(m)
    assert mask.sparsity == pytest.approx(0.6, abs=1e-4) and mask.sha256 in res.stdout
    assert ltvl("prune", ckpt, "--sparsity", "0.6", "--random", "--seed", "1", "--out", r).returncode == 0
    info = json.loads(ltvl("mask", "info", m, "--json").stdout)
    assert info["sha256"] == mask.sha256 and info["fingerprint"] == mask.fingerprint
    assert set(info["per_tensor"]) == set(mask.names)
    human = ltvl("mask", "info", m).stdout
    assert mask.sha256 in human and "encoder.layer.0.attention.self.query.weight" in human
    iou = float(ltvl("mask", "iou", m, r).stdout)
    assert iou == pytest.approx(load_mask(m).iou(load_mask(r)))
    assert 0.1 < iou < 0.5  # random vs magnitude at 60%: far from identical
    out = tmp_path / "export.safetensors"
    assert ltvl("mask", "export", m, "--out", out).returncode == 0
    exported = load_file(str(out))
    assert set(exported) == set(mask.names)
    assert all(exported[n].dtype == torch.uint8 and torch.equal(exported[n].bool(), mask.tensors[n]) for n in exported)


def test_exported_mask_works_with_torch_prune(tmp_path, ckpt, tiny_bert):
    import torch.nn.utils.prune as tprune
    m, out = tmp_path / "m.mask", tmp_path / "e.safetensors"
    ltvl("prune", ckpt, "--sparsity", "0.3", "--out", m)
    ltvl("mask", "export", m, "--out", out)
    exported = load_file(str(out))
    name = "encoder.layer.0.attention.self.query.weight"
    mod = tiny_bert.encoder.layer[0].attention.self.query
    tprune.custom_from_mask(mod, "weight", exported[name])
    assert (mod.weight[exported[name] == 0] == 0).all()


def test_layerwise_and_patterns(tmp_path, ckpt):
    m = tmp_path / "m.mask"
    res = ltvl("prune", ckpt, "--sparsity", "0.5", "--layerwise", "--include", r"attention\.self", "--out", m)
    assert res.returncode == 0, res.stderr
    mask = load_mask(m)
    assert all("attention.self" in n for n in mask.names)
    assert all(abs(s - 0.5) < 1e-3 for s in mask.per_tensor_sparsity().values())
    listing = ltvl("prune", ckpt, "--list", "--include", "pooler")
    assert "pooler.dense.weight" in listing.stdout and "1 tensors" in listing.stdout


@pytest.mark.parametrize("args,msg", [
    (["--sparsity", "1.0"], "outside [0, 1)"),
    (["--sparsity", "-0.2"], "outside [0, 1)"),
    (["--include", "decoder"], "selects no parameter"),
    (["--exclude", "nothing_matches"], "matches none"),
])
def test_bad_prune_input_fails_and_writes_nothing(tmp_path, ckpt, args, msg):
    out = tmp_path / "never.mask"
    res = ltvl("prune", ckpt, *args, "--out", out)
    assert res.returncode != 0 and msg in res.stderr.replace("\n", " ")
    assert not out.exists()


def test_bad_checkpoints(tmp_path, tiny_bert):
    out = tmp_path / "never.mask"
    missing = ltvl("prune", tmp_path / "nope.safetensors", "--out", out)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    pickled = tmp_path / "model.bin"  # a plain state dict, as transformers 4 wrote pytorch_model.bin: read safely
    torch.save(tiny_bert.state_dict(), pickled)
    res = ltvl("prune", pickled, "--out", tmp_path / "bin.mask")
    assert res.returncode == 0, res.stderr
    torch.save({"state_dict": tiny_bert.state_dict(), "step": 3, "opt": {"lr": 1e-4}}, pickled)  # a training checkpoint
    assert ltvl("prune", pickled, "--out", tmp_path / "bin2.mask").returncode == 0
    torch.save([1, 2], pickled)
    res = ltvl("prune", pickled, "--out", out)
    assert res.returncode == 2 and "holds a list, not a state dict" in res.stderr
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    res = ltvl("prune", garbage, "--out", out)
    assert res.returncode == 2 and "not a readable safetensors" in res.stderr
    state = {k: v.clone().contiguous() for k, v in tiny_bert.state_dict().items()}
    state["encoder.layer.1.output.dense.weight"][0, 0] = float("nan")
    nan = tmp_path / "nan.safetensors"
    save_file(state, str(nan))
    res = ltvl("prune", nan, "--out", out)
    assert res.returncode == 2 and "encoder.layer.1.output.dense.weight" in res.stderr and "NaN" in res.stderr
    assert not out.exists()


def test_damaged_mask_files(tmp_path, ckpt):
    m = tmp_path / "m.mask"
    ltvl("prune", ckpt, "--sparsity", "0.5", "--out", m)
    data = m.read_bytes()
    (tmp_path / "trunc.mask").write_bytes(data[: len(data) // 2])
    res = ltvl("mask", "info", tmp_path / "trunc.mask")
    assert res.returncode == 2 and "truncated or corrupt" in res.stderr


def test_mask_for_another_model_names_first_mismatch(tmp_path, ckpt):
    from transformers import BertConfig, BertModel

    from ltvl.pruning import MaskEnforcer
    from ltvl.util.errors import LtvlError
    m = tmp_path / "m.mask"
    ltvl("prune", ckpt, "--sparsity", "0.5", "--out", m)
    other = BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=48, max_position_embeddings=20))
    with pytest.raises(LtvlError, match=r"shape mismatch for 'encoder\.layer\.0\.intermediate\.dense\.weight'"):
        MaskEnforcer(other, load_mask(m))


def test_chain_run_runs_and_resumes_and_imp_is_its_alias(tmp_path):
    args = ["--task", "toy", "--root", tmp_path, "--steps", "10", "--rate", "0.5", "--target", "0.7"]
    first = ltvl("chain", "run", *args)
    assert first.returncode == 0, first.stderr
    assert "round 2: sparsity 0.750" in first.stdout and "ltvl imp" not in first.stderr
    second = ltvl("imp", *args)  # the older name: the same chain, replayed, and a note that names the new one
    assert second.stdout.count("(resumed)") == 3
    assert "`ltvl imp` is now `ltvl chain run`" in second.stderr
    bad = ltvl("imp", "--task", "toy", "--root", tmp_path, "--steps", "10", "--rewind-step", "10")
    assert bad.returncode == 2 and "rewind step 10" in bad.stderr


def test_imp_command_runs_an_adaptive_schedule_and_resumes_it(tmp_path):
    args = ["imp", "--task", "toy", "--root", tmp_path, "--steps", "30", "--lr", "0.003", "--schedule", "adaptive",
            "--rate", "0.4", "--target", "0.99", "--jump", "3", "--keep", "1.0"]
    first = ltvl(*args)
    assert first.returncode == 0, first.stderr
    assert "round 1: sparsity 0.784" in first.stdout and "level 3 from 0:" in first.stdout  # the first jump
    assert first.stdout.count("search settled") == 1
    rounds = first.stdout.count("\n round ")
    assert ltvl(*args).stdout.count("(resumed)") == rounds  # a settled search is finished: nothing re-trains


def test_core_imports_neither_ray_nor_mlflow():
    code = ("import sys, ltvl.core.imp, ltvl.core.train, ltvl.core.baselines, ltvl.pruning, ltvl.core.toy; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow')]; print(bad); sys.exit(bool(bad))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_list_and_data_commands(tmp_path):
    listing = ltvl("list")
    assert listing.returncode == 0
    for name in ("minilm", "uniter-base", "lxmert-base", "vilt-base", "tiny", "vqa", "refcoco_plus", "pretrain"):
        assert name in listing.stdout
    res = ltvl("data", "synth", "nlvr2", "--out", tmp_path / "syn", "--examples", "16", "--test-examples", "8")
    assert res.returncode == 0, res.stderr
    info = ltvl("data", "info", tmp_path / "syn", "--json", "--verify")
    assert info.returncode == 0, info.stderr
    d = json.loads(info.stdout)
    assert d["format"] == 1 and d["splits"]["train"] == {"images": 32, "examples": 16,
                                                          "bytes": d["splits"]["train"]["bytes"]}
    assert d["bytes"] == sum(p.stat().st_size for p in (tmp_path / "syn").rglob("*.arrow"))
    damaged = tmp_path / "syn" / "test" / "images.arrow"
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"x")
    bad = ltvl("data", "info", tmp_path / "syn", "--verify")
    assert bad.returncode == 2 and "test/images.arrow" in bad.stderr and "sha256" in bad.stderr
    res = ltvl("data", "prepare", "easy-vqa", "--out", tmp_path / "evqa", "--limit", "50")
    assert res.returncode == 0, res.stderr and "13 answers" in res.stdout
    bad = ltvl("data", "prepare", "coco", "--out", tmp_path / "x")
    assert bad.returncode == 2 and "unknown dataset 'coco'" in bad.stderr
    bad = ltvl("data", "synth", "vqaa", "--out", tmp_path / "x")
    assert bad.returncode == 2 and "did you mean 'vqa'" in bad.stderr


def test_imp_on_real_easy_vqa_tiny_budget(tmp_path):
    """The IMP chain on real data end to end (real MiniLM, 1 layer, a few steps)."""
    data = tmp_path / "evqa"
    assert ltvl("data", "prepare", "easy-vqa", "--out", data, "--limit", "400").returncode == 0
    res = ltvl("imp", "--data", data, "--layers", "1", "--steps", "4", "--batch-size", "8", "--rate", "0.5",
               "--target", "0.7", "--eval-limit", "64", "--root", tmp_path / "chains")
    assert res.returncode == 0, res.stderr
    assert "round 2: sparsity 0.750" in res.stdout


@pytest.mark.parametrize("use", ["imp", "finetune"])
def test_both_adversarial_uses_run_on_real_easy_vqa(tmp_path, use):
    data = tmp_path / "evqa"
    assert ltvl("data", "prepare", "easy-vqa", "--out", data, "--limit", "300").returncode == 0
    res = ltvl("imp", "--data", data, "--layers", "1", "--steps", "3", "--batch-size", "8", "--rate", "0.5",
               "--target", "0.5", "--eval-limit", "64", "--root", tmp_path / "chains", "--adv-use", use,
               "--adv-epsilon", "0.5", "--adv-steps", "2")
    assert res.returncode == 0, res.stderr
    assert "round 1: sparsity 0.500" in res.stdout
    assert ("AT-finetuned" in res.stdout) == (use == "finetune")
    spec = json.loads(next((tmp_path / "chains").glob("*/spec.json")).read_text())["spec"]
    key = spec["train"]["adversarial"] if use == "imp" else spec["finetune_adversarial"]
    assert key["enabled"] and key["epsilon"] == 0.5 and key["steps"] == 2
    bad = ltvl("imp", "--data", data, "--adv-use", use, "--adv-epsilon", "-1")
    assert bad.returncode == 2 and "option.adv_epsilon = -1.0 is below its range" in bad.stderr, bad.stderr


def test_synth_paper_shaped_data_and_imp_on_it(tmp_path):
    """`ltvl data synth vqa --images N --regions R --feat-dim D` then `ltvl imp --data DIR`, as a user would."""
    data = tmp_path / "big"
    res = ltvl("data", "synth", "vqa", "--out", data, "--images", "300", "--examples", "900", "--regions", "36",
               "--feat-dim", "64", "--min-regions", "10")
    assert res.returncode == 0, res.stderr
    d = json.loads(ltvl("data", "info", data, "--json").stdout)
    assert d["splits"]["train"]["images"] == 300 and d["splits"]["train"]["examples"] == 900
    assert d["num_regions"] == 36 and d["min_regions"] >= 10 and d["feat_dim"] == 64
    res = ltvl("imp", "--data", data, "--layers", "1", "--steps", "2", "--batch-size", "8", "--target", "0.5",
               "--root", tmp_path / "chains")
    assert res.returncode == 0, res.stderr
    assert "round 1: sparsity 0.500" in res.stdout


@pytest.mark.parametrize("args,message", [
    (["--regions", "4"], "--regions: regions must be >= 9"),
    (["--feat-dim", "4"], "--feat-dim: feat_dim must be >= 9"),
    (["--regions", "20", "--min-regions", "30"], "--min-regions: min_regions must be in [9, regions=20]"),
    (["--images", "50", "--examples", "10"], "train: more images (50) than examples (10)"),
])
def test_data_synth_bad_flags_are_named_and_write_nothing(tmp_path, args, message):
    res = ltvl("data", "synth", "vqa", "--out", tmp_path / "out", *args)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,message", [
    (["uniter-lmdb", "--task", "vqa", "--split", "train=X"], "unknown format 'uniter-lmdb'"),
    (["uniter", "--task", "vqa", "--split", "train"], "--split: 'train' is not NAME=PATH"),
    (["uniter", "--task", "vqa", "--split", "train=/no/such/txt_db"], "--split train: no such file or directory"),
    (["uniter", "--task", "gqa", "--split", "train=TXT", "--features", "IMG"],
     "the uniter importer does not read task 'gqa'"),
    (["lxmert", "--task", "vqa", "--split", "train=TXT"], "--features: no image features given"),
])
def test_data_import_bad_flags_are_named(tmp_path, args, message):
    (tmp_path / "TXT").mkdir()
    (tmp_path / "IMG").mkdir()
    args = [a.replace("TXT", str(tmp_path / "TXT")).replace("IMG", str(tmp_path / "IMG")) for a in args]
    res = ltvl("data", "import", *args[:1], "--out", tmp_path / "out", *args[1:])
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_data_migrate_and_info_refuse_what_they_cannot_read(tmp_path):
    make = ltvl("data", "synth", "gqa", "--out", tmp_path / "new", "--examples", "8", "--test-examples", "4")
    assert make.returncode == 0, make.stderr
    res = ltvl("data", "migrate", tmp_path / "new", "--out", tmp_path / "again")
    assert res.returncode == 2 and "already in format 1" in res.stderr
    res = ltvl("data", "info", tmp_path / "nothing")
    assert res.returncode == 2 and "no dataset.json" in res.stderr


def test_sweep_validate_finds_a_shipped_config_by_name_and_lists_its_chains(tmp_path):
    res = ltvl("sweep", "validate", "rewind_grid", cwd=tmp_path)  # run from elsewhere: found beside the package
    assert res.returncode == 0, res.stderr
    assert "4 chain(s), 1 of them a 100%-sparse control; nothing run (--dry-run)" in res.stderr


def test_sweep_run_takes_the_kind_from_the_config_and_refuses_bad_input_before_work(tmp_path):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("kind: transfer\nname: t\nparams: {task: vqa, data: synthetic:vqa, preset: tiny, steps: 4}\n"
                   "transfer_to: [gqa]\ncontrols: false\n")
    ok = ltvl("sweep", "run", cfg, "--dry-run", "--set", "params.steps=5")
    assert ok.returncode == 0, ok.stderr
    assert "1 dense run(s), 1 chain(s), 1 ticket job(s)" in ok.stderr
    assert "stage tickets: 20 training steps" in ok.stderr  # --set reached the plan: 4 masks x 5 steps
    missing = ltvl("sweep", "run", tmp_path / "nope.yaml")
    assert missing.returncode == 2 and "no config file" in missing.stderr and "rewind_grid" in missing.stderr
    assert "Traceback" not in missing.stderr
    cfg.write_text("kind: other\n")
    unknown = ltvl("sweep", "validate", cfg)
    assert unknown.returncode == 2 and "unknown sweep kind 'other'" in unknown.stderr
    typo = ltvl("sweep", "validate", "rewind_grid", "--set", "params.stepz=5")
    assert typo.returncode == 2 and "did you mean 'steps'" in typo.stderr


def test_list_names_methods_baselines_and_shipped_configs():
    out = ltvl("list").stdout
    for word in ("minilm", "vqa", "magnitude", "random", "theta0_shuffled", "rewind_grid", "study_table1"):
        assert word in out, word
