"""Import the real easy-VQA dataset (PyPI package ``easy-vqa``) into ltvl's Arrow schema.

38,575 train / 9,673 test questions about 64x64 images, 13 answers. Region features are a
grid of patches (default 4x4 patches of 16x16 RGB pixels = 768-d) with their boxes, for the
region backbones; pixels are kept for ViLT.

Each image is one shape on a plain background of a random light colour. By default a patch's
pixels are stored minus that background colour (the image's median pixel), so a background
patch is about zero and the shape is the signal, roughly what a detector's region feature gives
a VL model. With the raw pixels (``features="pixels"``: scaled to [-1, 1]) the background
dominates every patch, and the main job's recipe learned to answer from the question alone
(bench/RESULTS.md, "recipe check").
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from ltvl.util.errors import LtvlError
from ltvl.vl.data.info import DatasetInfo
from ltvl.vl.data.schema import TASK_COLUMNS, grid_boxes
from ltvl.vl.data.writer import DatasetWriter

IMAGE_SIZE = 64
CHUNK = 2048  # images per record batch: bounded memory
FEATURES = ("minus-background", "pixels")
# What `data: easy-vqa` holds. Bump it whenever the auto-prepared content changes, so chains on the
# new content get new identities instead of replaying stores trained on the old (1: raw pixels).
REVISION = 2


def _package_dir() -> Path:
    try:
        import easy_vqa
    except ImportError as e:
        raise LtvlError(
            "package easy-vqa is not installed",
            where="ltvl data prepare easy-vqa",
            fix="run scripts/setup.sh (or pip install easy-vqa)",
        ) from e
    return Path(os.path.dirname(easy_vqa.__file__)) / "data"


def patch_features(pixels: np.ndarray, grid: int, features: str = "minus-background") -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, grid*grid, (H/grid)*(W/grid)*3) float, row-major patches: pixels
    minus the image's background colour (its median pixel) / 127.5, or raw pixels in [-1, 1]."""
    n, h, w, _ = pixels.shape
    ph, pw = h // grid, w // grid
    x = pixels.astype(np.float32)
    if features == "minus-background":
        x = (x - np.median(pixels.reshape(n, -1, 3), axis=1)[:, None, None, :]) / 127.5
    else:
        x = x / 127.5 - 1.0
    return x.reshape(n, grid, ph, grid, pw, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, grid * grid, ph * pw * 3)


def source_of(grid: int = 4, limit: int | None = None, features: str = "minus-background") -> str:
    """What dataset.json's ``source`` says of a copy: the auto-prepared one is rebuilt when it differs."""
    return f"easy-vqa (PyPI), grid={grid}, features={features}" + (f", limit={limit}" if limit else "")


def prepare_easy_vqa(out: str | Path, grid: int = 4, limit: int | None = None,
                     features: str = "minus-background") -> DatasetInfo:
    """Write ``out/{train,test}/{images,examples}.arrow`` and ``out/dataset.json``; the images
    keep their original PNG bytes (ViLT decodes them), region features are their patches."""
    from PIL import Image

    if IMAGE_SIZE % grid:
        raise LtvlError(
            f"grid {grid} does not divide the {IMAGE_SIZE}-pixel image", where="--grid", fix="use 2, 4 or 8"
        )
    if features not in FEATURES:
        raise LtvlError(f"unknown features {features!r}", where="--features", fix=f"one of {', '.join(FEATURES)}")
    src = _package_dir()
    answers = [a.strip() for a in (src / "answers.txt").read_text().splitlines() if a.strip()]
    index = {a: i for i, a in enumerate(answers)}
    info = DatasetInfo(
        task="vqa",
        feat_dim=(IMAGE_SIZE // grid) ** 2 * 3,
        num_regions=grid * grid,
        answers=answers,
        image_size=IMAGE_SIZE,
        source=source_of(grid, limit, features),
    )
    questions = {}
    for split in ("train", "test"):
        qs = json.loads((src / split / "questions.json").read_text())
        questions[split] = qs[:limit] if limit else qs
    n_images = sum(len({q[2] for q in qs}) for qs in questions.values())
    with DatasetWriter(out, info, n_images * (info.num_regions * (info.feat_dim * 2 + 32) + 4096),
                       overwrite=True) as w:
        for split, qs in questions.items():
            image_ids = sorted({int(q[2]) for q in qs})
            images = w.images(split, encoded=True)
            for start in range(0, len(image_ids), CHUNK):
                ids = image_ids[start: start + CHUNK]
                encoded = [(src / split / "images" / f"{i}.png").read_bytes() for i in ids]
                pixels = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in encoded])
                boxes = np.broadcast_to(np.array(grid_boxes(grid, grid), np.float32), (len(ids), grid * grid, 7))
                images.write(ids, patch_features(pixels, grid, features), boxes, images=encoded)
            cols = TASK_COLUMNS["vqa"]
            w.examples(split, pa.table({
                "qid": pa.array(np.arange(len(qs)), cols["qid"]),
                "image_id": pa.array([int(q[2]) for q in qs], cols["image_id"]),
                "text": pa.array([q[0] for q in qs], cols["text"]),
                "answer_ids": pa.array([[index[q[1]]] for q in qs], cols["answer_ids"]),
                "answer_scores": pa.array([[1.0] for _ in qs], cols["answer_scores"])}))
    return DatasetInfo.load(out)
