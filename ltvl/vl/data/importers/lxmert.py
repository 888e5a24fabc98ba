"""LXMERT's published data (airsplay/lxmert ``src/utils.py``): Faster R-CNN regions in TSV files
and questions in JSON.

TSV: one image per line, tab-separated ``img_id, img_h, img_w, objects_id, objects_conf,
attrs_id, attrs_conf, num_boxes, boxes, features``; the arrays are base64 of float32 (int64
for ids): ``boxes`` (n, 4) pixel [x1, y1, x2, y2], ``features`` (n, D). Questions:
VQA/GQA ``[{"img_id", "sent", "question_id", "label": {answer: score}}]`` with an answer
vocabulary ``*_ans2label.json``; NLVR2 ``[{"identifier", "img0", "img1", "sent", "label"}]``.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ltvl.util.errors import LtvlError
from ltvl.vl.data.importers.common import Examples, Region, norm_boxes
from ltvl.vl.data.schema import SOURCE_ID

TASKS = ("vqa", "gqa", "nlvr2")
REGION_CLASSES = 1600  # Visual Genome objects, 0-based, background excluded (the detector's 1,601 minus it)
FIELDS = ["img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf", "num_boxes", "boxes",
          "features"]


def regions(tsv_files: list[Path]) -> Iterator[Region]:
    """Stream every image of the TSV files (one line at a time: bounded memory)."""
    csv.field_size_limit(sys.maxsize)
    for path in tsv_files:
        with open(path, newline="") as f:
            for line_no, row in enumerate(csv.reader(f, delimiter="\t"), 1):
                yield _region(row, f"{path}:{line_no}")


def _region(row: list[str], where: str) -> Region:
    if len(row) != len(FIELDS):
        raise LtvlError(f"line has {len(row)} fields, LXMERT's TSV has {len(FIELDS)}", where=where,
                        fix="the file is truncated or not an LXMERT feature TSV")
    item = dict(zip(FIELDS, row))
    try:
        n, h, w = int(item["num_boxes"]), float(item["img_h"]), float(item["img_w"])
        boxes = np.frombuffer(base64.b64decode(item["boxes"], validate=True), np.float32)
        feats = np.frombuffer(base64.b64decode(item["features"], validate=True), np.float32)
        labels = np.frombuffer(base64.b64decode(item["objects_id"], validate=True), np.int64)
    except (ValueError, binascii.Error) as e:
        raise LtvlError(f"cannot decode image {item['img_id']!r} ({e})", where=where,
                        fix="the file is truncated or corrupt") from e
    if boxes.size != n * 4 or n == 0 or feats.size % n or labels.size != n:
        raise LtvlError(f"image {item['img_id']!r}: {boxes.size} box values, {feats.size} feature values and "
                        f"{labels.size} object ids do not fit num_boxes={n}", where=where,
                        fix="the file is truncated or corrupt")
    return Region(item["img_id"], feats.reshape(n, -1).astype(np.float16), norm_boxes(boxes, w, h),
                  labels.astype(np.int32))


def examples(task: str, files: list[Path], answers: dict[str, int] | None) -> Examples:
    """LXMERT's question files, read as ``src/tasks/*_data.py`` reads them: a VQA answer outside
    the vocabulary is an error (vqa_data.py indexes ans2label and raises), a GQA one is skipped
    and counted (gqa_data.py skips it; a question left with no known answer is kept with label -1:
    left out of training, scored wrong). Questions with no ``label`` make an unlabelled split
    (VQA test, GQA submit/challenge)."""
    out = Examples(task)
    labelled = [0, 0]
    skipped, emptied = 0, 0
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise LtvlError(f"not a JSON question file ({e})", where=str(path)) from e
        if not isinstance(data, list):
            raise LtvlError(f"holds a {type(data).__name__}, LXMERT's question files hold a list", where=str(path))
        for k, q in enumerate(data):
            try:
                if task == "nlvr2":
                    labelled[0 if "label" in q else 1] += 1
                    out.add(**{SOURCE_ID: q.get("uid", q["identifier"]), "image": q["img0"], "image_2": q["img1"],
                               "text": q["sent"], "label": int(q["label"]) if "label" in q else -1})
                    continue
                has = "label" in q
                labelled[0 if has else 1] += 1
                label = q["label"] if has else {}
                unknown = [a for a in label if a not in answers]
                if unknown and task == "vqa":
                    raise LtvlError(f"question {q['question_id']}: answer {unknown[0]!r} is not in the answer "
                                    "vocabulary (LXMERT's vqa_data.py fails on it too)", where=f"{path}[{k}]",
                                    fix="pass the ans2label JSON the questions were written with "
                                        "(LXMERT: data/vqa/trainval_ans2label.json)")
                skipped += len(unknown)
                kept = [(answers[a], float(s)) for a, s in label.items() if a in answers]
                emptied += bool(has and label and not kept)
                row = {SOURCE_ID: q["question_id"], "image": q["img_id"], "text": q["sent"]}
                if task == "vqa":
                    row.update(answer_ids=[a for a, _ in kept], answer_scores=[s for _, s in kept])
                else:
                    row.update(label=max(kept, key=lambda x: x[1])[0] if kept else -1)
                out.add(**row)
            except (KeyError, TypeError, AttributeError) as e:
                raise LtvlError(f"question lacks {e!r}", where=f"{path}[{k}]",
                                fix=f"is this LXMERT's {task} question file?") from e
    if all(labelled):
        raise LtvlError(f"{labelled[0]} questions have a label and {labelled[1]} do not: a split is either "
                        "labelled or published without labels", where=", ".join(map(str, files)),
                        fix="import the labelled and the unlabelled files as separate splits")
    out.unlabelled = labelled[0] == 0 and len(out) > 0
    if skipped:
        out.log.append(f"{skipped} answer(s) outside the vocabulary skipped, as LXMERT's gqa_data.py does; "
                       f"{emptied} question(s) kept no answer (label -1: left out of training, scored wrong)")
    return out
