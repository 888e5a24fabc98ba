"""Files written by the paper's own data code import as the reference readers read them: ground-truth
img_dbs kept whole, one region-label space for UNITER and LXMERT (background excluded), MRC-kl's
soft labels, unknown answers as each reference treats them, unlabelled test splits marked and
refused for training, ViLT's test arrows and captions, UNITER's tokenizer names."""

import json

import numpy as np
import pytest

from ltvl.util.errors import LtvlError
from ltvl.vl.assemble import VLSpec, build_vl
from ltvl.vl.data.importers.run import check_format, run_import
from ltvl.vl.data.store import open_split
from ltvl.vl.models.presets import BackboneSpec
from tests.helpers import published as P
from tests.test_cli import ltvl
from tests.test_importers import META, VILT_VQA

UNCASED = {**META, "bert": "bert-base-uncased", "v_range": [999, 30522]}


# --- 7. ground-truth img_dbs are kept whole ------------------------------------------------------
def test_refcoco_ground_truth_db_keeps_every_box_and_targets_fit(tmp_path):
    rng = np.random.default_rng(1)
    # 14 annotated boxes, none of which clears the detection rule's confidence (it would keep 10)
    images = {f"visual_grounding_coco_gt_{i:012}.npz": P.uniter_image(rng, 14, conf=(0, 0.1)) for i in (5, 9)}
    gt = P.uniter_img_db(tmp_path / "re_coco_gt", images, db="numbb")
    anns = {5: list(range(500, 514)), 9: list(range(900, 914))}
    records = {str(k): {"input_ids": [5], "image_id": im, "ann_id": anns[im][13 - k], "sent_id": k}
               for k, im in enumerate([5, 9, 5])}
    extra = {"images.json": [{"id": i, "ann_ids": a, "height": 1, "width": 1} for i, a in anns.items()]}
    txt = P.uniter_txt_db(tmp_path / "txt", records, META, extra)
    out = tmp_path / "out"
    run_import("uniter", "refcoco_plus", out, {"train": [txt]}, [gt])
    s = open_split(out, "train")
    assert set(s.images.num_regions.tolist()) == {14}
    assert s.examples["target_region"].to_pylist() == [13, 12, 11]  # past the 10 boxes the old rule kept
    det = P.uniter_img_db(tmp_path / "re_coco_det", images, {n: 10 for n in images})  # detections, not the gt
    with pytest.raises(LtvlError, match=r"(?s)has 10 regions in the img_db but 14 annotations.*re_coco_gt"):
        run_import("uniter", "refcoco_plus", tmp_path / "o2", {"train": [txt]}, [det])


def test_unknown_lmdb_names_are_refused(tmp_path):
    from ltvl.vl.data.importers.uniter import ImgDb

    db = P.uniter_img_db(tmp_path / "x", {"a.npz": P.uniter_image(np.random.default_rng(0), 3)}, db="all")
    (db / "all").rename(db / "feat_weird")
    with pytest.raises(LtvlError, match=r"LMDB name 'feat_weird' is not one UNITER writes"):
        ImgDb(db)


# --- 8. one region-label space; MRC and MRC-kl ------------------------------------------------------
def test_uniter_and_lxmert_region_labels_share_one_space(tmp_path):
    rng = np.random.default_rng(2)
    u_img = P.uniter_image(rng, 10)
    udb = P.uniter_img_db(tmp_path / "udb", {"coco_val2014_000000000001.npz": u_img}, db="all")
    txt = P.uniter_txt_db(tmp_path / "txt", {"0": {"input_ids": [5], "img_fname": "coco_val2014_000000000001.npz"}},
                          UNCASED)
    run_import("uniter", "flickr30k", tmp_path / "u", {"train": [txt]}, [udb])
    l_img = P.lxmert_image(rng, 10)
    tsv = P.lxmert_tsv(tmp_path / "f.tsv", {"COCO_val2014_000000000001": l_img})
    (tmp_path / "q.json").write_text(json.dumps([{"identifier": "d-0-0", "img0": "COCO_val2014_000000000001",
                                                  "img1": "COCO_val2014_000000000001", "sent": "s", "label": 1}]))
    run_import("lxmert", "nlvr2", tmp_path / "l", {"train": [tmp_path / "q.json"]}, [tsv])
    u, lx = open_split(tmp_path / "u", "train"), open_split(tmp_path / "l", "train")
    assert u.info.region_classes == lx.info.region_classes == 1600
    ulab = u.images.batch([0])["region_labels"][0].numpy()
    assert np.array_equal(ulab, u_img["soft_labels"].astype(np.float16)[:, 1:].argmax(1))
    assert np.array_equal(lx.images.batch([0])["region_labels"][0].numpy(), l_img["objects_id"])
    assert u.info.soft_label_dim == 1601  # caption data keeps the soft labels, for MRC-kl
    soft = u.images.batch([0])["region_soft_labels"][0].numpy()
    assert np.array_equal(soft, u_img["soft_labels"].astype(np.float16))


def test_imported_caption_data_trains_mrc_and_mrc_kl(tmp_path):
    from ltvl.core.train import TrainConfig, Trainer

    rng = np.random.default_rng(3)
    images = {f"coco_train2014_{i:012}.npz": P.uniter_image(rng, 10) for i in range(4)}
    udb = P.uniter_img_db(tmp_path / "udb", images, {n: 10 for n in images})
    recs = {str(k): {"input_ids": [2000 + k, 2001], "img_fname": list(images)[k % 4]} for k in range(8)}
    txt = P.uniter_txt_db(tmp_path / "txt", recs, UNCASED)
    out = tmp_path / "out"
    run_import("uniter", "pretrain", out, {"train": [txt], "test": [txt]}, [udb])
    setup = build_vl(VLSpec(task="pretrain", data=str(out), backbone=BackboneSpec("tiny"), max_len=8,
                            objectives=("mlm", "mrc", "mrc_kl", "itm")))
    model = setup.model_factory()
    assert model.head["mrc"][-1].out_features == 1600 and model.head["mrc_kl"][-1].out_features == 1601
    Trainer(setup.data, TrainConfig(steps=2, batch_size=4)).train(model)
    metrics = Trainer(setup.data, TrainConfig(steps=1, batch_size=4)).evaluate(model)
    assert {"mrc_accuracy", "mrc_kl_accuracy"} <= set(metrics)


def test_an_old_import_without_region_classes_is_refused_for_mrc(tmp_path):
    rng = np.random.default_rng(4)
    images = {"a.npz": P.uniter_image(rng, 10)}
    udb = P.uniter_img_db(tmp_path / "udb", images, db="all")
    txt = P.uniter_txt_db(tmp_path / "txt", {"0": {"input_ids": [5], "img_fname": "a.npz"}}, UNCASED)
    out = tmp_path / "out"
    run_import("uniter", "flickr30k", out, {"train": [txt], "test": [txt]}, [udb])
    from tests.helpers.datasets import rewrite_dataset_json

    rewrite_dataset_json(out, region_classes=None)  # what imports before this ltvl recorded
    with pytest.raises(LtvlError, match=r"MRC needs region classes.*re-import"):
        build_vl(VLSpec(task="pretrain", data=str(out), backbone=BackboneSpec("tiny"))).model_factory()


# --- 10. unknown answers, as each reference treats them ---------------------------------------------
def _lxmert(tmp_path, questions, task):
    rng = np.random.default_rng(5)
    tsv = P.lxmert_tsv(tmp_path / "f.tsv", {f"img{i}": P.lxmert_image(rng, 5) for i in range(2)})
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "ans.json").write_text(json.dumps({"yes": 0, "no": 1}))
    return {"train": [tmp_path / "q.json"]}, [tsv], tmp_path / "ans.json"


def test_lxmert_gqa_skips_unknown_answers_and_counts_them(tmp_path):
    qs = [{"img_id": "img0", "sent": "a?", "question_id": "1", "label": {"yes": 1.0}},
          {"img_id": "img1", "sent": "b?", "question_id": "2", "label": {"purple": 1.0}},
          {"img_id": "img1", "sent": "c?", "question_id": "3", "label": {"no": 1.0}}]
    info = run_import("lxmert", "gqa", tmp_path / "out", *_lxmert(tmp_path, qs, "gqa"))
    assert open_split(tmp_path / "out", "train").examples["label"].to_pylist() == [0, -1, 1]
    assert info.import_log == ["train: 1 answer(s) outside the vocabulary skipped, as LXMERT's gqa_data.py does; "
                               "1 question(s) kept no answer (label -1: left out of training, scored wrong)"]


def test_lxmert_vqa_refuses_an_unknown_answer_as_lxmert_does(tmp_path):
    qs = [{"img_id": "img0", "sent": "a?", "question_id": 7, "label": {"yes": 1.0, "maybe": 0.3}}]
    with pytest.raises(LtvlError, match=r"question 7: answer 'maybe' is not in the answer vocabulary"):
        run_import("lxmert", "vqa", tmp_path / "out", *_lxmert(tmp_path, qs, "vqa"))


def test_gqa_label_minus_one_is_left_out_of_the_loss_and_scored_wrong():
    import torch

    from ltvl.vl.tasks import get_task

    task = get_task("gqa")
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    y = torch.tensor([0, -1, 1])
    assert torch.isclose(task.loss(logits, {"labels": y}),
                         torch.nn.functional.cross_entropy(logits[[0, 2]], y[[0, 2]]))
    assert task.score(logits, {"labels": y}) == {"correct": 1.0, "n": 3.0}


# --- 11. unlabelled splits -----------------------------------------------------------------------------
def test_unlabelled_test_split_is_marked_and_refused_for_training_and_scoring(tmp_path):
    qs = [{"img_id": "img0", "sent": "a?", "question_id": "1", "label": {"yes": 1.0}}]
    test = [{"img_id": "img1", "sent": "b?", "question_id": "2"}]  # GQA submit: no label key
    splits, feats, ans = _lxmert(tmp_path, qs, "gqa")
    (tmp_path / "test.json").write_text(json.dumps(test))
    info = run_import("lxmert", "gqa", tmp_path / "out", {**splits, "test": [tmp_path / "test.json"]}, feats, ans)
    assert info.unlabelled == ["test"]
    assert open_split(tmp_path / "out", "test").examples["label"].to_pylist() == [-1]
    with pytest.raises(LtvlError, match=r"(?s)split 'test' .*published without labels.*is scored on labelled"):
        build_vl(VLSpec(task="gqa", data=str(tmp_path / "out"), backbone=BackboneSpec("tiny")))
    (tmp_path / "mixed.json").write_text(json.dumps(qs + test))
    with pytest.raises(LtvlError, match=r"1 questions have a label and 1 do not"):
        run_import("lxmert", "gqa", tmp_path / "o2", {"train": [tmp_path / "mixed.json"]}, feats, ans)


@pytest.mark.parametrize("task,record", [
    ("vqa", {"input_ids": [5], "img_fname": "a.npz", "question_id": 1}),
    ("nlvr2", {"input_ids": [5], "img_fname": ["a.npz", "a.npz"], "identifier": "test1-0-0"}),
])
def test_uniter_txt_db_without_targets_is_an_unlabelled_split(tmp_path, task, record):
    udb = P.uniter_img_db(tmp_path / "udb", {"a.npz": P.uniter_image(np.random.default_rng(6), 10)}, db="all")
    txt = P.uniter_txt_db(tmp_path / "txt", {"0": record}, UNCASED)
    (tmp_path / "ans.json").write_text(json.dumps({"yes": 0}))
    info = run_import("uniter", task, tmp_path / "out", {"test": [txt]}, [udb],
                      tmp_path / "ans.json" if task == "vqa" else None)
    assert info.unlabelled == ["test"]


# --- 12. ViLT's test arrows; no GQA ---------------------------------------------------------------------
def test_vilt_vqa_test_arrow_with_empty_answers_imports_unlabelled(tmp_path):
    rng = np.random.default_rng(7)
    rows = [{"image": P.jpeg(rng), "questions": ["q0", "q1"], "answers": [], "answer_labels": [],
             "answer_scores": [], "image_id": 300 + i, "question_id": [10 * i, 10 * i + 1], "split": "test"}
            for i in range(2)]  # write_vqa.py: list(list()) for test and test-dev
    path = P.vilt_arrow(tmp_path / "vqav2_test.arrow", rows, VILT_VQA)
    info = run_import("vilt", "vqa", tmp_path / "out", {"test": [path]}, [], image_size=32)
    assert info.unlabelled == ["test"]
    assert open_split(tmp_path / "out", "test").examples["answer_ids"].to_pylist() == [[], [], [], []]


def test_vilt_has_no_gqa_files():
    with pytest.raises(LtvlError, match=r"(?s)ViLT publishes no GQA files.*ltvl data import lxmert --task gqa"):
        check_format("vilt", "gqa")


# --- 13. the smaller cases -------------------------------------------------------------------------------
def test_vilt_flickr30k_drops_repeated_captions_as_its_reader_does(tmp_path):
    rng = np.random.default_rng(8)
    rows = [{"image": P.jpeg(rng), "caption": ["a dog", "a cat", "a dog"], "image_id": "1.jpg", "split": "train"}]
    path = P.vilt_arrow(tmp_path / "f30k.arrow", rows, ["image", "caption", "image_id", "split"])
    info = run_import("vilt", "flickr30k", tmp_path / "out", {"train": [path]}, [])
    assert open_split(tmp_path / "out", "train").examples["text"].to_pylist() == ["a dog", "a cat"]
    assert info.import_log == ["train: 1 repeated caption(s) of an image dropped, as ViLT's reader does"]


def test_prepro_txt_db_names_its_tokenizer_under_toker(tmp_path):
    udb = P.uniter_img_db(tmp_path / "udb", {"a.npz": P.uniter_image(np.random.default_rng(9), 10)}, db="all")
    meta = {k: v for k, v in META.items() if k != "bert"} | {"toker": "bert-base-cased",
                                                             "tokenizer": "bert-base-cased"}
    txt = P.uniter_txt_db(tmp_path / "txt", {"0": {"input_ids": [5], "img_fname": "a.npz"}}, meta)
    info = run_import("uniter", "flickr30k", tmp_path / "out", {"train": [txt]}, [udb])
    assert info.tokenizer["name"] == "bert-base-cased"


def test_no_matching_image_names_an_example_image(tmp_path):
    udb = P.uniter_img_db(tmp_path / "udb", {"a.npz": P.uniter_image(np.random.default_rng(10), 10)}, db="all")
    txt = P.uniter_txt_db(tmp_path / "txt", {"0": {"input_ids": [5], "img_fname": "zebra.npz"}}, META)
    with pytest.raises(LtvlError, match=r"no image in the feature sources matches the examples of split 'train' "
                                        r"\(they name e.g. 'zebra.npz'\)"):
        run_import("uniter", "flickr30k", tmp_path / "out", {"train": [txt]}, [udb])


def test_import_command_prints_its_log_and_unlabelled_splits(tmp_path):
    qs = [{"img_id": "img0", "sent": "a?", "question_id": "1", "label": {"purple": 1.0}}]
    splits, feats, ans = _lxmert(tmp_path, qs, "gqa")
    (tmp_path / "test.json").write_text(json.dumps([{"img_id": "img1", "sent": "b?", "question_id": "2"}]))
    res = ltvl("data", "import", "lxmert", "--task", "gqa", "--out", tmp_path / "out", "--split",
               f"train={splits['train'][0]}", "--split", f"test={tmp_path / 'test.json'}", "--features", feats[0],
               "--answers", ans)
    assert res.returncode == 0, res.stderr
    assert "1 answer(s) outside the vocabulary skipped" in res.stdout and "unlabelled: test" in res.stdout
