"""Synthetic datasets for every task, in the same Arrow schema as real data.

An image is a 3x3 grid of coloured cells (8 colours). Region features are a noisy one-hot
colour code, boxes are the grid cells, pixels are the rendered 24x24 image, and region
labels are the colours (for MRC). Every label depends on *both* modalities — the text
names a colour or a count, the image decides the answer — so a test can assert learning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from ltvl.util.errors import LtvlError
from ltvl.vl.data.schema import grid_boxes
from ltvl.vl.data.store import DatasetInfo, image_table, save_split

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
RGB = np.array(
    [
        [220, 30, 30],
        [30, 180, 30],
        [30, 30, 220],
        [230, 220, 40],
        [140, 40, 160],
        [250, 140, 20],
        [15, 15, 15],
        [245, 245, 245],
    ],
    dtype=np.float32,
)
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
GRID, CELL = 3, 8
R, K, D = GRID * GRID, len(COLOURS), 16
SIZE = GRID * CELL


def _images(colours: np.ndarray, rng: np.random.Generator, offset: int = 0) -> pa.Table:
    n = len(colours)
    feats = rng.normal(0.0, 0.3, (n, R, D)).astype(np.float32)
    feats[np.arange(n)[:, None], np.arange(R)[None, :], colours] += 2.0
    boxes = np.broadcast_to(np.array(grid_boxes(GRID, GRID), np.float32), (n, R, 7))
    cells = RGB[colours] + rng.normal(0, 10, (n, R, 3))
    pix = cells.reshape(n, GRID, GRID, 3).repeat(CELL, 1).repeat(CELL, 2)
    return image_table(np.arange(offset, offset + n), feats, boxes, np.clip(pix, 0, 255).astype(np.uint8), colours)


def _random_colours(n: int, rng, exclude: int | None = None) -> np.ndarray:
    c = rng.integers(0, K, (n, R))
    if exclude is not None:
        c = np.where(c == exclude, (c + 1) % K, c)
    return c


def _with_count(rng, colour: int, count: int) -> np.ndarray:
    """A 3x3 image with exactly ``count`` cells of ``colour``."""
    c = _random_colours(1, rng, exclude=colour)[0]
    c[rng.permutation(R)[:count]] = colour
    return c


def _examples(rows: list[dict], cols: dict[str, pa.DataType]) -> pa.Table:
    return pa.table({k: pa.array([r[k] for r in rows], type=t) for k, t in cols.items()})


def _split(task: str, n: int, rng: np.random.Generator):
    from ltvl.vl.data.schema import TASK_COLUMNS

    rows, imgs, extra = [], [], []
    for i in range(n):
        col = int(rng.integers(0, K))
        name = COLOURS[col]
        if task == "vqa":  # "is c the main colour?": main colour covers 5 of 9 cells
            main = int(rng.integers(0, K))
            c = _with_count(rng, main, 5)
            yes = bool(rng.integers(0, 2))
            asked = main if yes else int((main + rng.integers(1, K)) % K)
            imgs.append(c)
            rows.append(
                {
                    "qid": i,
                    "image_id": i,
                    "text": f"is {COLOURS[asked]} the main colour?",
                    "answer_ids": [int(yes)],
                    "answer_scores": [1.0],
                }
            )
        elif task == "gqa":  # "which is more common, c or d?": answer is a colour word
            c, d = rng.choice(K, 2, replace=False)
            more, less = (c, d) if rng.integers(0, 2) else (d, c)
            others = [x for x in range(K) if x not in (c, d)]
            img = np.array(others)[rng.integers(0, len(others), R)]
            cells = rng.permutation(R)
            img[cells[:4]] = others[int(rng.integers(0, len(others)))]  # the image's own most common colour is
            img[cells[4:7]] = more  # never asked about, so the answer needs the question
            img[cells[7:8]] = less
            imgs.append(img)
            rows.append(
                {
                    "qid": i,
                    "image_id": i,
                    "text": f"which is more common, {COLOURS[c]} or {COLOURS[d]}?",
                    "label": int(more),
                }
            )
        elif task == "snli_ve":  # "the main colour is c": entailed, neutral (no main colour), contradicted
            label, c = int(rng.integers(0, 3)), int(rng.integers(0, K))
            if label == 1:  # no colour covers more than 3 cells: undecidable
                img = np.array([x for x in rng.permutation(K)[:3] for _ in range(3)])[rng.permutation(R)]
            else:
                main = c if label == 0 else int((c + rng.integers(1, K)) % K)
                img = _with_count(rng, main, 6)
            imgs.append(img)
            rows.append({"qid": i, "image_id": i, "text": f"the main colour is {COLOURS[c]}", "label": label})
        elif task == "nlvr2":  # "both images are mostly c"
            c = int(rng.integers(0, K))
            label = int(rng.integers(0, 2))
            which = int(rng.integers(0, 3))  # when false: left, right or both have another main colour
            mains = (
                [c, c]
                if label
                else [
                    c if which == 1 else int((c + rng.integers(1, K)) % K),
                    c if which == 0 else int((c + rng.integers(1, K)) % K),
                ]
            )
            imgs.append(_with_count(rng, mains[0], 5))
            extra.append(_with_count(rng, mains[1], 5))
            rows.append(
                {
                    "qid": i,
                    "image_id": 2 * i,
                    "image_id_2": 2 * i + 1,
                    "text": f"both images are mostly {COLOURS[c]}",
                    "label": label,
                }
            )
        elif task == "vcr":  # Q->A: which listed colour is present; QA->R: how often it appears
            opts = rng.choice(K, 4, replace=False)
            right, times = int(rng.integers(0, 4)), int(rng.integers(1, 5))
            absent = [x for x in range(K) if x not in opts]
            c = np.array(absent)[rng.integers(0, len(absent), R)]
            c[rng.permutation(R)[:times]] = opts[right]
            imgs.append(c)
            counts = rng.permutation([n for n in range(1, 6) if n != times])[:3].tolist()
            r_right = int(rng.integers(0, 4))
            counts.insert(r_right, times)
            rows.append(
                {
                    "qid": i,
                    "image_id": i,
                    "text": "which colour is in the picture?",
                    "answers": [COLOURS[o] for o in opts],
                    "rationales": [f"it appears {NUMBERS[n]} times" for n in counts],
                    "answer_label": right,
                    "rationale_label": r_right,
                }
            )
        elif task == "refcoco_plus":
            c = _with_count(rng, col, 1)
            imgs.append(c)
            rows.append(
                {"qid": i, "image_id": i, "text": f"the {name} shape", "target_region": int(np.argmax(c == col))}
            )
        elif task in ("flickr30k", "pretrain"):
            trio = np.sort(rng.choice(K, 3, replace=False))
            c = trio[rng.integers(0, 3, R)]
            c[:3] = trio
            imgs.append(rng.permutation(c))
            rows.append({"qid": i, "image_id": i, "text": " ".join(COLOURS[t] for t in trio)})
        else:
            raise LtvlError(f"no synthetic generator for task {task!r}", where="task")
    colours = np.array(imgs) if not extra else np.stack([x for pair in zip(imgs, extra) for x in pair])
    return _images(colours, rng), _examples(rows, TASK_COLUMNS[task])


def make_synthetic(task: str, out: str | Path, n_train: int = 1024, n_test: int = 256, seed: int = 0) -> DatasetInfo:
    """Write a synthetic ``task`` dataset to ``out`` and return its info."""
    rng = np.random.default_rng(seed)
    answers = {"vqa": ["no", "yes"], "gqa": list(COLOURS)}.get(task, [])
    info = DatasetInfo(
        task=task,
        feat_dim=D,
        num_regions=R,
        answers=answers,
        num_labels=K if task == "pretrain" else (3 if task == "snli_ve" else None),
        image_size=SIZE,
        source=f"synthetic seed={seed}",
    )
    for split, n in (("train", n_train), ("test", n_test)):
        images, examples = _split(task, n, rng)
        save_split(out, split, images, examples)
    info.save(out)
    return info
