"""Synthetic datasets for every task, in the same Arrow layout as real data, of any size.

An image is a 3x3 grid of coloured cells (8 colours). Region features are a noisy one-hot
colour code, boxes are the grid cells, the image is the rendered 24x24 PNG, and region
labels are the colours (for MRC). Every label depends on *both* modalities — the text
names a colour or a count, the image decides the answer — so a test can assert learning.

At paper shape (``ltvl data synth vqa --images 60000 --regions 36 --feat-dim 2048``) the
regions past the 9 cells are background detections (noise, label K) and an image may keep
fewer of them (``min_regions``); generation streams in chunks, so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ltvl.util.errors import LtvlError, require
from ltvl.vl.data.info import DatasetInfo
from ltvl.vl.data.schema import TASK_COLUMNS, grid_boxes
from ltvl.vl.data.writer import DatasetWriter, encode_png

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
CELLS, K, D = GRID * GRID, len(COLOURS), 16  # the default feature width is D; regions default to the 9 cells
SIZE = GRID * CELL


def _random_colours(n: int, rng, exclude: int | None = None) -> np.ndarray:
    c = rng.integers(0, K, (n, CELLS))
    if exclude is not None:
        c = np.where(c == exclude, (c + 1) % K, c)
    return c


def _with_count(rng, colour: int, count: int) -> np.ndarray:
    """A 3x3 image with exactly ``count`` cells of ``colour``."""
    c = _random_colours(1, rng, exclude=colour)[0]
    c[rng.permutation(CELLS)[:count]] = colour
    return c


def _examples(rows: list[dict], cols: dict[str, pa.DataType]) -> pa.Table:
    return pa.table({k: pa.array([r[k] for r in rows], type=t) for k, t in cols.items()})


def _split(task: str, n: int, rng: np.random.Generator, start: int = 0):
    """Examples ``start .. start+n`` of a non-VQA task and their images' colour grids (one image per
    example; two for NLVR2)."""
    rows, imgs, extra = [], [], []
    for i in range(start, start + n):
        col = int(rng.integers(0, K))
        name = COLOURS[col]
        if task == "gqa":  # "which is more common, c or d?": answer is a colour word
            c, d = rng.choice(K, 2, replace=False)
            more, less = (c, d) if rng.integers(0, 2) else (d, c)
            others = [x for x in range(K) if x not in (c, d)]
            img = np.array(others)[rng.integers(0, len(others), CELLS)]
            cells = rng.permutation(CELLS)
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
                img = np.array([x for x in rng.permutation(K)[:3] for _ in range(3)])[rng.permutation(CELLS)]
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
            c = np.array(absent)[rng.integers(0, len(absent), CELLS)]
            c[rng.permutation(CELLS)[:times]] = opts[right]
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
            c = trio[rng.integers(0, 3, CELLS)]
            c[:3] = trio
            imgs.append(rng.permutation(c))
            rows.append({"qid": i, "image_id": i, "text": " ".join(COLOURS[t] for t in trio)})
        else:
            raise LtvlError(f"no synthetic generator for task {task!r}", where="task")
    colours = np.array(imgs) if not extra else np.stack([x for pair in zip(imgs, extra) for x in pair])
    return colours, _examples(rows, TASK_COLUMNS[task])




@dataclass(frozen=True)
class Shape:
    """How big and how wide: regions per image (>= 9 cells), feature width, variable counts."""

    regions: int = CELLS
    feat_dim: int = D
    min_regions: int | None = None  # images keep a uniform count in [min_regions, regions]
    pixels: bool = True

    def validate(self) -> None:
        require(self.regions >= CELLS, f"regions must be >= {CELLS} (the colour cells)", where="--regions")
        require(self.feat_dim >= K + 1, f"feat_dim must be >= {K + 1} (colour code + background)",
                where="--feat-dim")
        if self.min_regions is not None:
            require(CELLS <= self.min_regions <= self.regions,
                    f"min_regions must be in [{CELLS}, regions={self.regions}]", where="--min-regions")

    def image_bytes(self) -> int:
        return self.regions * (self.feat_dim * 2 + 7 * 4 + 4) + (600 if self.pixels else 0) + 64


NOISE_POOL = 1024  # feature noise is drawn from a pool of rows: generation runs at memcpy speed


def _noise_pool(feat_dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 7]).normal(0.0, 0.3, (NOISE_POOL, feat_dim)).astype(np.float16)


def _write_images(w, ids: np.ndarray, colours: np.ndarray, rng: np.random.Generator, shape: Shape,
                  pool: np.ndarray) -> None:
    """Regions 0..8: the grid cells (colour code + noise); the rest: background detections."""
    n, r = len(ids), shape.regions
    feats = pool[rng.integers(0, NOISE_POOL, (n, r))]  # (n, r, D) float16
    feats[np.arange(n)[:, None], np.arange(CELLS)[None, :], colours] += 2.0
    feats[:, CELLS:, K] += 2.0  # background dimension
    cells = np.array(grid_boxes(GRID, GRID), np.float32)
    boxes = np.empty((n, r, 7), np.float32)
    boxes[:, :CELLS] = cells
    if r > CELLS:
        boxes[:, CELLS:] = cells[np.arange(CELLS, r) % CELLS]
    labels = np.full((n, r), K, np.int64)
    labels[:, :CELLS] = colours
    nreg = None
    if shape.min_regions is not None and shape.min_regions < r:
        nreg = rng.integers(shape.min_regions, r + 1, n)
    images = None
    if shape.pixels:
        pix = RGB[colours] + rng.normal(0, 10, (n, CELLS, 3))
        pix = np.clip(pix.reshape(n, GRID, GRID, 3).repeat(CELL, 1).repeat(CELL, 2), 0, 255).astype(np.uint8)
        images = [encode_png(p) for p in pix]
    w.write(ids, feats, boxes, nreg, images, labels)




def _vqa_chunk(i0: int, i1: int, n_images: int, n_examples: int, rng) -> tuple[np.ndarray, pa.Table]:
    """VQA "is c the main colour?" about images i0..i1: the main colour covers 5 of 9 cells.
    Example j asks about image j * n_images // n_examples, so images share questions as in VQA v2
    and every question of a chunk is about one of its own images."""
    n_img = i1 - i0
    main = rng.integers(0, K, n_img)
    colours = rng.integers(0, K, (n_img, CELLS))
    colours = np.where(colours == main[:, None], (colours + 1) % K, colours)  # never the main colour...
    pick = np.argsort(rng.random((n_img, CELLS)), axis=1)[:, :5]
    colours[np.arange(n_img)[:, None], pick] = main[:, None]  # ...except on 5 cells
    e0, e1 = -(-i0 * n_examples // n_images), -(-i1 * n_examples // n_images)
    qid = np.arange(e0, e1)
    image_id = qid * n_images // n_examples
    yes = rng.integers(0, 2, len(qid))
    m = main[image_id - i0]
    asked = np.where(yes == 1, m, (m + rng.integers(1, K, len(qid))) % K)
    cols = TASK_COLUMNS["vqa"]
    table = pa.table({
        "qid": pa.array(qid, cols["qid"]), "image_id": pa.array(image_id, cols["image_id"]),
        "text": pa.array([f"is {COLOURS[a]} the main colour?" for a in asked], cols["text"]),
        "answer_ids": pa.array([[int(y)] for y in yes], cols["answer_ids"]),
        "answer_scores": pa.array([[1.0]] * len(qid), cols["answer_scores"])})
    return colours, table


def make_synthetic(task: str, out: str | Path, n_train: int = 1024, n_test: int = 256, seed: int = 0, *,
                   shape: Shape = Shape(), train_images: int | None = None, test_images: int | None = None,
                   chunk: int = 2048) -> DatasetInfo:
    """Write a synthetic ``task`` dataset to ``out``, streaming ``chunk`` images at a time.

    ``n_train``/``n_test`` count examples; for VQA, ``train_images``/``test_images`` may be fewer
    than the examples (questions share images); other tasks have one image per example.
    """
    shape.validate()
    if task not in TASK_COLUMNS:
        raise LtvlError(f"no synthetic generator for task {task!r}", where="task", fix=f"one of {sorted(TASK_COLUMNS)}")
    if task != "vqa" and (train_images or test_images):
        raise LtvlError("only VQA shares images between examples", where="--images",
                        fix="leave --images out: other tasks have one image per example (--examples)")
    answers = {"vqa": ["no", "yes"], "gqa": list(COLOURS)}.get(task, [])
    background = shape.regions > CELLS
    info = DatasetInfo(task=task, feat_dim=shape.feat_dim, num_regions=shape.regions, answers=answers,
                       num_labels=(K + background if task == "pretrain" else (3 if task == "snli_ve" else None)),
                       image_size=SIZE if shape.pixels else None,
                       source=f"synthetic seed={seed}" + ("" if shape == Shape() else f" {shape}"))
    sizes = {"train": (n_train, train_images or n_train), "test": (n_test, test_images or n_test)}
    for split, (n_ex, n_img) in sizes.items():
        require(n_ex >= 1 and n_img >= 1, f"{split} needs at least one example and image", where="--examples")
        require(n_img <= n_ex, f"{split}: more images ({n_img}) than examples ({n_ex})", where="--images")
    per_image = 2 if task == "nlvr2" else 1
    need = sum(n_img * per_image * shape.image_bytes() + n_ex * 96 for n_ex, n_img in sizes.values())
    pool = _noise_pool(shape.feat_dim, seed)
    with DatasetWriter(out, info, need, overwrite=True) as w:
        for s, (split, (n_ex, n_img)) in enumerate(sizes.items()):
            images = w.images(split, encoded=shape.pixels, region_labels=True)
            n_chunks = -(-n_img // chunk)
            for c in range(n_chunks):
                rng = np.random.default_rng([seed, s, c])
                i0, i1 = c * chunk, min(n_img, (c + 1) * chunk)
                if task == "vqa":
                    colours, examples = _vqa_chunk(i0, i1, n_img, n_ex, rng)
                    ids = np.arange(i0, i1)
                else:
                    colours, examples = _split(task, i1 - i0, rng, start=i0)
                    ids = np.arange(i0 * per_image, i1 * per_image)
                _write_images(images, ids, colours, rng, shape, pool)
                w.examples(split, examples)
    return DatasetInfo.load(out)
