"""ViLT's published data (dandelin/ViLT ``vilt/utils/write_*.py``): Arrow IPC files, one row per
image with its encoded bytes and all its texts.

VQA v2 (``vqav2_*.arrow``): ``image, questions, answers, answer_labels, answer_scores, image_id,
question_id, split`` (per image: lists of questions; per question: lists of answers, labels and
scores). GQA: the same with one answer (``answers``: list of str, ``answer_label``/``answer_labels``).
NLVR2: ``image_0, image_1, questions, answers ("True"/"False"), identifier``. Flickr30k/COCO
captions: ``image, caption, image_id, split``. ViLT has no region features: the dataset holds
images only (``feat_dim`` 0), for the ViLT backbones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from ltvl.util.errors import LtvlError
from ltvl.vl.data.importers.common import Examples, Region
from ltvl.vl.data.schema import SOURCE_ID

TASKS = ("vqa", "gqa", "nlvr2", "flickr30k")
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


def read(task: str, files: list[Path], label2ans: dict[int, str]) -> Iterator[tuple[Examples, list[Region]]]:
    """Per record batch: its examples and its images (encoded bytes), so memory stays bounded.
    ``label2ans`` collects the answer vocabulary the files imply (ViLT stores labels and strings)."""
    for path in files:
        for batch in _batches(path):
            yield _batch(task, batch, path, label2ans)


def _batch(task: str, batch: pa.RecordBatch, path: Path, label2ans: dict[int, str]):
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
          ("image", "questions", "answers", "question_id", "image_id"), path)
    rows = batch.to_pydict()
    for k in range(batch.num_rows):
        name = str(rows["image_id"][k])
        images.append(Region(name, *_EMPTY, encoded=rows["image"][k]))
        if task == "flickr30k":
            for j, cap in enumerate(rows["caption"][k]):
                out.add(**{SOURCE_ID: f"{name}-{j}", "image": name, "text": cap})
            continue
        labels = rows.get("answer_labels", rows.get("answer_label"))
        for j, q in enumerate(rows["questions"][k]):
            ans, lab = rows["answers"][k][j], labels[k][j]
            if task == "vqa":
                for a, label in zip(ans, lab):
                    label2ans[int(label)] = a
                out.add(**{SOURCE_ID: rows["question_id"][k][j], "image": name, "text": q,
                           "answer_ids": [int(x) for x in lab],
                           "answer_scores": [float(x) for x in rows["answer_scores"][k][j]]})
            else:
                label2ans[int(lab)] = ans
                out.add(**{SOURCE_ID: rows["question_id"][k][j], "image": name, "text": q, "label": int(lab)})
    return out, images
