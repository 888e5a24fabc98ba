"""ViLT's published data (dandelin/ViLT ``vilt/utils/write_*.py``): Arrow IPC files, one row per
image with its encoded bytes and all its texts.

VQA v2 (``vqav2_*.arrow``): ``image, questions, answers, answer_labels, answer_scores, image_id,
question_id, split`` (per image: lists of questions; per question: lists of answers, labels and
scores). The test and test-dev files are written with ``answers``/``answer_labels``/``answer_scores``
empty lists per image (``write_vqa.py``): an unlabelled split. NLVR2: ``image_0, image_1,
questions, answers ("True"/"False"), identifier``. Flickr30k/COCO captions: ``image, caption,
image_id, split``; their reader (``BaseDataset``, ``remove_duplicate=True``) drops an image's
repeated captions, and so does this importer (counted in the import log). ViLT publishes no GQA
files (there is no ``write_gqa.py``): GQA imports from LXMERT's. ViLT has no region features: the
dataset holds images only (``feat_dim`` 0), for the ViLT backbones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from ltvl.util.errors import LtvlError
from ltvl.vl.data.importers.common import Examples, Region
from ltvl.vl.data.schema import SOURCE_ID

TASKS = ("vqa", "nlvr2", "flickr30k")
_EMPTY = np.zeros((0, 0), np.float16), np.zeros((0, 7), np.float32)


def _batches(path: Path) -> Iterator[pa.RecordBatch]:
    try:
        reader = pa.ipc.open_file(pa.memory_map(str(path)))
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
    except (pa.ArrowInvalid, OSError) as e:
        raise LtvlError(f"not a readable Arrow IPC file ({e})", where=str(path),
                        fix="the file is truncated or corrupt: download or copy it again") from e


def _need(batch: pa.RecordBatch, columns: tuple[str, ...], path: Path) -> None:
    missing = [c for c in columns if c not in batch.schema.names]
    if missing:
        raise LtvlError(f"missing column {missing[0]!r}; has {batch.schema.names}", where=str(path),
                        fix="is this ViLT's Arrow file for the task given with --task?")


def read(task: str, files: list[Path], label2ans: dict[int, str],
         split: Examples) -> Iterator[tuple[Examples, list[Region]]]:
    """Per record batch: its examples and its images (encoded bytes), so memory stays bounded.
    ``label2ans`` collects the answer vocabulary the files imply (ViLT stores labels and strings);
    ``split`` gathers what is true of the whole split (unlabelled, the import log)."""
    counts = {"labelled": 0, "unlabelled": 0, "duplicates": 0}
    for path in files:
        for batch in _batches(path):
            yield _batch(task, batch, path, label2ans, counts)
    if counts["labelled"] and counts["unlabelled"]:
        raise LtvlError(f"{counts['labelled']} images have answers and {counts['unlabelled']} do not: a split is "
                        "either labelled or published without labels", where=", ".join(map(str, files)),
                        fix="import vqav2_test*.arrow as a split of its own")
    split.unlabelled = counts["unlabelled"] > 0
    if counts["duplicates"]:
        split.log.append(f"{counts['duplicates']} repeated caption(s) of an image dropped, as ViLT's reader does")


def _batch(task: str, batch: pa.RecordBatch, path: Path, label2ans: dict[int, str], counts: dict):
    out, images = Examples(task), []
    if task == "nlvr2":
        _need(batch, ("image_0", "image_1", "questions", "answers", "identifier"), path)
        rows = batch.to_pydict()
        for k in range(batch.num_rows):
            ident = rows["identifier"][k]
            names = (f"{ident}-img0", f"{ident}-img1")
            for name, col in zip(names, ("image_0", "image_1")):
                images.append(Region(name, *_EMPTY, encoded=rows[col][k]))
            for j, (q, a) in enumerate(zip(rows["questions"][k], rows["answers"][k])):
                out.add(**{SOURCE_ID: f"{ident}-{j}", "image": names[0], "image_2": names[1], "text": q,
                           "label": int(str(a).lower() == "true")})
        return out, images
    _need(batch, ("image", "caption", "image_id") if task == "flickr30k" else
          ("image", "questions", "answers", "answer_labels", "answer_scores", "question_id", "image_id"), path)
    rows = batch.to_pydict()
    for k in range(batch.num_rows):
        name = str(rows["image_id"][k])
        images.append(Region(name, *_EMPTY, encoded=rows["image"][k]))
        if task == "flickr30k":
            captions = list(dict.fromkeys(rows["caption"][k]))  # ViLT's reader: each caption once
            counts["duplicates"] += len(rows["caption"][k]) - len(captions)
            for j, cap in enumerate(captions):
                out.add(**{SOURCE_ID: f"{name}-{j}", "image": name, "text": cap})
            continue
        questions = rows["questions"][k]
        if questions and not rows["answers"][k]:  # write_vqa.py's test files: no answers at all
            counts["unlabelled"] += 1
            for j, q in enumerate(questions):
                out.add(**{SOURCE_ID: rows["question_id"][k][j], "image": name, "text": q, "answer_ids": [],
                           "answer_scores": []})
            continue
        counts["labelled"] += 1
        for j, q in enumerate(questions):
            ans, lab = rows["answers"][k][j], rows["answer_labels"][k][j]
            for a, label in zip(ans, lab):
                label2ans[int(label)] = a
            out.add(**{SOURCE_ID: rows["question_id"][k][j], "image": name, "text": q,
                       "answer_ids": [int(x) for x in lab],
                       "answer_scores": [float(x) for x in rows["answer_scores"][k][j]]})
    return out, images
