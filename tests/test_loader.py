"""The data loader: worker processes change nothing but speed; tokenised splits are cached per
node; text stored as word-piece ids must match the backbone's vocabulary."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from ltvl.core.train import TrainConfig, Trainer
from ltvl.util.errors import LtvlError
from ltvl.vl.assemble import VLSpec, build_vl
from ltvl.vl.data.info import DatasetInfo
from ltvl.vl.data.synthetic import Shape, make_synthetic
from ltvl.vl.data.tokens import PrepCache, tokenizer_fingerprint
from ltvl.vl.data.writer import DatasetWriter
from ltvl.vl.models.presets import BackboneSpec, load_tokenizer


@pytest.fixture(scope="module")
def pretrain_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pretrain")
    make_synthetic("pretrain", d, n_train=64, n_test=16, shape=Shape(regions=12, min_regions=9))
    return d


def _setup(data, workers, task="pretrain"):
    return build_vl(VLSpec(task=task, data=str(data), backbone=BackboneSpec("tiny"), max_len=12,
                           loader_workers=workers))


def test_worker_processes_give_the_same_batches_in_the_same_order(pretrain_dir):
    """Pretrain batches carry every kind of randomness (MLM, region masks, ITM negatives)."""
    slots = [5, 0, 17, 3]
    plain = list(_setup(pretrain_dir, 0).data.batches(slots, 8, seed=3))
    workers = list(_setup(pretrain_dir, 2).data.batches(slots, 8, seed=3))
    assert len(plain) == len(workers) == 4
    for a, b in zip(plain, workers):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_training_with_workers_is_bit_identical(pretrain_dir):
    weights = []
    for workers in (0, 2):
        setup = _setup(pretrain_dir, workers)
        model = setup.model_factory()
        Trainer(setup.data, TrainConfig(steps=4, lr=1e-3, batch_size=8, grad_accum=2)).train(model)
        weights.append(model.state_dict())
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_prep_cache_tokenises_once_per_node(pretrain_dir, tmp_path):
    setup = _setup(pretrain_dir, 0)
    cache = PrepCache(tmp_path / "prep")
    split, task, tok = setup.data.train, setup.data.task, setup.data.tokenizer
    first = cache.get(split, task, tok, 12, lambda: task.prepare(split, tok, 12))
    assert len(list((tmp_path / "prep").rglob("*.safetensors"))) == 1

    def never():
        raise AssertionError("prepared twice")

    again = cache.get(split, task, tok, 12, never)
    assert first.keys() == again.keys()
    for k, v in first.items():
        assert np.array_equal(np.asarray(v), np.asarray(again[k])), k
    other_len = cache.get(split, task, tok, 10, lambda: task.prepare(split, tok, 10))  # another key
    assert other_len["input_ids"].shape[1] == 10


def _pretokenised(out, tokenizer: dict, ids: list[list[int]]):
    info = DatasetInfo(task="gqa", feat_dim=16, num_regions=9, answers=["a", "b"], tokenizer=tokenizer)
    n = len(ids)
    with DatasetWriter(out, info) as w:
        for split in ("train", "test"):
            w.images(split).write(np.arange(n), np.zeros((n, 9, 16)), np.zeros((n, 9, 7)))
            w.examples(split, pa.table({"qid": pa.array(np.arange(n), pa.int64()),
                                        "image_id": pa.array(np.arange(n), pa.int64()),
                                        "input_ids": pa.array(ids, pa.list_(pa.int32())),
                                        "label": pa.array([0, 1] * (n // 2), pa.int32())}))


def test_pretokenised_text_becomes_cls_ids_sep(tmp_path):
    tok = load_tokenizer(BackboneSpec("tiny"))
    _pretokenised(tmp_path, {"name": "tiny's own", **tokenizer_fingerprint(tok)}, [[2000, 2001], [7] * 30])
    data = build_vl(VLSpec(task="gqa", data=str(tmp_path), backbone=BackboneSpec("tiny"), max_len=8)).data
    ids, mask = data.train_prep["input_ids"], data.train_prep["attention_mask"]
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    assert ids[0].tolist() == [cls, 2000, 2001, sep, pad, pad, pad, pad] and mask[0].tolist() == [1] * 4 + [0] * 4
    assert ids[1].tolist() == [cls] + [7] * 6 + [sep] and mask[1].tolist() == [1] * 8  # truncated to max_len


def test_pretokenised_text_with_another_vocabulary_is_refused(tmp_path):
    _pretokenised(tmp_path, {"name": "bert-base-cased", "vocab_size": 28996}, [[1], [2]])
    with pytest.raises(LtvlError, match=r"(?s)dataset.json tokenizer.*word-piece ids of bert-base-cased "
                                        r"\(vocabulary of 28996 tokens\).*preset 'tiny'"):
        build_vl(VLSpec(task="gqa", data=str(tmp_path), backbone=BackboneSpec("tiny")))
