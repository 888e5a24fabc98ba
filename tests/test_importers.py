"""Importers from the published formats: each round-trips its fixture (values and ids in equal
values and ids out), and each kind of bad input is an error that names the file, with nothing
written."""

import json
import os

import numpy as np
import pyarrow as pa
import pytest

from ltvl.util.errors import LtvlError
from ltvl.vl.data.importers.run import run_import
from ltvl.vl.data.store import open_split
from tests.helpers import published as P
from tests.test_cli import ltvl

META = {"bert": "bert-base-cased", "CLS": 101, "SEP": 102, "MASK": 103, "UNK": 100, "v_range": [999, 28996]}


def _images(path, split="train") -> pa.Table:
    return pa.ipc.open_file(str(path / split / "images.arrow")).read_all()


def _by_name(path, split="train") -> dict:
    t = _images(path, split)
    return {n: i for n, i in zip(t["name"].to_pylist(), t["image_id"].to_pylist())}


@pytest.fixture
def uniter_vqa(tmp_path):
    rng = np.random.default_rng(0)
    images = {f"coco_train2014_{i:012}.npz": P.uniter_image(rng, 12) for i in range(4)}
    nbb = {name: 10 + k % 3 for k, name in enumerate(images)}  # UNITER keeps 10-12 of the 12 boxes
    img_db = P.uniter_img_db(tmp_path / "img_db" / "coco_train2014", images, nbb)
    names = list(images)
    records = {str(100 + k): {"input_ids": [2000 + k, 2001, 2002][: 1 + k % 3], "img_fname": names[k % 4],
                              "question_id": 100 + k, "target": {"labels": [k % 3], "scores": [0.9]}}
               for k in range(6)}
    txt = P.uniter_txt_db(tmp_path / "txt_db" / "vqa_train.db", records, META)
    (tmp_path / "ans2label.json").write_text(json.dumps({"yes": 0, "no": 1, "2": 2}))
    return tmp_path, img_db, txt, images, nbb, records


def test_uniter_vqa_round_trips(uniter_vqa):
    root, img_db, txt, images, nbb, records = uniter_vqa
    out = root / "out"
    info = run_import("uniter", "vqa", out, {"train": [txt], "test": [txt]}, [img_db], root / "ans2label.json")
    assert info.answers == ["yes", "no", "2"] and info.feat_dim == P.D
    assert info.tokenizer == {"name": "bert-base-cased", "cls": 101, "sep": 102, "vocab_size": 28996}
    assert info.region_classes == 1600 and info.soft_label_dim is None and not info.unlabelled
    s = open_split(out, "train")
    ids = _by_name(out)
    assert set(ids) == set(images)
    for name, arrays in images.items():  # features, boxes (+ w*h) and classes of the first nbb boxes
        n = nbb[name]
        half = {k: a.astype(np.float16) for k, a in arrays.items()}  # as convert_imgdir.py stores them
        b = s.images.batch([ids[name]])
        assert b["image_mask"].sum() == n
        assert np.array_equal(b["features"][0, :n].numpy(), half["features"][:n])
        bb = half["norm_bb"][:n].astype(np.float32)
        assert np.allclose(b["boxes"][0, :n].numpy(), np.concatenate([bb, bb[:, 4:5] * bb[:, 5:6]], 1))
        # UNITER's MRC target: the best class with the background (column 0) excluded, here 0-based
        assert np.array_equal(b["region_labels"][0, :n].numpy(), half["soft_labels"][:n, 1:].argmax(1))
        assert (half["soft_labels"][:n].argmax(1) == 0).all()  # the fixture's background wins every argmax
    ex = s.examples.to_pydict()
    assert ex["source_id"] == list(records)
    for k, rec in enumerate(records.values()):
        assert ex["input_ids"][k] == rec["input_ids"]
        assert ex["answer_ids"][k] == rec["target"]["labels"] and ex["answer_scores"][k] == pytest.approx([0.9])
        assert ex["image_id"][k] == ids[rec["img_fname"]]


def test_uniter_compressed_nlvr2_and_computed_box_counts(tmp_path):
    rng = np.random.default_rng(1)
    images = {f"nlvr2_dev-{i}-img{j}.npz": P.uniter_image(rng, 14) for i in range(3) for j in range(2)}
    img_db = P.uniter_img_db(tmp_path / "img_db", images, nbb=None, compressed=True)  # no nbb json published
    records = {f"dev-{i}-0": {"input_ids": [7, 8], "img_fname": [f"nlvr2_dev-{i}-img0.npz", f"nlvr2_dev-{i}-img1.npz"],
                              "target": i % 2, "identifier": f"dev-{i}-0"} for i in range(3)}
    txt = P.uniter_txt_db(tmp_path / "txt", records, META)
    out = tmp_path / "out"
    run_import("uniter", "nlvr2", out, {"train": [txt]}, [img_db])
    s, ids = open_split(out, "train"), _by_name(out)
    from ltvl.vl.data.importers.uniter import compute_num_bb

    for name, arrays in images.items():
        n = compute_num_bb(arrays["conf"].astype(np.float16))  # UNITER's rule on the stored (half) confidences
        assert s.images.num_regions[ids[name]] == n
        assert np.array_equal(s.images.features(ids[name]), arrays["features"][:n].astype(np.float16))
    ex = s.examples.to_pydict()
    assert ex["label"] == [0, 1, 0]
    assert [ex["image_id"][k] for k in range(3)] == [ids[f"nlvr2_dev-{i}-img0.npz"] for i in range(3)]
    assert [ex["image_id_2"][k] for k in range(3)] == [ids[f"nlvr2_dev-{i}-img1.npz"] for i in range(3)]


def test_uniter_refcoco_target_is_the_annotation_region(tmp_path):
    rng = np.random.default_rng(2)
    images = {f"visual_grounding_coco_gt_{i:012}.npz": P.uniter_image(rng, 10) for i in (5, 9)}
    img_db = P.uniter_img_db(tmp_path / "img_db", images, {n: 10 for n in images})
    anns = {5: list(range(500, 510)), 9: list(range(900, 910))}
    records = {str(k): {"input_ids": [5], "image_id": im, "ann_id": anns[im][k], "sent_id": k}
               for k, im in enumerate([5, 9, 5])}
    txt = P.uniter_txt_db(tmp_path / "txt", records, META,
                          {"images.json": [{"id": i, "ann_ids": a, "height": 1, "width": 1} for i, a in anns.items()]})
    out = tmp_path / "out"
    run_import("uniter", "refcoco_plus", out, {"train": [txt]}, [img_db])
    assert open_split(out, "train").examples["target_region"].to_pylist() == [0, 1, 2]


def test_imported_uniter_data_trains_with_a_matching_vocabulary(tmp_path, uniter_vqa):
    """The tokenizer check passes when the ids index the backbone's own vocabulary (MiniLM's here)."""
    from ltvl.vl.models.presets import minilm_dir

    root, img_db, txt, *_ = uniter_vqa
    meta = {**META, "bert": "bert-base-uncased", "v_range": [999, 30522]}
    (txt / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "data"
    res = ltvl("data", "import", "uniter", "--task", "vqa", "--out", out, "--split", f"train={txt}",
               "--split", f"test={txt}", "--features", img_db, "--answers", root / "ans2label.json",
               "--vocab", f"{minilm_dir()}/vocab.txt")
    assert res.returncode == 0, res.stderr
    assert "train 4 images" in res.stdout and "train 6 examples" in res.stdout
    res = ltvl("imp", "--data", out, "--layers", "1", "--steps", "2", "--batch-size", "4", "--target", "0.5",
               "--root", tmp_path / "chains")
    assert res.returncode == 0, res.stderr
    assert "round 1: sparsity 0.500" in res.stdout


def test_uniter_bad_inputs_are_named_and_leave_nothing(uniter_vqa):
    root, img_db, txt, images, nbb, records = uniter_vqa
    ans = root / "ans2label.json"
    # an image the examples need is in no img_db
    other = P.uniter_img_db(root / "img_db2", {k: v for k, v in list(images.items())[1:]}, nbb)
    with pytest.raises(LtvlError, match=r"(?s)img_db2.*1 image\(s\) used by 'train' examples.*"
                                        r"coco_train2014_000000000000"):
        run_import("uniter", "vqa", root / "o1", {"train": [txt]}, [other], ans)
    assert not (root / "o1").exists()
    # the VQA answer vocabulary is required
    with pytest.raises(LtvlError, match="--answers"):
        run_import("uniter", "vqa", root / "o2", {"train": [txt]}, [img_db])
    # a truncated LMDB
    mdb = next(img_db.glob("*/data.mdb"))
    mdb.write_bytes(mdb.read_bytes()[:4096])
    with pytest.raises(LtvlError, match=r"feat_th0.2_max100_min10.*(not a readable LMDB|corrupt)"):
        run_import("uniter", "vqa", root / "o3", {"train": [txt]}, [img_db], ans)
    assert not any(p.name.startswith(("o1", "o2", "o3", ".o")) for p in root.iterdir())


@pytest.fixture
def lxmert_vqa(tmp_path):
    rng = np.random.default_rng(3)
    images = {f"COCO_val2014_{i:012}": P.lxmert_image(rng, 36) for i in range(3)}
    tsv = P.lxmert_tsv(tmp_path / "val2014_obj36.tsv", images)
    names = list(images)
    questions = [{"img_id": names[k % 3], "sent": f"what is {k}?", "question_id": 1000 + k,
                  "label": {"net": 1.0, "cat": 0.3} if k % 2 else {"dog": 0.6}} for k in range(5)]
    (tmp_path / "minival.json").write_text(json.dumps(questions))
    (tmp_path / "ans2label.json").write_text(json.dumps({"net": 0, "cat": 1, "dog": 2}))
    return tmp_path, tsv, images, questions


def test_lxmert_vqa_round_trips(lxmert_vqa):
    root, tsv, images, questions = lxmert_vqa
    out = root / "out"
    run_import("lxmert", "vqa", out, {"train": [root / "minival.json"]}, [tsv], root / "ans2label.json")
    s, ids = open_split(out, "train"), _by_name(out)
    for name, im in images.items():
        b = s.images.batch([ids[name]])
        assert np.array_equal(b["features"][0].numpy(), im["features"].astype(np.float16))
        x1, y1, x2, y2 = (im["boxes"] / [im["w"], im["h"], im["w"], im["h"]]).T
        assert np.allclose(b["boxes"][0].numpy(), np.stack([x1, y1, x2, y2, x2 - x1, y2 - y1, (x2 - x1) * (y2 - y1)],
                                                           1), atol=1e-6)
        assert np.array_equal(b["region_labels"][0].numpy(), im["objects_id"])
    ex = s.examples.to_pydict()
    assert ex["source_id"] == [str(q["question_id"]) for q in questions]
    assert ex["text"] == [q["sent"] for q in questions]
    assert ex["answer_ids"][1] == [0, 1] and ex["answer_scores"][1] == pytest.approx([1.0, 0.3])
    assert ex["image_id"] == [ids[q["img_id"]] for q in questions]


def test_lxmert_data_trains_with_imp(lxmert_vqa):
    root, tsv, *_ = lxmert_vqa
    out = root / "data"
    run_import("lxmert", "vqa", out, {"train": [root / "minival.json"], "test": [root / "minival.json"]}, [tsv],
               root / "ans2label.json")
    res = ltvl("imp", "--data", out, "--layers", "1", "--steps", "2", "--batch-size", "4", "--target", "0.5",
               "--root", root / "chains")
    assert res.returncode == 0, res.stderr


def test_lxmert_bad_inputs_are_named(lxmert_vqa):
    root, tsv, images, _ = lxmert_vqa
    q, ans = {"train": [root / "minival.json"]}, root / "ans2label.json"
    lines = tsv.read_text().splitlines(keepends=True)
    tsv.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # truncated mid-line
    with pytest.raises(LtvlError, match=r"val2014_obj36.tsv:2.*(fields|decode)"):
        run_import("lxmert", "vqa", root / "o1", q, [tsv], ans)
    rng = np.random.default_rng(4)
    wide = {**images, "COCO_val2014_000000000002": P.lxmert_image(rng, 36, d=P.D * 2)}
    P.lxmert_tsv(tsv, wide)
    with pytest.raises(LtvlError, match=f"has {2 * P.D}-d features, the others {P.D}-d"):
        run_import("lxmert", "vqa", root / "o2", q, [tsv], ans)
    P.lxmert_tsv(tsv, images)
    os.truncate(tsv, 10 ** 13)  # a 10 TB (sparse) file: the import cannot fit, and says so before starting
    with pytest.raises(LtvlError, match=r"the import needs about .* GB but .* free"):
        run_import("lxmert", "vqa", root / "o3", q, [tsv], ans)
    assert not any(p.name.startswith(("o1", "o2", "o3", ".o")) for p in root.iterdir())


VILT_VQA = ["image", "questions", "answers", "answer_labels", "answer_scores", "image_id", "question_id", "split"]


def test_vilt_vqa_round_trips(tmp_path):
    rng = np.random.default_rng(5)
    rows = [{"image": P.jpeg(rng), "questions": [f"q{i}a", f"q{i}b"], "answers": [["yes"], ["2", "two"]],
             "answer_labels": [[0], [3, 4]], "answer_scores": [[1.0], [0.9, 0.3]], "image_id": 400 + i,
             "question_id": [4000 + 2 * i, 4001 + 2 * i], "split": "train"} for i in range(3)]
    path = P.vilt_arrow(tmp_path / "vqav2_train.arrow", rows, VILT_VQA)
    out = tmp_path / "out"
    info = run_import("vilt", "vqa", out, {"train": [path]}, [], image_size=48)
    assert info.feat_dim == 0 and info.image_size == 48
    assert info.answers == ["yes", "<label 1>", "<label 2>", "2", "two"]
    s, ids = open_split(out, "train"), _by_name(out)
    for r in rows:
        assert s.images.encoded(ids[str(r["image_id"])]) == r["image"]  # the JPEG bytes, untouched
    assert s.images.batch([0])["pixels"].shape == (1, 3, 48, 48)  # decoded and resized in the loader
    ex = s.examples.to_pydict()
    assert ex["text"] == [q for r in rows for q in r["questions"]]
    assert ex["source_id"] == [str(x) for r in rows for x in r["question_id"]]
    assert ex["answer_ids"][1] == [3, 4] and ex["answer_scores"][1] == pytest.approx([0.9, 0.3])


def test_vilt_nlvr2_and_corrupt_file(tmp_path):
    rng = np.random.default_rng(6)
    rows = [{"image_0": P.jpeg(rng), "image_1": P.jpeg(rng), "questions": ["left has more", "both"],
             "answers": ["True", "False"], "identifier": f"dev-{i}-0"} for i in range(2)]
    path = P.vilt_arrow(tmp_path / "nlvr2_dev.arrow", rows, ["image_0", "image_1", "questions", "answers",
                                                             "identifier"])
    out = tmp_path / "out"
    run_import("vilt", "nlvr2", out, {"train": [path]}, [])
    s, ids = open_split(out, "train"), _by_name(out)
    assert s.examples["label"].to_pylist() == [1, 0, 1, 0]
    assert s.images.encoded(ids["dev-1-0-img1"]) == rows[1]["image_1"]
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(LtvlError, match=r"nlvr2_dev.arrow.*not a readable Arrow IPC file"):
        run_import("vilt", "nlvr2", tmp_path / "o2", {"train": [path]}, [])
    assert not (tmp_path / "o2").exists()


def test_region_backbone_on_images_only_data_is_refused(tmp_path):
    from ltvl.vl.assemble import VLSpec, build_vl
    from ltvl.vl.models.presets import BackboneSpec

    rng = np.random.default_rng(7)
    rows = [{"image": P.jpeg(rng), "caption": ["a", "b"], "image_id": f"{i}.jpg", "split": "train"} for i in range(2)]
    path = P.vilt_arrow(tmp_path / "f30k.arrow", rows, ["image", "caption", "image_id", "split"])
    run_import("vilt", "flickr30k", tmp_path / "out", {"train": [path], "test": [path]}, [])
    with pytest.raises(LtvlError, match=r"(?s)images only.*ViLT"):
        build_vl(VLSpec(task="flickr30k", data=str(tmp_path / "out"), backbone=BackboneSpec("tiny")))


def test_uniter_vcr_round_trips_and_builds_uniter_inputs(tmp_path):
    """VCR as train_vcr.py reads it: each example's image is its ground-truth boxes (vcr_gt_*, LMDB
    feat_numbb100, every box kept) followed by its detections (vcr_*, the confidence rule); answers
    and rationales stay word-piece ids, person tags included (81 ids past the vocabulary, which the
    model's word embeddings grow by), and become UNITER's [CLS] q [SEP] a [SEP] inputs."""
    from ltvl.vl.assemble import VLSpec, build_vl
    from ltvl.vl.data.tokens import tokenizer_fingerprint
    from ltvl.vl.models.presets import BackboneSpec, load_tokenizer

    rng = np.random.default_rng(8)
    gt = {f"vcr_gt_train_movie_{i}.npz": P.uniter_image(rng, 14, conf=(0, 0.1)) for i in range(2)}
    det = {f"vcr_train_movie_{i}.npz": P.uniter_image(rng, 11) for i in range(2)}
    gt_db = P.uniter_img_db(tmp_path / "vcr_gt_train", gt, db="numbb")
    det_db = P.uniter_img_db(tmp_path / "vcr_train", det, {n: 11 for n in det})
    tok = load_tokenizer(BackboneSpec("tiny"))
    vocab = tokenizer_fingerprint(tok)["vocab_size"]
    person = vocab + 80  # the last of VCR's 81 person tags
    records = {f"train-{k}": {"input_ids": [10 + k, person], "input_ids_as": [[20 + j] for j in range(4)],
                              "input_ids_rs": [[30 + j, 31] for j in range(4)], "qa_target": k % 4,
                              "qar_target": (k + 1) % 4,
                              "img_fname": [f"vcr_gt_train_movie_{k % 2}.npz", f"vcr_train_movie_{k % 2}.npz"]}
               for k in range(4)}
    meta = {**META, "bert": "tiny's", "v_range": [999, vocab]}
    txt = P.uniter_txt_db(tmp_path / "txt", records, meta, id2len="id2len_qar.json")
    out = tmp_path / "out"
    info = run_import("uniter", "vcr", out, {"train": [txt], "test": [txt]}, [gt_db, det_db])
    assert info.tokenizer["extra_tokens"] == 81 and info.tokenizer["vocab_size"] == vocab
    s, ids = open_split(out, "train"), _by_name(out)
    pair = "vcr_gt_train_movie_1.npz|vcr_train_movie_1.npz"
    assert s.images.num_regions[ids[pair]] == 14 + 11  # the ground truth whole, though no box clears conf 0.2
    assert np.array_equal(s.images.features(ids[pair]), np.concatenate(
        [gt["vcr_gt_train_movie_1.npz"]["features"], det["vcr_train_movie_1.npz"]["features"]]).astype(np.float16))
    ex = s.examples.to_pydict()
    assert ex["answers"][1] == [[20], [21], [22], [23]] and ex["rationale_label"] == [1, 2, 3, 0]
    setup = build_vl(VLSpec(task="vcr", data=str(out), backbone=BackboneSpec("tiny"), max_len=8))
    data = setup.data
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    assert data.train_prep["qa_ids"][1, 2].tolist() == [cls, 11, person, sep, 22, sep, pad, pad]
    # QA->R: question, the right answer (qa_target 1 -> 21), then the rationale
    assert data.train_prep["qar_ids"][1, 0].tolist() == [cls, 11, person, sep, 21, sep, 30, sep]
    model = setup.model_factory()
    assert model.backbone.word_embeddings().num_embeddings == vocab + 81
    model(data.batch(0, 2, 0))  # the person tags index real rows
    bad = {**records, "train-9": {**records["train-0"], "input_ids": [vocab + 81]}}
    txt2 = P.uniter_txt_db(tmp_path / "txt2", bad, meta, id2len="id2len_qar.json")
    with pytest.raises(LtvlError, match=r"'train-9': word-piece id \d+ is outside the .*-token vocabulary \+ 81"):
        run_import("uniter", "vcr", tmp_path / "o2", {"train": [txt2]}, [gt_db, det_db])
