"""A ticket's weights in one compact file: the kept values of every pruned tensor plus its packed
bitmask, every other tensor as is (``ltvl-sparse/1``, a safetensors file: no pickle, any tool opens it).

Per pruned tensor ``W``: ``W::kept`` holds the kept values in row-major order, in W's dtype, and
``W::keep`` the keep-mask as ``np.packbits`` of the flattened mask (ltvl's mask format's bits), so a
tensor costs (1 − s)·bytes + 1/8 byte per weight at sparsity s. The header names the mask's sha256 and
the sha256 of the whole state with pruned entries as +0.0 (training leaves -0.0 where a negative
weight was multiplied by 0: the same number, another bit pattern); reading checks both, so a file
round-trips to exactly that state or fails naming what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from ltvl.pruning.mask import Mask, pack_bits, unpack_bits
from ltvl.util.atomic import atomic_write_bytes
from ltvl.util.errors import LtvlError
from ltvl.util.weights import state_sha256

FORMAT = "ltvl-sparse/1"
KEPT, KEEP = "::kept", "::keep"


def canonical(state: Mapping[str, torch.Tensor], mask: Mask) -> dict[str, torch.Tensor]:
    """The state with every pruned entry +0.0; refuses a state whose pruned weights are not zero (it
    would not be the ticket the mask names)."""
    out = {}
    for name, t in state.items():
        t = t.detach().cpu()
        if name in mask.tensors:
            pruned = ~mask.tensors[name]
            if tuple(t.shape) != tuple(pruned.shape):
                raise LtvlError(f"{name} is {tuple(t.shape)} but the mask's tensor is {tuple(pruned.shape)}",
                                where=name, fix="pack the state the mask was made for")
            bad = int(t[pruned].ne(0).sum())
            if bad:
                raise LtvlError(f"{bad} pruned weights of {name} are not zero: this state is not the mask's ticket",
                                where=name, fix="apply the mask (MaskEnforcer) before packing")
            t = t.masked_fill(pruned, 0.0)
        out[name] = t.contiguous()
    missing = [n for n in mask.names if n not in state]
    if missing:
        raise LtvlError(f"the mask prunes {len(missing)} tensor(s) the state lacks, e.g. {missing[0]}",
                        where="state", fix="pack the state of the model the mask was made for")
    return out


def sparse_bytes(state: Mapping[str, torch.Tensor], mask: Mask) -> bytes:
    full = canonical(state, mask)
    tensors: dict[str, torch.Tensor] = {}
    for name, t in full.items():
        if name in mask.tensors:
            keep = mask.tensors[name]
            tensors[name + KEPT] = t[keep].contiguous()
            tensors[name + KEEP] = torch.from_numpy(pack_bits(keep))
        else:
            tensors[name] = t
    meta = {"format": FORMAT,
            "pruned": json.dumps({n: {"shape": list(full[n].shape), "dtype": str(full[n].dtype).removeprefix("torch.")}
                                  for n in mask.names}),
            "mask_sha256": mask.sha256, "state_sha256": state_sha256(full)}
    meta["header_sha256"] = _header_sha256(meta)
    return st_save(tensors, metadata=meta)


def save_sparse(state: Mapping[str, torch.Tensor], mask: Mask, path: str | os.PathLike) -> str:
    """Atomically write the ticket; returns the sha256 of the state it holds."""
    data = sparse_bytes(state, mask)
    atomic_write_bytes(path, data)
    return json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["__metadata__"]["state_sha256"]


def load_sparse(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], Mask]:
    """The state (pruned entries +0.0) and its mask, both checked against the header's hashes."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise LtvlError(f"not an ltvl sparse ticket (format {meta.get('format')!r}, expected {FORMAT!r})",
                                where=str(path), fix="pass a file written by `ltvl ticket export` (weights.sparse."
                                                     "safetensors)")
            if _header_sha256(meta) != meta.get("header_sha256"):
                raise LtvlError("the sparse file's header was edited after it was written", where=str(path),
                                fix="export the ticket again")
            raw = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise LtvlError(f"the sparse file is truncated or corrupt ({type(e).__name__}: {e})", where=str(path),
                        fix="export the ticket again") from e
    pruned = json.loads(meta["pruned"])
    state, keeps = {}, {}
    for name, info in pruned.items():
        shape = tuple(info["shape"])
        keep = unpack_bits(raw.pop(name + KEEP).numpy(), shape)
        kept = raw.pop(name + KEPT)
        if kept.numel() != int(keep.sum()):
            raise LtvlError(f"{name} has {kept.numel()} kept values but its mask keeps {int(keep.sum())}",
                            where=str(path), fix="export the ticket again")
        t = torch.zeros(shape, dtype=kept.dtype)
        t[keep] = kept
        state[name], keeps[name] = t, keep
    state.update(raw)
    mask = Mask(keeps)
    if mask.sha256 != meta["mask_sha256"]:
        raise LtvlError(f"the mask in the file is {mask.sha256[:12]}…, its header says {meta['mask_sha256'][:12]}…",
                        where=str(path), fix="export the ticket again")
    if state_sha256(state) != meta["state_sha256"]:
        raise LtvlError("the weights in the file do not hash to the header's state_sha256", where=str(path),
                        fix="export the ticket again")
    return state, mask


def _header_sha256(meta: Mapping[str, str]) -> str:
    body = {k: v for k, v in meta.items() if k != "header_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
