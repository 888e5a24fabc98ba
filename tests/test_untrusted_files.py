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
