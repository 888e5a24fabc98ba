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
