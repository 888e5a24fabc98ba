"""Arrow datasets: layout, checks before compute, synthetic generators, the easy-VQA importer,
migration from format 0, the prep cache and the loader's determinism."""

import json
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ltvl.util.errors import LtvlError
from ltvl.vl.data.info import FORMAT, DatasetInfo
from ltvl.vl.data.schema import TASK_COLUMNS
from ltvl.vl.data.store import open_split
from ltvl.vl.data.synthetic import COLOURS, Shape, make_synthetic
from ltvl.vl.data.writer import DatasetWriter
from tests.helpers.datasets import rewrite_dataset_json


def replace_file(directory, rel: str, table: pa.Table) -> None:
    """Rewrite one dataset file and its manifest entry (a hand-edited dataset, not a truncated one)."""
    path = directory / rel
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    meta = json.loads((directory / "dataset.json").read_text())
    from ltvl.vl.data.inspect import file_sha256
    meta["files"][rel].update(bytes=path.stat().st_size, sha256=file_sha256(path))
    rewrite_dataset_json(directory, files=meta["files"])


def read(directory, rel: str) -> pa.Table:
    return pa.ipc.open_file(str(directory / rel)).read_all()


@pytest.mark.parametrize("task", sorted(TASK_COLUMNS))
def test_synthetic_dataset_matches_declared_schema(tmp_path, task):
    info = make_synthetic(task, tmp_path, n_train=40, n_test=10)
    split = open_split(tmp_path, "train")
    assert split.examples.num_rows == 40 and info.task == task and info.format == 1
    for name, typ in TASK_COLUMNS[task].items():
        assert split.examples.schema.field(name).type == typ
    b = split.images.batch(split.examples["image_id"].to_numpy()[:3])
    assert b["features"].shape == (3, info.num_regions, info.feat_dim) and b["features"].dtype == torch.float16
    assert b["pixels"].shape == (3, 3, info.image_size, info.image_size) and b["pixels"].dtype == torch.uint8
    assert set(info.files) == {f"{s}/{f}" for s in ("train", "test") for f in ("images.arrow", "examples.arrow")}


def test_columns_use_64_bit_offsets(tmp_path):
    """int32 list offsets overflow at 2^31 values (VQA v2 holds 9.1e9): every list column is large."""
    make_synthetic("pretrain", tmp_path, n_train=8, n_test=4)
    schema = read(tmp_path, "train/images.arrow").schema
    for name in ("features", "boxes", "region_labels"):
        assert pa.types.is_large_list(schema.field(name).type), name
    assert pa.types.is_large_binary(schema.field("image").type)


def _colours_of(split, image_id):
    """Recover the colour grid from the stored features (one-hot code + noise)."""
    return split.images.features(image_id)[:9, : len(COLOURS)].astype(np.float32).argmax(1).tolist()


def test_synthetic_labels_depend_on_the_image(tmp_path):
    make_synthetic("vqa", tmp_path, n_train=200, n_test=10)
    s = open_split(tmp_path, "train")
    texts, ids = s.examples["text"].to_pylist(), s.examples["image_id"].to_pylist()
    answers = [a[0] for a in s.examples["answer_ids"].to_pylist()]
    for t, i, a in zip(texts, ids, answers):  # "is <colour> the main colour?"
        colour = COLOURS.index(t.split()[1])
        assert a == int(_colours_of(s, i).count(colour) >= 5)  # a fact about image *and* question
    assert 0.3 < np.mean(answers) < 0.7  # and not a constant


def test_vqa_questions_share_images_and_stream_in_chunks(tmp_path):
    make_synthetic("vqa", tmp_path, n_train=1000, n_test=20, train_images=100, test_images=5, chunk=30)
    s = open_split(tmp_path, "train")
    assert s.images.num_images == 100 and s.examples.num_rows == 1000
    assert np.bincount(s.examples["image_id"].to_numpy()).tolist() == [10] * 100
    assert read(tmp_path, "train/images.arrow").to_batches()[0].num_rows == 30  # one record batch per chunk


def test_variable_region_counts_pad_only_to_the_batch(tmp_path):
    make_synthetic("vqa", tmp_path, 40, 8, shape=Shape(regions=36, feat_dim=24, min_regions=10))
    s = open_split(tmp_path, "train")
    counts = s.images.num_regions
    assert counts.min() >= 10 and counts.max() <= 36 and len(set(counts.tolist())) > 5
    on_disk = read(tmp_path, "train/images.arrow")["features"]
    assert sum(len(v) for v in on_disk.chunks[0].to_pylist()) == counts.sum() * 24  # no padding stored
    ids = [0, 1, 2]
    b = s.images.batch(ids)
    assert b["features"].shape[1] == counts[:3].max()
    for i, k in enumerate(ids):
        n = counts[k]
        assert b["image_mask"][i].sum() == n
        assert torch.equal(b["features"][i, :n], torch.from_numpy(s.images.features(k).copy()))
        assert not b["features"][i, n:].any()


def test_refcoco_target_is_the_named_region(tmp_path):
    make_synthetic("refcoco_plus", tmp_path, n_train=50, n_test=10)
    s = open_split(tmp_path, "train")
    for t, i, r in zip(
        s.examples["text"].to_pylist(), s.examples["image_id"].to_pylist(), s.examples["target_region"].to_pylist()
    ):
        assert _colours_of(s, i)[r] == COLOURS.index(t.split()[1])


def test_missing_and_mistyped_columns_are_named(tmp_path):
    make_synthetic("gqa", tmp_path, n_train=20, n_test=5)
    table = read(tmp_path, "train/examples.arrow")
    replace_file(tmp_path, "train/examples.arrow", table.drop(["label"]))
    with pytest.raises(LtvlError, match="missing column 'label'"):
        open_split(tmp_path, "train")
    replace_file(tmp_path, "train/examples.arrow",
                 table.set_column(table.schema.get_field_index("label"), "label", table["label"].cast(pa.string())))
    with pytest.raises(LtvlError, match="column 'label' has type string, expected int32"):
        open_split(tmp_path, "train")


def test_feature_width_that_differs_from_dataset_json_is_named(tmp_path):
    make_synthetic("gqa", tmp_path, n_train=20, n_test=5)
    rewrite_dataset_json(tmp_path, feat_dim=32)
    with pytest.raises(LtvlError, match=r"(?s)images.arrow features.*image_id 0 has 16-d region features, "
                                        r"dataset.json says feat_dim 32"):
        open_split(tmp_path, "train")


def test_example_whose_image_is_missing_is_named(tmp_path):
    make_synthetic("nlvr2", tmp_path, n_train=20, n_test=5)
    table = read(tmp_path, "train/examples.arrow")
    ids = table["image_id_2"].to_numpy().copy()
    ids[3] = 99999
    replace_file(tmp_path, "train/examples.arrow",
                 table.set_column(table.schema.get_field_index("image_id_2"), "image_id_2", pa.array(ids)))
    with pytest.raises(LtvlError, match=r"(?s)examples.arrow image_id_2.*image_id 99999 is not in the images"):
        open_split(tmp_path, "train")


def test_writer_refuses_examples_without_images_and_leaves_nothing(tmp_path):
    info = DatasetInfo(task="gqa", feat_dim=4, num_regions=2, answers=["a", "b"])
    out = tmp_path / "ds"
    with pytest.raises(LtvlError, match=r"(?s)1 example\(s\) refer to images that are not in the split.*image_id 7"):
        with DatasetWriter(out, info) as w:
            w.images("train").write([0, 1], np.zeros((2, 2, 4)), np.zeros((2, 2, 7)))
            w.examples("train", pa.table({"qid": pa.array([0, 1], pa.int64()), "image_id": pa.array([0, 7]),
                                          "text": ["a", "b"], "label": pa.array([0, 1], pa.int32())}))
    assert not out.exists() and not list(tmp_path.iterdir())  # no half-written dataset, no temp dir


def test_truncated_and_corrupt_files_are_named(tmp_path):
    make_synthetic("gqa", tmp_path, n_train=20, n_test=5)
    path = tmp_path / "train" / "images.arrow"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LtvlError, match=r"(?s)train/images.arrow.*truncated or replaced"):
        open_split(tmp_path, "train")
    path.write_bytes(data[:-64] + b"\0" * 64)  # same size, damaged footer
    with pytest.raises(LtvlError, match=r"(?s)train/images.arrow.*not a readable Arrow IPC file"):
        open_split(tmp_path, "train")


def test_not_a_dataset_dir_and_unknown_keys(tmp_path):
    with pytest.raises(LtvlError, match="no dataset.json"):
        DatasetInfo.load(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"task": "vqa", "feat_dim": 4, "num_regions": 2,
                                                       "answerz": [], "format": 1}))
    with pytest.raises(LtvlError, match=r"unknown keys \['answerz'\]"):
        DatasetInfo.load(tmp_path)


def _format0_dataset(directory):
    """A dataset as ltvl wrote it before format 1: Parquet, list<> columns, raw pixels."""
    rng = np.random.default_rng(0)
    n, r, d, s = 6, 4, 8, 8
    feats, pix = rng.normal(size=(n, r * d)).astype(np.float16), rng.integers(0, 256, (n, s * s * 3), np.uint8)
    images = pa.table({"image_id": pa.array(np.arange(n), pa.int64()),
                       "features": pa.array(list(feats), pa.list_(pa.float16())),
                       "boxes": pa.array(list(np.zeros((n, r * 7), np.float32)), pa.list_(pa.float32())),
                       "num_regions": pa.array([r] * n, pa.int32()),
                       "pixels": pa.array(list(pix), pa.list_(pa.uint8()))})
    examples = pa.table({"qid": pa.array(np.arange(n), pa.int64()), "image_id": pa.array(np.arange(n), pa.int64()),
                         "text": ["q"] * n, "label": pa.array([0, 1] * 3, pa.int32())})
    for split in ("train", "test"):
        (directory / split).mkdir(parents=True)
        pq.write_table(images, directory / split / "images.parquet")
        pq.write_table(examples, directory / split / "examples.parquet")
    (directory / "dataset.json").write_text(json.dumps(
        {"task": "gqa", "feat_dim": d, "num_regions": r, "answers": ["a", "b"], "num_labels": None,
         "image_size": s, "source": "old", "splits": ["train", "test"]}))
    return feats.reshape(n, r, d), pix.reshape(n, s, s, 3)


def test_old_format_is_refused_with_the_command_that_converts_it(tmp_path):
    from ltvl.vl.data.migrate import migrate

    old, new = tmp_path / "old", tmp_path / "new"
    feats, pix = _format0_dataset(old)
    with pytest.raises(LtvlError, match=r"(?s)old Parquet layout \(format 0\).*ltvl data migrate .*old --out"):
        open_split(old, "train")
    migrate(old, new)
    s = open_split(new, "train")
    b = s.images.batch([2, 5])
    assert np.array_equal(b["features"].numpy(), feats[[2, 5]])  # values and ids in == out
    assert np.array_equal(b["pixels"].permute(0, 2, 3, 1).numpy(), pix[[2, 5]])  # PNG is lossless


def test_disk_too_small_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "huge"
    with pytest.raises(LtvlError, match=r"(?s)the import needs about .* GB but .* free"):
        make_synthetic("vqa", out, n_train=10**9, n_test=10, train_images=10**9,
                       shape=Shape(regions=36, feat_dim=2048))
    assert not out.exists() and not list(tmp_path.iterdir())


def test_image_table_pickles_by_path(tmp_path):
    """Loader workers started with spawn re-map the file rather than copy its bytes."""
    make_synthetic("vqa", tmp_path, n_train=16, n_test=4)
    images = open_split(tmp_path, "train").images
    blob = pickle.dumps(images)
    assert len(blob) < 2000
    again = pickle.loads(blob)
    assert torch.equal(again.batch([3])["features"], images.batch([3])["features"])


def test_easy_vqa_grid_must_divide_the_image(tmp_path):
    from ltvl.vl.data.easy_vqa import prepare_easy_vqa

    with pytest.raises(LtvlError, match="grid 3 does not divide"):
        prepare_easy_vqa(tmp_path / "e", grid=3, limit=5)
    assert not (tmp_path / "e").exists()


def test_easy_vqa_import_small(tmp_path):
    from ltvl.vl.data.easy_vqa import prepare_easy_vqa

    info = prepare_easy_vqa(tmp_path, grid=4, limit=300)
    assert len(info.answers) == 13 and info.feat_dim == 768 and info.num_regions == 16
    s = open_split(tmp_path, "test")
    assert s.examples.num_rows == 300
    image_id = s.examples["image_id"][0].as_py()
    b = s.images.batch([image_id])
    assert b["pixels"].shape == (1, 3, 64, 64)
    assert s.images.encoded(image_id)[:8] == b"\x89PNG\r\n\x1a\n"  # the package's own PNG bytes
    # features are the pixels' patches minus the image's background colour (its median pixel)
    img = b["pixels"][0].permute(1, 2, 0).float()
    background = img.reshape(-1, 3).median(0).values
    px = ((img[:16, :16] - background) / 127.5).reshape(-1)
    assert np.allclose(b["features"][0, 0].float().numpy(), px.numpy(), atol=1e-2)
    patches = b["features"][0].float().abs().amax(1)  # a patch of background is about zero, the shape is not
    assert patches.min() < 0.05 and patches.max() > 0.3
    assert "features=minus-background" in info.source
    raw = prepare_easy_vqa(tmp_path / "raw", grid=4, limit=300, features="pixels")  # the old features, on request
    rb = open_split(tmp_path / "raw", "test").images.batch([image_id])
    assert np.allclose(rb["features"][0, 0].float().numpy(), (img[:16, :16] / 127.5 - 1).reshape(-1).numpy(),
                       atol=1e-2)
    assert raw.content_sha256 != info.content_sha256
    with pytest.raises(LtvlError, match="unknown features 'rgb'"):
        prepare_easy_vqa(tmp_path / "bad", limit=5, features="rgb")


def test_an_auto_prepared_copy_made_differently_is_rebuilt(tmp_path):
    """`data: easy-vqa` names ltvl's own preparation: a copy from an older ltvl (other features) is
    rebuilt, and chains on it get a new identity instead of replaying stores of the old content."""
    from ltvl.params.resolve import resolve_chain
    from ltvl.vl.datasets import ensure_prepared

    built = []

    def build(out, source):
        built.append(source)
        out.mkdir(exist_ok=True)
        (out / "dataset.json").write_text(json.dumps({"format": FORMAT, "source": source}))

    ensure_prepared(tmp_path / "d", lambda out: build(out, "old"), source="old")
    ensure_prepared(tmp_path / "d", lambda out: build(out, "old"), source="old")
    ensure_prepared(tmp_path / "d", lambda out: build(out, "new"), source="new")
    assert built == ["old", "new"]
    assert ("easy_vqa_revision", "2") in resolve_chain({"data": "easy-vqa"}).chain.context
    assert not any(k == "easy_vqa_revision" for k, _ in resolve_chain({"data": "synthetic:vqa"}).chain.context)


@pytest.mark.long
def test_easy_vqa_full_counts(tmp_path):
    from ltvl.vl.data.easy_vqa import prepare_easy_vqa

    prepare_easy_vqa(tmp_path)
    assert open_split(tmp_path, "train").examples.num_rows == 38575
    assert open_split(tmp_path, "test").examples.num_rows == 9673


FETCH = """
import sys
from ltvl.vl.data.fetch import fetch
path, copied = fetch(sys.argv[1])
print(path, copied)
"""


def test_uri_dataset_is_fetched_once_per_node_by_concurrent_trials(tmp_path):
    """Three processes ask for the same dataset URI at once: one copies, two wait and reuse it."""
    import os
    import subprocess
    import sys

    src = tmp_path / "remote"
    info = make_synthetic("vqa", src, n_train=64, n_test=8)
    env = {**os.environ, "LTVL_HOME": str(tmp_path / "home")}
    procs = [subprocess.Popen([sys.executable, "-c", FETCH, f"file://{src}"], stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(3)]
    outs = [p.communicate()[0].split() for p in procs]
    assert sorted(o[1] for o in outs) == ["False", "False", "True"]
    local = {o[0] for o in outs}
    assert local == {str(tmp_path / "home" / "cache" / "data" / info.content_sha256[:32])}
    s = open_split(local.pop(), "train")
    assert s.examples.num_rows == 64
    from ltvl.vl.datasets import resolve_dataset

    os.environ["LTVL_HOME"], old = str(tmp_path / "home"), os.environ["LTVL_HOME"]
    try:
        assert str(resolve_dataset(f"file://{src}")) in {o[0] for o in outs}  # the data: param takes URIs
    finally:
        os.environ["LTVL_HOME"] = old


def test_fetch_refuses_a_damaged_remote_copy(tmp_path):
    from ltvl.vl.data.fetch import fetch

    src = tmp_path / "remote"
    make_synthetic("vqa", src, n_train=16, n_test=4)
    f = src / "train" / "images.arrow"
    f.write_bytes(f.read_bytes()[:-1] + b"!")
    os_home = tmp_path / "home"
    import os

    os.environ["LTVL_HOME"], old = str(os_home), os.environ["LTVL_HOME"]
    try:
        with pytest.raises(LtvlError, match=r"remote/train/images.arrow.*differs from the manifest"):
            fetch(f"file://{src}")
        assert not [p for p in (os_home / "cache" / "data").iterdir() if not p.name.endswith(".lock")]
    finally:
        os.environ["LTVL_HOME"] = old


def _rewrite_images(directory, split, edit):
    """Rewrite one split's images.arrow with ``edit(features ndarray)`` applied, manifest updated."""
    t = read(directory, f"{split}/images.arrow")
    feats = t["features"].combine_chunks()
    values = feats.values.to_numpy(zero_copy_only=False).copy()
    edit(values)
    col = pa.LargeListArray.from_arrays(feats.offsets, pa.array(values, pa.float16()))
    replace_file(directory, f"{split}/images.arrow", t.set_column(t.schema.get_field_index("features"), "features",
                                                                    col))


def test_non_finite_features_are_named_before_training_and_the_verdict_is_cached(tmp_path):
    from ltvl.util.home import home
    from ltvl.vl.assemble import VLSpec, build_vl
    from ltvl.vl.models.presets import BackboneSpec

    make_synthetic("gqa", tmp_path / "d", n_train=20, n_test=5)
    spec = VLSpec(task="gqa", data=str(tmp_path / "d"), backbone=BackboneSpec("tiny"))
    build_vl(spec)  # clean: scanned once, verdict cached by content
    cached = list((home() / "cache" / "verified").glob("*.json"))
    assert len(cached) >= 1
    n_img = 16 * 9  # values per image: 9 regions x 16-d

    def poison(v):
        v[3 * n_img + 5] = np.nan  # image row 3

    _rewrite_images(tmp_path / "d", "test", poison)
    with pytest.raises(LtvlError, match=r"(?s)test/images.arrow features \(split 'test'\).*image_id 3 \(row 3\) "
                                        r"has a non-finite feature value"):
        build_vl(spec)


def test_empty_split_is_named(tmp_path):
    make_synthetic("gqa", tmp_path, n_train=20, n_test=5)
    table = read(tmp_path, "test/examples.arrow")
    replace_file(tmp_path, "test/examples.arrow", table.slice(0, 0))
    with pytest.raises(LtvlError, match=r"(?s)test/examples.arrow.*split 'test' has no examples"):
        open_split(tmp_path, "test")


def test_a_uri_without_a_dataset_is_named(tmp_path):
    from ltvl.vl.data.fetch import fetch

    with pytest.raises(LtvlError, match=r"(?s)no readable dataset.json at file://.*nothing-here.*ltvl data import"):
        fetch(f"file://{tmp_path / 'nothing-here'}")


def test_non_finite_scan_names_the_row_across_record_batches(tmp_path):
    from ltvl.vl.data.verify import check_values

    info = DatasetInfo(task="gqa", feat_dim=4, num_regions=2, answers=["a", "b"])
    feats = np.zeros((4, 2, 4))
    bad = feats.copy()
    bad[2, 1, 3] = np.inf
    with DatasetWriter(tmp_path / "d", info) as w:
        images = w.images("train")
        images.write([0, 1, 2, 3], feats, np.zeros((4, 2, 7)))
        images.write([10, 11, 12, 13], bad, np.zeros((4, 2, 7)))  # a second record batch
        w.examples("train", pa.table({"qid": pa.array([0], pa.int64()), "image_id": pa.array([12]),
                                      "text": ["q"], "label": pa.array([0], pa.int32())}))
    with pytest.raises(LtvlError, match=r"image_id 12 \(row 6\) has a non-finite feature value"):
        check_values(tmp_path / "d", DatasetInfo.load(tmp_path / "d"))


def test_a_file_replaced_under_its_manifest_is_refused_on_first_use(tmp_path, monkeypatch):
    """Before: a node trusted the manifest's sha256 (only `ltvl data info --verify` recomputed it), so
    an images.arrow replaced in place, same size, trained (and a store replayed) on other features."""
    from ltvl.vl.data.synthetic import make_synthetic
    from ltvl.vl.data.verify import check_values

    monkeypatch.setenv("LTVL_HOME", str(tmp_path / "home"))
    make_synthetic("vqa", tmp_path / "d", n_train=16, n_test=4)
    f = tmp_path / "d" / "train" / "images.arrow"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the feature buffer: still a readable Arrow file of the same size
    f.write_bytes(bytes(data))
    with pytest.raises(LtvlError, match="contents differ from the manifest") as e:
        check_values(tmp_path / "d", DatasetInfo.load(tmp_path / "d"))
    assert e.value.where == str(f)
