"""Files from elsewhere can never make ltvl write or read outside its own directories: a remote
dataset's manifest that names an absolute path, climbs with '..', or passes a content hash that
is a path; a dataset whose files are links to devices; a dataset.json edited after it was sealed."""

import json
import os

import pytest

from ltvl.util.atomic import json_sha256
from ltvl.util.errors import LtvlError
from ltvl.vl.data.info import DatasetInfo
from ltvl.vl.data.synthetic import make_synthetic


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LTVL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _remote(tmp_path, **edit) -> str:
    src = tmp_path / "remote"
    make_synthetic("vqa", src, n_train=16, n_test=4)
    doc = json.loads((src / "dataset.json").read_text())
    files = doc["files"]
    if "rename" in edit:
        old, new = edit.pop("rename")
        files[new] = files.pop(old)
    doc.update(edit)
    doc.pop("content_sha256")
    doc["content_sha256"] = edit.get("content_sha256") or json_sha256(doc)  # a seal an attacker can compute
    (src / "dataset.json").write_text(json.dumps(doc))
    return f"file://{src}"


@pytest.mark.parametrize("name", ["/tmp/ltvl-pwned.arrow", "../../pwned.arrow", "train/../../../pwned.arrow",
                                  "train/images.arrow/../../x", "train/evil.sh"])
def test_a_remote_manifest_cannot_name_a_file_outside_the_dataset(tmp_path, home, name):
    from ltvl.vl.data.fetch import fetch

    uri = _remote(tmp_path, rename=("train/images.arrow", name))
    with pytest.raises(LtvlError, match=r"manifest names .* not one of ltvl's files"):
        fetch(uri)
    assert not os.path.exists("/tmp/ltvl-pwned.arrow") and not (tmp_path / "pwned.arrow").exists()
    assert not (home / "cache" / "data").exists() or not [
        p for p in (home / "cache" / "data").iterdir() if not p.name.endswith(".lock")]


def test_a_content_hash_that_is_a_path_is_refused(tmp_path, home):
    from ltvl.vl.data.fetch import fetch

    uri = _remote(tmp_path, content_sha256=str(tmp_path / "elsewhere"))
    with pytest.raises(LtvlError, match=r"no content hash|content_sha256"):
        fetch(uri)
    assert not (tmp_path / "elsewhere").exists()


def test_a_remote_file_longer_than_its_manifest_stops_the_copy(tmp_path, home):
    from ltvl.vl.data.fetch import fetch

    uri = _remote(tmp_path)
    f = tmp_path / "remote" / "train" / "examples.arrow"
    f.write_bytes(f.read_bytes() + b"\0" * 4096)
    with pytest.raises(LtvlError, match=r"examples.arrow.*differs from the manifest"):
        fetch(uri)


def test_verify_never_reads_a_device_behind_a_link(tmp_path):
    from ltvl.vl.data.inspect import describe

    d = tmp_path / "d"
    make_synthetic("vqa", d, n_train=16, n_test=4)
    (d / "train" / "images.arrow").unlink()
    (d / "train" / "images.arrow").symlink_to("/dev/zero")
    with pytest.raises(LtvlError, match=r"leads outside"):
        describe(d, verify=True)


def test_an_edited_dataset_json_is_a_different_dataset_and_refused(tmp_path):
    d = tmp_path / "d"
    make_synthetic("vqa", d, n_train=16, n_test=4)
    doc = json.loads((d / "dataset.json").read_text())
    doc["answers"] = list(reversed(doc["answers"]))  # the labels now mean other answers
    (d / "dataset.json").write_text(json.dumps(doc))
    with pytest.raises(LtvlError, match=r"changed after it was written"):
        DatasetInfo.load(d)


@pytest.mark.parametrize("edit,message", [
    ({"answers": None}, r"answers is NoneType None, expected list"),
    ({"feat_dim": "16"}, r"feat_dim is str '16', expected int"),
    ({"splits": ["../x"]}, r"split name '../x' is not a plain name"),
    ({"task": None}, r"task is NoneType None, expected str"),
])
def test_malformed_dataset_json_is_named_before_the_seal(tmp_path, edit, message):
    d = tmp_path / "d"
    make_synthetic("vqa", d, n_train=16, n_test=4)
    doc = {**json.loads((d / "dataset.json").read_text()), **edit}
    (d / "dataset.json").write_text(json.dumps(doc))
    with pytest.raises(LtvlError, match=message):
        DatasetInfo.load(d)
    doc.pop("num_regions")
    (d / "dataset.json").write_text(json.dumps(doc))
    with pytest.raises(LtvlError, match=r"lacks the key 'num_regions'|expected"):
        DatasetInfo.load(d)


def test_a_mask_header_cannot_be_downgraded_to_skip_its_check(tmp_path):
    """A current mask's header hash covers its parent and metadata; deleting the hash no longer
    makes the file read as the older format. A genuine older file still loads, marked unverified."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from ltvl.pruning import load_mask, prune_to_sparsity, save_mask

    save_mask(prune_to_sparsity({"a.weight": torch.randn(8, 8)}, None, 0.5), tmp_path / "m.mask")
    with safe_open(str(tmp_path / "m.mask"), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(tmp_path / "m.mask"))
    assert meta["format"] == "ltvl-mask/2" and load_mask(tmp_path / "m.mask").header_verified
    forged = {k: v for k, v in meta.items() if k != "header_sha256"} | {"parent": "f" * 64}
    save_file(tensors, str(tmp_path / "forged.mask"), metadata=forged)
    with pytest.raises(LtvlError, match=r"no header_sha256, which every ltvl-mask/2 file carries"):
        load_mask(tmp_path / "forged.mask")
    legacy = {k: v for k, v in meta.items() if k != "header_sha256"} | {"format": "ltvl-mask/1"}
    save_file(tensors, str(tmp_path / "legacy.mask"), metadata=legacy)
    old = load_mask(tmp_path / "legacy.mask")
    assert not old.header_verified and old.sha256 == meta["sha256"]


def _chain_dirs(tmp_path):
    """A finished toy chain (3 rounds, θi rewind) and its dense store, run through the core."""
    from ltvl.core.imp import ChainSpec, run_chain
    from ltvl.core.toy import ToyTask, make_toy_model
    from ltvl.core.train import TrainConfig, Trainer
    from ltvl.pruning import Schedule

    spec = ChainSpec(train=TrainConfig(steps=6, lr=3e-3, batch_size=16), rewind_step=2,
                     schedule=Schedule("geometric", 0.5, 0.75))
    tr = Trainer(ToyTask(n_train=64, n_test=32), spec.train)
    res = run_chain(spec, make_toy_model, tr.train, tr.evaluate, tmp_path)
    dense = next((tmp_path / "dense").iterdir())
    return spec, tr, res, dense


@pytest.mark.parametrize("target", ["round", "dense", "theta_i"])
@pytest.mark.parametrize("damage", ["edited", "stripped", "truncated", "not an object", "missing field"])
def test_a_damaged_or_edited_store_record_is_named_not_replayed(tmp_path, target, damage):
    """Before: round, dense and θi records carried no hash: an edited metric replayed as "(resumed)",
    and a damaged record crashed the driver with a traceback."""
    from ltvl.core.imp import run_chain
    from ltvl.core.toy import make_toy_model

    spec, tr, res, dense = _chain_dirs(tmp_path)
    f = {"round": res.directory / "rounds" / "001.json", "dense": dense / "record.json",
         "theta_i": res.directory / "theta_i.json"}[target]
    doc = json.loads(f.read_text())
    assert doc["record_format"] == 2 and len(doc["record_sha256"]) == 64
    if damage == "edited":
        key = {"round": "metrics", "dense": "metrics", "theta_i": "step"}[target]
        doc[key] = {"metric": 1.0} if key == "metrics" else 0
        f.write_text(json.dumps(doc))
        want = "edited or damaged"
    elif damage == "stripped":
        doc.pop("record_sha256")
        f.write_text(json.dumps(doc))
        want = "no record_sha256"
    elif damage == "truncated":
        f.write_text(f.read_text()[:40])
        want = "unreadable"
    elif damage == "not an object":
        f.write_text("[1, 2]")
        want = "not an object"
    else:  # a legacy (unsealed) record that lacks a field the reader needs
        doc.pop("record_sha256"), doc.pop("record_format")
        doc.pop({"round": "round", "dense": "final_sha256", "theta_i": "sha256"}[target])
        f.write_text(json.dumps(doc))
        want = "does not hold|names no step|unreadable|KeyError|missing"
    if target == "theta_i":  # θi is read only to resume: leave the last round undone
        (res.directory / "rounds" / "002.json").unlink()
    with pytest.raises(LtvlError, match=want) as e:
        run_chain(spec, make_toy_model, tr.train, tr.evaluate, tmp_path)
    assert e.value.where == str(f)


def test_records_written_before_sealing_still_replay(tmp_path):
    """Stores from before 2026-12 have unsealed records: they are read as they are, not refused."""
    from ltvl.core.imp import run_chain
    from ltvl.core.toy import make_toy_model

    spec, tr, res, dense = _chain_dirs(tmp_path)
    for f in [*(res.directory / "rounds").iterdir(), dense / "record.json", res.directory / "theta_i.json"]:
        doc = json.loads(f.read_text())
        doc.pop("record_sha256"), doc.pop("record_format")
        f.write_text(json.dumps(doc))

    def must_not_train(*a, **k):
        raise AssertionError("a finished round was re-trained")
    again = run_chain(spec, make_toy_model, must_not_train, tr.evaluate, tmp_path)
    assert [r.mask_sha256 for r in again.rounds] == [r.mask_sha256 for r in res.rounds]
    assert all(r.replayed for r in again.rounds)
