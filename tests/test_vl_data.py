"""Arrow datasets: schema declaration and checks, synthetic generators, the easy-VQA importer."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ltvl.util.errors import LtvlError
from ltvl.vl.data.schema import TASK_COLUMNS
from ltvl.vl.data.store import DatasetInfo, open_split, write_table
from ltvl.vl.data.synthetic import COLOURS, make_synthetic


@pytest.mark.parametrize("task", sorted(TASK_COLUMNS))
def test_synthetic_dataset_matches_declared_schema(tmp_path, task):
    info = make_synthetic(task, tmp_path, n_train=40, n_test=10)
    split = open_split(tmp_path, "train")
    assert split.examples.num_rows == 40 and info.task == task
    for name, typ in TASK_COLUMNS[task].items():
        assert split.examples.schema.field(name).type == typ
    assert split.images.features.shape[1:] == (info.num_regions, info.feat_dim)
    assert split.images.pixels.shape[1:] == (3, info.image_size, info.image_size)


def _colours_of(split, image_id):
    """Recover the colour grid from the stored features (one-hot code + noise)."""
    feats = split.images.features[split.images.index[image_id]].float()
    return feats[:, : len(COLOURS)].argmax(1).tolist()


def test_synthetic_labels_depend_on_the_image(tmp_path):
    make_synthetic("vqa", tmp_path, n_train=200, n_test=10)
    s = open_split(tmp_path, "train")
    texts, ids = s.examples["text"].to_pylist(), s.examples["image_id"].to_pylist()
    answers = [a[0] for a in s.examples["answer_ids"].to_pylist()]
    for t, i, a in zip(texts, ids, answers):  # "is <colour> the main colour?"
        colour = COLOURS.index(t.split()[1])
        grid = _colours_of(s, i)
        assert a == int(grid.count(colour) >= 5)  # the answer is a fact about image *and* question
    assert 0.3 < np.mean(answers) < 0.7  # and not a constant


def test_refcoco_target_is_the_named_region(tmp_path):
    make_synthetic("refcoco_plus", tmp_path, n_train=50, n_test=10)
    s = open_split(tmp_path, "train")
    for t, i, r in zip(
        s.examples["text"].to_pylist(), s.examples["image_id"].to_pylist(), s.examples["target_region"].to_pylist()
    ):
        assert _colours_of(s, i)[r] == COLOURS.index(t.split()[1])


def test_missing_and_mistyped_columns_are_named(tmp_path):
    make_synthetic("gqa", tmp_path, n_train=20, n_test=5)
    path = tmp_path / "train" / "examples.parquet"
    table = pq.read_table(path)
    write_table(table.drop(["label"]), path)
    with pytest.raises(LtvlError, match="missing column 'label'"):
        open_split(tmp_path, "train")
    write_table(
        table.set_column(table.schema.get_field_index("label"), "label", table["label"].cast(pa.string())), path
    )
    with pytest.raises(LtvlError, match="column 'label' has type string, expected int32"):
        open_split(tmp_path, "train")


def test_feature_dimension_mismatch_is_reported(tmp_path):
    make_synthetic("gqa", tmp_path, n_train=20, n_test=5)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    meta["feat_dim"] = 32
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(LtvlError, match="features hold 144 values per image, expected"):
        open_split(tmp_path, "train")


def test_not_a_dataset_dir(tmp_path):
    with pytest.raises(LtvlError, match="no dataset.json"):
        DatasetInfo.load(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"task": "vqa", "feat_dim": 4, "num_regions": 2, "answerz": []}))
    with pytest.raises(LtvlError, match=r"unknown keys \['answerz'\]"):
        DatasetInfo.load(tmp_path)


def test_easy_vqa_grid_must_divide_the_image(tmp_path):
    from ltvl.vl.data.easy_vqa import prepare_easy_vqa

    with pytest.raises(LtvlError, match="grid 3 does not divide"):
        prepare_easy_vqa(tmp_path, grid=3, limit=5)
    assert not (tmp_path / "dataset.json").exists()


def test_easy_vqa_import_small(tmp_path):
    from ltvl.vl.data.easy_vqa import prepare_easy_vqa

    info = prepare_easy_vqa(tmp_path, grid=4, limit=300)
    assert len(info.answers) == 13 and info.feat_dim == 768 and info.num_regions == 16
    s = open_split(tmp_path, "test")
    assert s.examples.num_rows == 300
    assert s.images.pixels.shape[1:] == (3, 64, 64)
    # features are the pixels' patches, scaled to [-1, 1]
    px = s.images.pixels[0].permute(1, 2, 0)[:16, :16].reshape(-1).float() / 127.5 - 1
    assert np.allclose(s.images.features[0, 0].float().numpy(), px.numpy(), atol=1e-2)


@pytest.mark.long
def test_easy_vqa_full_counts(tmp_path):
    from ltvl.vl.data.easy_vqa import prepare_easy_vqa

    prepare_easy_vqa(tmp_path)
    assert open_split(tmp_path, "train").examples.num_rows == 38575
    assert open_split(tmp_path, "test").examples.num_rows == 9673
