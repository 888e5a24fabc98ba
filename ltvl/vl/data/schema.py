"""Declared Arrow schemas: the images table (shared by all tasks) and each task's examples table.

A dataset directory looks like::

    DIR/dataset.json            task, answer vocabulary, feature dim, regions, image size, source
    DIR/<split>/images.parquet  image_id, features (R*D float16), boxes (R*7 float32), num_regions,
                                pixels (H*W*3 uint8, optional: needed by ViLT)
    DIR/<split>/examples.parquet  task-specific columns (TASK_COLUMNS)

Boxes are UNITER's 7-d [x1, y1, x2, y2, w, h, w*h], normalised to [0, 1].
"""

from __future__ import annotations

import pyarrow as pa

from ltvl.util.errors import LtvlError

BOX_DIM = 7

IMAGE_COLUMNS: dict[str, pa.DataType] = {
    "image_id": pa.int64(),
    "features": pa.list_(pa.float16()),
    "boxes": pa.list_(pa.float32()),
    "num_regions": pa.int32(),
}
OPTIONAL_IMAGE_COLUMNS: dict[str, pa.DataType] = {"pixels": pa.list_(pa.uint8()), "region_labels": pa.list_(pa.int32())}

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


def check_columns(schema: pa.Schema, expected: dict[str, pa.DataType], where: str,
                  optional: dict[str, pa.DataType] | None = None) -> None:
    """Raise naming the first missing or mistyped column."""
    for name, typ in expected.items():
        if name not in schema.names:
            raise LtvlError(f"missing column '{name}' (expected {typ}); has {schema.names}", where=where,
                            fix="see README 'Data format' for each task's columns")
        if not schema.field(name).type.equals(typ):
            raise LtvlError(f"column '{name}' has type {schema.field(name).type}, expected {typ}", where=where,
                            fix=f"cast it: table.set_column(i, '{name}', table['{name}'].cast(pa.{typ}))")
    for name, typ in (optional or {}).items():
        if name in schema.names and not schema.field(name).type.equals(typ):
            raise LtvlError(f"column '{name}' has type {schema.field(name).type}, expected {typ}", where=where)


def check_examples(schema: pa.Schema, task: str, where: str) -> None:
    if task not in TASK_COLUMNS:
        raise LtvlError(f"unknown task {task!r}", where=where, fix=f"one of {sorted(TASK_COLUMNS)}")
    check_columns(schema, TASK_COLUMNS[task], where)


def grid_boxes(rows: int, cols: int) -> list[list[float]]:
    """7-d boxes of a rows x cols grid over the unit square (region = patch)."""
    out = []
    for r in range(rows):
        for c in range(cols):
            x1, y1, x2, y2 = c / cols, r / rows, (c + 1) / cols, (r + 1) / rows
            out.append([x1, y1, x2, y2, x2 - x1, y2 - y1, (x2 - x1) * (y2 - y1)])
    return out
