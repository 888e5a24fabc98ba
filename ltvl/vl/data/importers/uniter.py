"""UNITER's published data (ChenRocks/UNITER ``data/data.py``): an LMDB ``img_db`` of Faster R-CNN
regions per image and an LMDB ``txt_db`` of word-piece ids and labels per example.

img_db directory: ``feat_th{conf}_max{max}_min{min}[_compressed]/`` (LMDB; values are msgpack
dicts of numpy arrays, or ``.npz`` bytes when compressed) and ``nbb_th…json`` (boxes kept per
image). Arrays: ``features`` (n, 2048) fp16, ``norm_bb`` (n, 6) = [x1, y1, x2, y2, w, h]
normalised (the 7th box dim, w*h, is added here as UNITER does at load), ``conf`` (n,),
``soft_labels`` (n, 1601) detector class scores (their argmax becomes ``region_labels``).

txt_db directory: LMDB of lz4-framed msgpack records keyed by example id, with ``meta.json``
(CLS/SEP/MASK ids, ``v_range``, the tokenizer name), ``id2len.json`` (the example ids),
``txt2img.json``; RefCOCO+ adds ``images.json`` (each image's annotation ids, in region order);
VCR's records hold ``input_ids_as``/``input_ids_rs`` (4 answers, 4 rationales), ``qa_target``,
``qar_target`` and a pair of image names (ground-truth boxes, detections), ids in
``id2len_qar.json``.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ltvl.util.errors import LtvlError
from ltvl.vl.data.importers.common import Examples, Region
from ltvl.vl.data.schema import SOURCE_ID

TASKS = ("vqa", "snli_ve", "nlvr2", "vcr", "refcoco_plus", "flickr30k")
CONF_TH, MAX_BB, MIN_BB = 0.2, 100, 10  # UNITER's defaults


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


def compute_num_bb(conf: np.ndarray) -> int:
    """UNITER's rule when no nbb json is published: boxes above the confidence threshold, in [min, max]."""
    return int(min(MAX_BB, max(MIN_BB, int((conf > CONF_TH).sum()))))


class ImgDb:
    """One UNITER img_db: regions by file name."""

    def __init__(self, img_db: Path):
        self.dir = _lmdb_dir(img_db)
        self.compressed = self.dir.name.endswith("compressed")
        suffix = self.dir.name.removeprefix("feat_").removesuffix("_compressed")
        nbb = self.dir.parent / f"nbb_{suffix}.json"
        self.name2nbb = json.loads(nbb.read_text()) if nbb.exists() else None
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
            nbb = self.name2nbb[name] if self.name2nbb is not None else compute_num_bb(arrays["conf"])
            feats, bb = arrays["features"][:nbb], np.asarray(arrays["norm_bb"][:nbb], np.float32)
        except KeyError as e:
            raise LtvlError(f"record {name!r} lacks {e.args[0]!r}", where=str(self.dir),
                            fix="expected UNITER img_db records with features, norm_bb, conf") from e
        boxes = np.concatenate([bb[:, :6], (bb[:, 4] * bb[:, 5])[:, None]], axis=1)
        labels = None
        if "soft_labels" in arrays:
            labels = np.asarray(arrays["soft_labels"][:nbb]).argmax(1).astype(np.int32)
        return Region(name, np.asarray(feats, np.float16), boxes, labels)

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


def regions(img_dbs: list[ImgDb], names: list[str]) -> Iterator[Region]:
    """Each named image from the first img_db that holds it. VCR names a pair ``gt|det``: its
    ground-truth boxes followed by its detections, concatenated as UNITER does."""
    for name in names:
        parts = [_find(img_dbs, n) for n in name.split("|")]
        if any(p is None for p in parts):
            continue
        if len(parts) == 1:
            yield parts[0]
            continue
        labels = [p.labels for p in parts]
        yield Region(name, np.concatenate([p.features for p in parts]), np.concatenate([p.boxes for p in parts]),
                     None if any(x is None for x in labels) else np.concatenate(labels))


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
        info = {"name": self.meta.get("bert", "unknown"), "cls": self.meta.get("CLS"), "sep": self.meta.get("SEP")}
        if self.meta.get("v_range"):
            info["vocab_size"] = int(self.meta["v_range"][1])
        if vocab is not None:
            from ltvl.vl.data.tokens import vocab_sha256

            tokens = vocab.read_text().splitlines()
            info.update(vocab_size=len(tokens), vocab_sha256=vocab_sha256(tokens))
        return info


def examples(task: str, txt: TxtDb, answers: dict[str, int] | None) -> Examples:
    """The txt_db's examples as ltvl columns; RefCOCO+'s target is the region of its annotation."""
    out = Examples(task)
    images = None
    if task == "refcoco_plus":
        images = {int(im["id"]): im for im in json.loads((txt.dir / "images.json").read_text())}
    for id_, ex in txt:
        try:
            row = {SOURCE_ID: id_, "text": [int(t) for t in ex["input_ids"]]}
            if task == "vqa":
                target = ex.get("target") or {"labels": [], "scores": []}
                row.update(image=ex["img_fname"], answer_ids=list(target["labels"]),
                           answer_scores=[float(s) for s in target["scores"]])
            elif task == "snli_ve":
                t = ex["target"]
                row.update(image=ex["img_fname"], label=int(t["labels"][int(np.argmax(t["scores"]))]))
            elif task == "nlvr2":
                row.update(image=ex["img_fname"][0], image_2=ex["img_fname"][1], label=int(ex["target"]))
            elif task == "vcr":  # img_fname = [ground-truth boxes' img_db name, detections' img_db name]
                row.update(image="|".join(ex["img_fname"]), answers=[list(a) for a in ex["input_ids_as"]],
                           rationales=[list(r) for r in ex["input_ids_rs"]], answer_label=int(ex["qa_target"]),
                           rationale_label=int(ex["qar_target"]))
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
    if task == "vqa" and answers is not None:
        bad = [a for row in out.rows["answer_ids"] for a in row if not 0 <= a < len(answers)]
        if bad:
            raise LtvlError(f"answer label {bad[0]} is outside the {len(answers)}-answer vocabulary", where="--answers")
    return out
