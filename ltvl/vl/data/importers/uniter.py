"""UNITER's published data (ChenRocks/UNITER ``data/data.py``): an LMDB ``img_db`` of Faster R-CNN
regions per image and an LMDB ``txt_db`` of word-piece ids and labels per example.

img_db directory (``scripts/convert_imgdir.py``): one LMDB, ``feat_th{conf}_max{max}_min{min}``
(detections, with ``nbb_th…json``: boxes kept per image), ``feat_numbb{N}`` (ground-truth boxes,
kept whole) or ``all``, each optionally ``_compressed``; values are msgpack dicts of numpy arrays,
or ``np.savez_compressed`` bytes; a ``__keys__`` entry lists the names. Arrays (float32 converted
to float16): ``features`` (n, 2048), ``norm_bb`` (n, 6) = [x1, y1, x2, y2, w, h] normalised (the
7th box dim, w*h, is added here as UNITER does at load), ``conf`` (n,), ``soft_labels`` (n, 1601):
the detector's class scores, background first.

txt_db directory: LMDB of lz4-framed msgpack records keyed by example id, with ``meta.json``
(CLS/SEP/MASK ids, ``v_range``, the tokenizer name), ``id2len.json`` (the example ids),
``txt2img.json``; RefCOCO+ adds ``images.json`` (each image's annotation ids, in region order);
VCR's records hold ``input_ids_as``/``input_ids_rs`` (4 answers, 4 rationales), ``qa_target``,
``qar_target`` and a pair of image names (ground-truth boxes, detections), ids in
``id2len_qar.json``, and ids past the vocabulary for its 81 person tags (``train_vcr.py``). Test
splits are published without labels (no ``target`` / ``qa_target``): imported as unlabelled.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ltvl.util.errors import LtvlError
from ltvl.vl.data.importers.common import Examples, Region
from ltvl.vl.data.schema import SOURCE_ID

TASKS = ("vqa", "snli_ve", "nlvr2", "vcr", "refcoco_plus", "flickr30k", "pretrain")
CONF_TH, MAX_BB, MIN_BB = 0.2, 100, 10  # UNITER's defaults (train_*.py --conf_th, --max_bb, --min_bb)
VCR_SPECIAL_TOKENS = 81  # train_vcr.py NUM_SPECIAL_TOKENS: VCR's person tags, ids past the BERT vocabulary
REGION_CLASSES = 1600  # Visual Genome objects, 0-based, background excluded (the detector's 1,601 minus it)
# the LMDB names scripts/convert_imgdir.py writes: detections by confidence, a fixed box count
# (conf_th -1: ground-truth dbs, kept whole), or every box (--keep_all)
_DB_NAME = re.compile(r"^feat_(?:th(?P<conf>[0-9.]+)_max(?P<max>\d+)_min(?P<min>\d+)|numbb(?P<num>\d+))$")


_ENVS: dict[str, object] = {}  # lmdb refuses to open one environment twice in a process


def _open_lmdb(path: Path):
    import lmdb

    key = str(path.resolve())
    try:
        if key not in _ENVS:
            _ENVS[key] = lmdb.open(key, readonly=True, lock=False, readahead=False, create=False, subdir=True)
        return _ENVS[key]
    except lmdb.Error as e:
        raise LtvlError(f"not a readable LMDB ({e})", where=str(path),
                        fix="the database is truncated or corrupt: download or copy it again") from e


def _lmdb_dir(img_db: Path) -> Path:
    """The feature LMDB inside an img_db directory (or the LMDB itself)."""
    if (img_db / "data.mdb").exists():
        return img_db
    found = sorted(p.parent for p in img_db.glob("*/data.mdb"))
    if len(found) != 1:
        raise LtvlError(f"expected one LMDB (a subdirectory with data.mdb), found {len(found)}", where=str(img_db),
                        fix="pass the img_db directory that holds feat_th0.2_max100_min10[_compressed]/")
    return found[0]


def compute_num_bb(conf: np.ndarray, conf_th: float = CONF_TH, max_bb: int = MAX_BB, min_bb: int = MIN_BB) -> int:
    """UNITER's rule (data/data.py compute_num_bb): boxes above the confidence threshold, in [min, max]."""
    return int(min(max_bb, max(min_bb, int((conf > conf_th).sum()))))


class ImgDb:
    """One UNITER img_db, read as UNITER's ``DetectFeatLmdb`` reads it: regions by file name.

    Which boxes an image keeps follows the LMDB's name, as ``convert_imgdir.py`` wrote it and the
    training scripts read it: ``feat_numbb{N}`` (ground-truth boxes, RefCOCO+'s ``re_coco_gt`` and
    VCR's ``vcr_gt_*``, read with ``conf_th -1``): every stored box, up to N; ``feat_th{c}_max{M}_min{m}``:
    the box counts of ``nbb_th…json``, else UNITER's rule with those values; ``all``: UNITER's
    rule with its defaults. ``region_labels`` are the detector's best class *excluding* the
    background (``soft_labels[:, 1:].argmax()``, 0-based over 1,600 Visual Genome objects), the
    target UNITER's MRC trains toward; ``soft`` keeps the scores for MRC-kl.
    """

    def __init__(self, img_db: Path, keep_soft: bool = False):
        self.dir = _lmdb_dir(img_db)
        self.keep_soft = keep_soft
        self.compressed = self.dir.name.endswith("_compressed")
        base = self.dir.name.removesuffix("_compressed")
        m = _DB_NAME.match(base)
        self.fixed: int | None = None
        self.rule = (CONF_TH, MAX_BB, MIN_BB)
        self.name2nbb = None
        if m and m["num"]:
            self.fixed = int(m["num"])
        elif m:
            self.rule = (float(m["conf"]), int(m["max"]), int(m["min"]))
            nbb = self.dir.parent / f"nbb_{base.removeprefix('feat_')}.json"
            self.name2nbb = json.loads(nbb.read_text()) if nbb.exists() else None
        elif base != "all":
            raise LtvlError(f"LMDB name {self.dir.name!r} is not one UNITER writes", where=str(self.dir),
                            fix="feat_th{conf}_max{max}_min{min}, feat_numbb{N} or all (scripts/convert_imgdir.py), "
                                "each optionally _compressed")
        self.env = _open_lmdb(self.dir)
        self.txn = self.env.begin(buffers=False)

    def get(self, name: str) -> Region | None:
        import lmdb

        try:
            dump = self.txn.get(name.encode("utf-8"))
        except lmdb.Error as e:
            raise LtvlError(f"reading {name!r} failed ({e})", where=str(self.dir), fix="the LMDB is corrupt") from e
        if dump is None:
            return None
        arrays = self._decode(dump, name)
        try:
            stored = len(arrays["features"])
            if self.fixed is not None:
                nbb = min(self.fixed, stored)
            elif self.name2nbb is not None:
                nbb = self.name2nbb[name]
            else:
                nbb = compute_num_bb(np.asarray(arrays["conf"], np.float32), *self.rule)
            feats, bb = arrays["features"][:nbb], np.asarray(arrays["norm_bb"][:nbb], np.float32)
        except KeyError as e:
            raise LtvlError(f"record {name!r} lacks {e.args[0]!r}", where=str(self.dir),
                            fix="expected UNITER img_db records with features, norm_bb (and conf)") from e
        if bb.ndim != 2 or bb.shape[1] != 6:
            raise LtvlError(f"record {name!r}: norm_bb has shape {list(bb.shape)}, UNITER's is (n, 6)",
                            where=str(self.dir), fix="expected [x1, y1, x2, y2, w, h] per box")
        boxes = np.concatenate([bb, (bb[:, 4] * bb[:, 5])[:, None]], axis=1)
        labels, soft = None, None
        if "soft_labels" in arrays:
            sl = np.asarray(arrays["soft_labels"][:nbb], np.float32)
            labels = sl[:, 1:].argmax(1).astype(np.int32)  # background (column 0) is never a target
            soft = sl if self.keep_soft else None
        return Region(name, np.asarray(feats, np.float16), boxes, labels, soft=soft)

    def _decode(self, dump: bytes, name: str) -> dict:
        import msgpack
        import msgpack_numpy

        try:
            if self.compressed:
                with np.load(io.BytesIO(dump), allow_pickle=False) as npz:  # never unpickle published data
                    return {k: npz[k] for k in npz.files}
            return msgpack.loads(dump, raw=False, object_hook=msgpack_numpy.decode)
        except (ValueError, zipfile.BadZipFile, msgpack.ExtraData, msgpack.FormatError, EOFError) as e:
            raise LtvlError(f"record {name!r} is not a valid {'npz' if self.compressed else 'msgpack'} dump ({e})",
                            where=str(self.dir), fix="the LMDB is corrupt: download or copy it again") from e


def regions(img_dbs: list[ImgDb], names: list[str], regions_of: dict[str, int] | None = None) -> Iterator[Region]:
    """Each named image from the first img_db that holds it. VCR names a pair ``gt|det``: its
    ground-truth boxes followed by its detections, concatenated as UNITER does. ``regions_of``
    (RefCOCO+) is how many regions an image must have: UNITER asserts one per annotation."""
    for name in names:
        parts = [_find(img_dbs, n) for n in name.split("|")]
        if any(p is None for p in parts):
            continue
        if len(parts) == 1:
            region = parts[0]
        else:
            labels, soft = [p.labels for p in parts], [p.soft for p in parts]
            region = Region(name, np.concatenate([p.features for p in parts]),
                            np.concatenate([p.boxes for p in parts]),
                            None if any(x is None for x in labels) else np.concatenate(labels),
                            soft=None if any(x is None for x in soft) else np.concatenate(soft))
        if regions_of is not None and len(region.features) != regions_of[name]:
            raise LtvlError(f"image {name!r} has {len(region.features)} regions in the img_db but "
                            f"{regions_of[name]} annotations in images.json", where="--features",
                            fix="RefCOCO+ targets index ground-truth boxes: pass UNITER's ground-truth img_db "
                                "(re_coco_gt, LMDB feat_numbb100), as train_re.py reads it")
        yield region


def _find(img_dbs: list[ImgDb], name: str) -> Region | None:
    for db in img_dbs:
        r = db.get(name)
        if r is not None:
            return r
    return None


class TxtDb:
    def __init__(self, path: Path):
        self.dir = path
        try:
            self.meta = json.loads((path / "meta.json").read_text())
            id2len = path / "id2len.json" if (path / "id2len.json").exists() else path / "id2len_qar.json"  # VCR
            self.ids = list(json.loads(id2len.read_text()))
        except (OSError, ValueError) as e:
            raise LtvlError(f"not a UNITER txt_db ({e})", where=str(path),
                            fix="a txt_db directory holds data.mdb, meta.json, id2len.json, txt2img.json") from e
        self.env = _open_lmdb(path)
        self.txn = self.env.begin(buffers=False)

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        import lmdb
        import lz4.frame
        import msgpack

        for id_ in self.ids:
            try:
                raw = self.txn.get(id_.encode("utf-8"))
                if raw is None:
                    raise LtvlError(f"example {id_!r} is listed in id2len.json but not in the LMDB",
                                    where=str(self.dir), fix="the txt_db is incomplete: download it again")
                yield id_, msgpack.loads(lz4.frame.decompress(raw), raw=False)
            except (lmdb.Error, RuntimeError, ValueError, msgpack.ExtraData) as e:
                raise LtvlError(f"example {id_!r} cannot be read ({e})", where=str(self.dir),
                                fix="the txt_db is corrupt: download it again") from e

    def tokenizer(self, vocab: Path | None) -> dict:
        """Whose word pieces the ids are: the published dbs name it under ``bert``, prepro.py's under
        ``toker`` (and ``tokenizer``)."""
        name = next((self.meta[k] for k in ("bert", "toker", "tokenizer") if isinstance(self.meta.get(k), str)),
                    "unknown")
        info = {"name": name, "cls": self.meta.get("CLS"), "sep": self.meta.get("SEP")}
        if self.meta.get("v_range"):
            info["vocab_size"] = int(self.meta["v_range"][1])
        if vocab is not None:
            from ltvl.vl.data.tokens import vocab_sha256

            tokens = vocab.read_text().splitlines()
            info.update(vocab_size=len(tokens), vocab_sha256=vocab_sha256(tokens))
        return info


# the record key that holds a split's labels, per task: a split whose records lack it was published
# unlabelled (VQA test, VCR test); refcoco_plus's target is its annotation, captions have none
LABEL_KEY = {"vqa": "target", "snli_ve": "target", "nlvr2": "target", "vcr": "qa_target"}


def examples(task: str, txt: TxtDb, answers: dict[str, int] | None) -> Examples:
    """The txt_db's examples as ltvl columns; RefCOCO+'s target is the region of its annotation.
    ``out.unlabelled`` says the split was published without labels (they are filled with -1)."""
    out = Examples(task)
    images = None
    key = LABEL_KEY.get(task)
    labelled = [0, 0]  # records with / without the label key
    if task == "refcoco_plus":
        images = {int(im["id"]): im for im in json.loads((txt.dir / "images.json").read_text())}
    for id_, ex in txt:
        has = key is None or key in ex
        labelled[0 if has else 1] += 1
        try:
            row = {SOURCE_ID: id_, "text": [int(t) for t in ex["input_ids"]]}
            if task == "vqa":
                target = ex["target"] if has else {"labels": [], "scores": []}
                row.update(image=ex["img_fname"], answer_ids=list(target["labels"]),
                           answer_scores=[float(s) for s in target["scores"]])
            elif task == "snli_ve":
                t = ex.get("target")
                row.update(image=ex["img_fname"], label=int(t["labels"][int(np.argmax(t["scores"]))]) if has else -1)
            elif task == "nlvr2":
                row.update(image=ex["img_fname"][0], image_2=ex["img_fname"][1],
                           label=int(ex["target"]) if has else -1)
            elif task == "vcr":  # img_fname = [ground-truth boxes' img_db name, detections' img_db name]
                row.update(image="|".join(ex["img_fname"]), answers=[list(a) for a in ex["input_ids_as"]],
                           rationales=[list(r) for r in ex["input_ids_rs"]],
                           answer_label=int(ex["qa_target"]) if has else -1,
                           rationale_label=int(ex["qar_target"]) if has else -1)
            elif task == "refcoco_plus":
                image_id = int(ex["image_id"])
                row.update(image=f"visual_grounding_coco_gt_{image_id:012}.npz",
                           target_region=images[image_id]["ann_ids"].index(ex["ann_id"]))
            else:
                row.update(image=ex["img_fname"])
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise LtvlError(f"example {id_!r} lacks a field {task} needs ({e!r})", where=str(txt.dir),
                            fix=f"is this a {task} txt_db?") from e
        out.add(**row)
    if all(labelled):
        raise LtvlError(f"{labelled[0]} examples have {key!r} and {labelled[1]} do not: a split is either "
                        "labelled or published without labels", where=str(txt.dir),
                        fix="import the labelled and the unlabelled files as separate splits")
    out.unlabelled = labelled[0] == 0 and key is not None and len(out) > 0
    if task == "vqa" and answers is not None:
        bad = [a for row in out.rows["answer_ids"] for a in row if not 0 <= a < len(answers)]
        if bad:
            raise LtvlError(f"answer label {bad[0]} is outside the {len(answers)}-answer vocabulary", where="--answers")
    return out


def check_token_ids(examples: Examples, vocab_size: int | None, extra: int, where: str) -> None:
    """Every word-piece id indexes the vocabulary (plus the task's extra tokens, VCR's person tags)."""
    if not vocab_size:
        return
    limit = vocab_size + extra
    for key in ("text", "answers", "rationales"):
        for k, row in enumerate(examples.rows.get(key, [])):
            ids = row if key == "text" else [t for part in row for t in part]
            if ids and (max(ids) >= limit or min(ids) < 0):
                bad = max(ids) if max(ids) >= limit else min(ids)
                raise LtvlError(f"example {examples.rows[SOURCE_ID][k]!r}: word-piece id {bad} is outside the "
                                f"{vocab_size:,}-token vocabulary" + (f" + {extra} extra tokens" if extra else ""),
                                where=where, fix="is the txt_db's meta.json (v_range) the one it was built with?")
