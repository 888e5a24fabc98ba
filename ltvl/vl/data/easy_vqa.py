"""Import the real easy-VQA dataset (PyPI package ``easy-vqa``) into ltvl's Arrow schema.

38,575 train / 9,673 test questions about 64x64 images, 13 answers. Region features are a
grid of patches (default 4x4 patches of 16x16 RGB pixels = 768-d, scaled to [-1, 1]) with
their boxes, for the region backbones; pixels are kept for ViLT.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from ltvl.util.errors import LtvlError
from ltvl.vl.data.schema import TASK_COLUMNS, grid_boxes
from ltvl.vl.data.store import DatasetInfo, image_table, save_split

IMAGE_SIZE = 64


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


def patch_features(pixels: np.ndarray, grid: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, grid*grid, (H/grid)*(W/grid)*3) float in [-1, 1], row-major patches."""
    n, h, w, _ = pixels.shape
    ph, pw = h // grid, w // grid
    x = pixels.reshape(n, grid, ph, grid, pw, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, grid * grid, ph * pw * 3)
    return x.astype(np.float32) / 127.5 - 1.0


def prepare_easy_vqa(out: str | Path, grid: int = 4, limit: int | None = None) -> DatasetInfo:
    """Write ``out/{train,test}/{images,examples}.parquet`` and ``out/dataset.json``."""
    from PIL import Image

    if IMAGE_SIZE % grid:
        raise LtvlError(
            f"grid {grid} does not divide the {IMAGE_SIZE}-pixel image", where="--grid", fix="use 2, 4 or 8"
        )
    src = _package_dir()
    answers = [a.strip() for a in (src / "answers.txt").read_text().splitlines() if a.strip()]
    index = {a: i for i, a in enumerate(answers)}
    for split in ("train", "test"):
        qs = json.loads((src / split / "questions.json").read_text())
        if limit:
            qs = qs[:limit]
        image_ids = sorted({int(q[2]) for q in qs})
        pixels = np.stack(
            [np.asarray(Image.open(src / split / "images" / f"{i}.png").convert("RGB")) for i in image_ids]
        )
        feats = patch_features(pixels, grid)
        boxes = np.broadcast_to(np.array(grid_boxes(grid, grid), np.float32), (len(image_ids), grid * grid, 7))
        images = image_table(image_ids, feats, boxes, pixels)
        rows = {
            "qid": np.arange(len(qs)),
            "image_id": [int(q[2]) for q in qs],
            "text": [q[0] for q in qs],
            "answer_ids": [[index[q[1]]] for q in qs],
            "answer_scores": [[1.0] for _ in qs],
        }
        examples = pa.table({k: pa.array(v, type=t) for (k, t), v in zip(TASK_COLUMNS["vqa"].items(), rows.values())})
        save_split(out, split, images, examples)
    info = DatasetInfo(
        task="vqa",
        feat_dim=(IMAGE_SIZE // grid) ** 2 * 3,
        num_regions=grid * grid,
        answers=answers,
        image_size=IMAGE_SIZE,
        source=f"easy-vqa (PyPI), grid={grid}" + (f", limit={limit}" if limit else ""),
    )
    info.save(out)
    return info


def ensure_easy_vqa(out: str | Path, grid: int = 4) -> Path:
    """Prepare once; later calls reuse the directory (idempotent, so sweeps can call it freely)."""
    out = Path(out)
    if not (out / "dataset.json").exists():
        prepare_easy_vqa(out, grid)
    return out
