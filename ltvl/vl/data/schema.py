"""Declared Arrow schemas: the images table (shared by all tasks) and each task's examples table.

A dataset directory (format 1) looks like::

    DIR/dataset.json              task, answers, feat_dim, max regions, image size, tokenizer,
                                  format, and a manifest of every file (bytes + sha256)
    DIR/<split>/images.arrow      Arrow IPC file, one row per image (IMAGE_COLUMNS)
    DIR/<split>/examples.arrow    Arrow IPC file, task-specific columns (TASK_COLUMNS)

Why Arrow IPC files, uncompressed, with 64-bit list offsets (see docs/guide/data.md):
they are read through a memory map with no decoding step, so every trial on a node shares
one copy in the page cache; ``large_list`` offsets never overflow (VQA v2 holds 9.1e9
feature values, past int32's 2^31); and each image keeps only its own regions (10-100 for
UNITER) instead of padding every image to the maximum.

Boxes are UNITER's 7-d [x1, y1, x2, y2, w, h, w*h], normalised to [0, 1]. Images for ViLT
are stored encoded (PNG/JPEG bytes) and decoded in the loader's workers.
"""

from __future__ import annotations

import pyarrow as pa

from ltvl.util.errors import LtvlError

BOX_DIM = 7

IMAGE_COLUMNS: dict[str, pa.DataType] = {
    "image_id": pa.int64(),
    "num_regions": pa.int32(),
    "features": pa.large_list(pa.float16()),  # num_regions * feat_dim values
    "boxes": pa.large_list(pa.float32()),  # num_regions * 7 values
}
OPTIONAL_IMAGE_COLUMNS: dict[str, pa.DataType] = {
    "image": pa.large_binary(),  # encoded PNG/JPEG, for ViLT
    "region_labels": pa.large_list(pa.int32()),  # one detector class per region (0-based, no background), for MRC
    "region_soft_labels": pa.large_list(pa.float16()),  # the detector's class scores per region, for MRC-kl
    "name": pa.large_string(),  # the image's name in its published files (e.g. coco_val2014_000000000042.npz)
}
# Examples imported from published files keep their own id (UNITER txt_db key, VQA question_id).
SOURCE_ID = "source_id"

_TEXT = pa.string()
TASK_COLUMNS: dict[str, dict[str, pa.DataType]] = {
    "vqa": {"qid": pa.int64(), "image_id": pa.int64(), "text": _TEXT,
            "answer_ids": pa.list_(pa.int32()), "answer_scores": pa.list_(pa.float32())},
    "gqa": {"qid": pa.int64(), "image_id": pa.int64(), "text": _TEXT, "label": pa.int32()},
    "snli_ve": {"qid": pa.int64(), "image_id": pa.int64(), "text": _TEXT, "label": pa.int32()},
    "nlvr2": {"qid": pa.int64(), "image_id": pa.int64(), "image_id_2": pa.int64(), "text": _TEXT, "label": pa.int32()},
    "vcr": {"qid": pa.int64(), "image_id": pa.int64(), "text": _TEXT, "answers": pa.list_(_TEXT),
            "rationales": pa.list_(_TEXT), "answer_label": pa.int32(), "rationale_label": pa.int32()},
    "refcoco_plus": {"qid": pa.int64(), "image_id": pa.int64(), "text": _TEXT, "target_region": pa.int32()},
    "flickr30k": {"qid": pa.int64(), "image_id": pa.int64(), "text": _TEXT},
    "pretrain": {"qid": pa.int64(), "image_id": pa.int64(), "text": _TEXT},
}
# Text imported already tokenised (UNITER's txt_db) replaces ``text`` with word-piece ids,
# without [CLS]/[SEP]; dataset.json's ``tokenizer`` says whose vocabulary they index.
TOKEN_COLUMN, TOKEN_TYPE = "input_ids", pa.list_(pa.int32())
IMAGE_ID_COLUMNS = ("image_id", "image_id_2")


def check_columns(schema: pa.Schema, expected: dict[str, pa.DataType], where: str,
                  optional: dict[str, pa.DataType] | None = None) -> None:
    """Raise naming the first missing or mistyped column."""
    for name, typ in expected.items():
        if name not in schema.names:
            raise LtvlError(f"missing column '{name}' (expected {typ}); has {schema.names}", where=where,
                            fix="see docs/guide/data.md for each task's columns")
        if not schema.field(name).type.equals(typ):
            raise LtvlError(f"column '{name}' has type {schema.field(name).type}, expected {typ}", where=where,
                            fix=f"cast it: table.set_column(i, '{name}', table['{name}'].cast(pa.{typ}))")
    for name, typ in (optional or {}).items():
        if name in schema.names and not schema.field(name).type.equals(typ):
            raise LtvlError(f"column '{name}' has type {schema.field(name).type}, expected {typ}", where=where)


def example_columns(task: str, pretokenized: bool = False) -> dict[str, pa.DataType]:
    """The examples table's columns for ``task``; pre-tokenised data carries ids instead of text."""
    if task not in TASK_COLUMNS:
        raise LtvlError(f"unknown task {task!r}", where="dataset.json task", fix=f"one of {sorted(TASK_COLUMNS)}")
    cols = dict(TASK_COLUMNS[task])
    if pretokenized:
        ids_list = pa.list_(TOKEN_TYPE)  # VCR: 4 answers / rationales, each a list of ids
        cols = {(TOKEN_COLUMN if k == "text" else k): (TOKEN_TYPE if k == "text" else ids_list if t == pa.list_(_TEXT)
                                                       else t) for k, t in cols.items()}
    return cols


def check_examples(schema: pa.Schema, task: str, where: str, pretokenized: bool = False) -> None:
    check_columns(schema, example_columns(task, pretokenized), where)


def grid_boxes(rows: int, cols: int) -> list[list[float]]:
    """7-d boxes of a rows x cols grid over the unit square (region = patch)."""
    out = []
    for r in range(rows):
        for c in range(cols):
            x1, y1, x2, y2 = c / cols, r / rows, (c + 1) / cols, (r + 1) / rows
            out.append([x1, y1, x2, y2, x2 - x1, y2 - y1, (x2 - x1) * (y2 - y1)])
    return out
