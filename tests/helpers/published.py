"""Small files in exactly the formats the paper's data is published in, written the way the
reference code writes them (UNITER's LMDB dbs, LXMERT's TSV, ViLT's Arrow). The real files
differ only in size."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import numpy as np

D = 32  # feature width (2048 in the real files)


def uniter_img_db(directory: Path, images: dict[str, dict], nbb: dict[str, int] | None = None,
                  compressed: bool = False, db: str = "th") -> Path:
    """``img_db/<name>/<db>[_compressed]/`` as UNITER's scripts/convert_imgdir.py writes it: every
    float32 array stored as float16; ``db`` "th" = ``feat_th0.2_max100_min10`` with the arrays cut
    to each image's box count and ``nbb_th0.2_max100_min10.json`` beside it (``nbb``: those counts;
    None = no json published), "numbb" = ``feat_numbb100`` (conf_th -1: ground-truth boxes, no
    json), "all" = ``--keep_all``; values msgpack-numpy dicts, or ``np.savez_compressed`` bytes,
    which under UNITER's numpy 1.x also stored its ``allow_pickle=True`` argument as a 0-d array;
    and a ``__keys__`` entry with every name."""
    import lmdb
    import msgpack
    import msgpack_numpy

    name = {"th": "feat_th0.2_max100_min10", "numbb": "feat_numbb100", "all": "all"}[db]
    path = directory / (name + ("_compressed" if compressed else ""))
    path.mkdir(parents=True)
    env = lmdb.open(str(path), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for fname, arrays in images.items():
            keep = nbb.get(fname) if (db == "th" and nbb) else None
            dump = {k: (a.astype(np.float16) if a.dtype == np.float32 else a)[:keep] for k, a in arrays.items()}
            if compressed:
                buf = io.BytesIO()
                np.savez_compressed(buf, **dump, allow_pickle=np.array(True))  # numpy 1.x: an array like the rest
                value = buf.getvalue()
            else:
                value = msgpack.dumps(dump, default=msgpack_numpy.encode, use_bin_type=True)
            txn.put(fname.encode("utf-8"), value)
        txn.put(b"__keys__", json.dumps(list(images)).encode("utf-8"))
    env.close()
    if nbb is not None and db == "th":
        (directory / "nbb_th0.2_max100_min10.json").write_text(json.dumps(nbb))
    return directory


def uniter_image(rng, n: int, classes: int = 1601, conf: tuple[float, float] = (0, 1)) -> dict:
    """One image's arrays as the BUTD extractor saves them (float32; the converter halves them)."""
    x1y1 = rng.uniform(0, 0.5, (n, 2)).astype(np.float32)
    wh = rng.uniform(0.1, 0.5, (n, 2)).astype(np.float32)
    soft = rng.uniform(0, 1, (n, classes)).astype(np.float32)
    soft[:, 0] += 2.0  # the background column usually scores highest: it must never be a target
    return {"features": rng.normal(size=(n, D)).astype(np.float32),
            "norm_bb": np.concatenate([x1y1, x1y1 + wh, wh], 1).astype(np.float32),
            "conf": rng.uniform(*conf, n).astype(np.float32), "soft_labels": soft / soft.sum(1, keepdims=True)}


def uniter_txt_db(directory: Path, records: dict[str, dict], meta: dict, extra: dict | None = None,
                  id2len: str = "id2len.json") -> Path:
    """A txt_db: LMDB of lz4-framed msgpack records + meta.json, id2len.json, txt2img.json."""
    import lmdb
    import lz4.frame
    import msgpack

    directory.mkdir(parents=True)
    env = lmdb.open(str(directory), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for id_, rec in records.items():
            txn.put(id_.encode("utf-8"), lz4.frame.compress(msgpack.dumps(rec, use_bin_type=True)))
    env.close()
    (directory / "meta.json").write_text(json.dumps(meta))
    (directory / id2len).write_text(json.dumps({k: len(r["input_ids"]) for k, r in records.items()}))
    (directory / "txt2img.json").write_text(json.dumps({k: r.get("img_fname") for k, r in records.items()}))
    for name, content in (extra or {}).items():
        (directory / name).write_text(json.dumps(content))
    return directory


FIELDNAMES = ["img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf", "num_boxes",
              "boxes", "features"]


def lxmert_tsv(path: Path, images: dict[str, dict]) -> Path:
    """One line per image, base64 arrays, as LXMERT's feature extraction writes them."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDNAMES, delimiter="\t")
        for name, im in images.items():
            n = len(im["boxes"])
            w.writerow({"img_id": name, "img_h": im["h"], "img_w": im["w"], "num_boxes": n,
                        **{k: base64.b64encode(np.ascontiguousarray(im[k]).tobytes()).decode()
                           for k in ("objects_id", "objects_conf", "attrs_id", "attrs_conf", "boxes", "features")}})
    return path


def lxmert_image(rng, n: int, d: int = D, h: int = 480, w: int = 640) -> dict:
    x1 = rng.uniform(0, w / 2, n)
    y1 = rng.uniform(0, h / 2, n)
    return {"h": h, "w": w, "objects_id": rng.integers(0, 1600, n).astype(np.int64),
            "objects_conf": rng.uniform(0, 1, n).astype(np.float32),
            "attrs_id": rng.integers(0, 400, n).astype(np.int64), "attrs_conf": rng.uniform(0, 1, n).astype(np.float32),
            "boxes": np.stack([x1, y1, x1 + rng.uniform(10, w / 2, n), y1 + rng.uniform(10, h / 2, n)], 1)
            .astype(np.float32),
            "features": rng.normal(size=(n, d)).astype(np.float32)}


def vilt_arrow(path: Path, rows: list[dict], columns: list[str]) -> Path:
    """As ViLT's write_*.py: a pandas DataFrame -> Table -> RecordBatchFileWriter."""
    import pandas as pd
    import pyarrow as pa

    table = pa.Table.from_pandas(pd.DataFrame([[r[c] for c in columns] for r in rows], columns=columns))
    with pa.OSFile(str(path), "wb") as sink, pa.RecordBatchFileWriter(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def jpeg(rng, size: int = 32) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()
