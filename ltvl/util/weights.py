"""Loading weights from disk: safetensors only, with errors that say what to do."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ltvl.util.errors import LtvlError


def load_safetensors(path: str | Path, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise LtvlError(f"file does not exist: {path}", where=where, fix="check the path")
    if path.is_dir():
        cands = sorted(path.glob("*.safetensors"))
        if len(cands) != 1:
            raise LtvlError(
                f"directory {path} holds {len(cands)} .safetensors files, expected 1",
                where=where,
                fix="pass the .safetensors file itself",
            )
        path = cands[0]
    with open(path, "rb") as f:
        head = f.read(8)
    if path.suffix in (".bin", ".pt", ".pth", ".ckpt") or len(head) < 8:
        raise LtvlError(
            f"{path} is not a safetensors file",
            where=where,
            fix="convert it: safetensors.torch.save_file(torch.load(p, weights_only=True), 'model.safetensors')",
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise LtvlError(
            f"{path} is not a readable safetensors file ({e})",
            where=where,
            fix="pass a .safetensors checkpoint (pickled .bin/.pt files are refused for safety)",
        ) from e


def tensor_bytes(t: torch.Tensor) -> memoryview:
    t = t.detach().contiguous().cpu()
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def update_with_state(h, state: Mapping[str, torch.Tensor]) -> None:
    """Feed every tensor's name, dtype, shape and bytes to ``h``, in name order."""
    for name in sorted(state):
        t = state[name]
        h.update(f"{name}\0{str(t.dtype)}\0{list(t.shape)}\0".encode())
        h.update(tensor_bytes(t))


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """The content hash of a state dict: names, dtypes, shapes and values (bitwise: -0.0 ≠ 0.0)."""
    h = hashlib.sha256()
    update_with_state(h, state)
    return h.hexdigest()
