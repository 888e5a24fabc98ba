"""Mask files: bit-packed safetensors with a verified content hash.

Layout: one uint8 tensor per parameter (np.packbits of the flattened keep-mask)
plus ``__metadata__`` holding the format tag, ordered names and shapes, model
fingerprint, sha256, parent sha256 and free-form metadata (JSON). safetensors is
a plain, pickle-free container any tool can open; 1 bit per weight keeps a
BERT-base mask at ~10.6 MB.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from ltvl.pruning.mask import Mask, pack_bits, unpack_bits
from ltvl.util.atomic import atomic_write_bytes
from ltvl.util.errors import LtvlError

FORMAT = "ltvl-mask/2"  # the header is covered by header_sha256, which must be there
LEGACY = "ltvl-mask/1"  # before 2026-12: header_sha256 optional (files before 2026-11-24 have none)


def mask_to_bytes(mask: Mask) -> bytes:
    tensors = {n: torch.from_numpy(pack_bits(t)) for n, t in mask.tensors.items()}
    meta = {
        "format": FORMAT,
        "names": json.dumps(mask.names),
        "shapes": json.dumps([list(s) for s in mask.shapes.values()]),
        "fingerprint": mask.fingerprint,
        "sha256": mask.sha256,
        "parent": mask.parent or "",
        "sparsity": repr(mask.sparsity),
        "metadata": json.dumps(mask.metadata, sort_keys=True, default=str),
    }
    meta["header_sha256"] = header_sha256(meta)
    return st_save(tensors, metadata=meta)


def header_sha256(meta: dict[str, str]) -> str:
    """The header's own hash: ``sha256`` names the mask's bits (its identity, unchanged), this one
    covers everything else a reader trusts (parent, metadata, names, fingerprint)."""
    body = {k: v for k, v in meta.items() if k != "header_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def save_mask(mask: Mask, path: str | os.PathLike) -> str:
    """Atomically write ``mask`` to ``path``; returns its sha256."""
    atomic_write_bytes(path, mask_to_bytes(mask))
    return mask.sha256


def load_mask(path: str | os.PathLike) -> Mask:
    """Read and verify a mask file; any damage raises :class:`LtvlError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise LtvlError("mask file does not exist", where=str(path), fix="check the path")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") not in (FORMAT, LEGACY):
                raise LtvlError(
                    f"not an ltvl mask file (format tag {meta.get('format')!r}, expected {FORMAT!r})",
                    where=str(path),
                    fix="pass a file written by `ltvl prune` or ltvl.pruning.save_mask",
                )
            names = json.loads(meta["names"])
            shapes = [tuple(s) for s in json.loads(meta["shapes"])]
            packed = {n: f.get_tensor(n).numpy() for n in names}
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError, RuntimeError) as e:
        raise LtvlError(
            f"mask file is truncated or corrupt ({type(e).__name__}: {e})",
            where=str(path),
            fix="re-create the mask; ltvl writes atomically, so a damaged file came from elsewhere",
        ) from e
    tensors = {}
    for name, shape in zip(names, shapes):
        need = (int(np.prod(shape)) + 7) // 8 if shape else 1
        if packed[name].size != need:
            raise LtvlError(
                f"tensor '{name}' holds {packed[name].size} bytes, expected {need}",
                where=str(path),
                fix="re-create the mask file",
            )
        tensors[name] = unpack_bits(packed[name], shape)
    if meta["format"] == FORMAT and "header_sha256" not in meta:  # never read a current file as an old one
        raise LtvlError("the mask header has no header_sha256, which every ltvl-mask/2 file carries",
                        where=str(path), fix="re-create the mask file; do not edit its header by hand")
    if "header_sha256" in meta and header_sha256(meta) != meta["header_sha256"]:  # legacy files: bits only
        raise LtvlError("the mask header (parent, metadata, names or fingerprint) was edited after it was written",
                        where=str(path), fix="re-create the mask file; do not edit its header by hand")
    try:
        mask = Mask(tensors, parent=meta.get("parent") or None, metadata=json.loads(meta["metadata"]),
                    header_verified="header_sha256" in meta)
    except (KeyError, ValueError, TypeError) as e:
        raise LtvlError(f"the mask header's metadata is not readable ({type(e).__name__}: {e})", where=str(path),
                        fix="re-create the mask file") from e
    if mask.sha256 != meta["sha256"]:
        raise LtvlError(
            f"content hash mismatch: file says {meta['sha256'][:12]}…, content is {mask.sha256[:12]}…",
            where=str(path),
            fix="the file was modified or damaged; re-create it",
        )
    return mask
