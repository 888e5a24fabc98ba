"""Load official UNITER checkpoints (UNITER repo naming) into ``UniterBackbone``.

The UNITER repository saves ``uniter.embeddings.*``, ``uniter.img_embeddings.{img_linear,
img_layer_norm, pos_linear, pos_layer_norm, LayerNorm, mask_embedding}``,
``uniter.encoder.layer.N.*`` and ``uniter.pooler.*`` (plus task heads). Our module names
are the same without the ``uniter.`` prefix, so conversion is a rename plus checks.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ltvl.pruning.inits import InitReport
from ltvl.util.errors import LtvlError
from ltvl.util.weights import load_safetensors

PREFIX = "uniter."


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """safetensors, or a plain tensor state dict saved with torch.save (loaded with weights_only=True)."""
    path = Path(path)
    if path.suffix == ".safetensors" or path.is_dir():
        return load_safetensors(path, where=str(path))
    if not path.exists():
        raise LtvlError("checkpoint does not exist", where=str(path), fix="check the path")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # refuses pickled code
    except Exception as e:  # noqa: BLE001 - any failure here means "not a plain state dict"
        raise LtvlError(
            f"cannot read checkpoint safely ({type(e).__name__}: {e})",
            where=str(path),
            fix="convert it to safetensors, or save a plain {name: tensor} dict",
        ) from e
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    return {k: v for k, v in sd.items() if torch.is_tensor(v)}


def convert_uniter_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """UNITER-repo names -> UniterBackbone names (drops task heads and the MRM mask embedding)."""
    if not any(k.startswith(PREFIX) for k in sd):
        raise LtvlError(
            "no 'uniter.*' parameters in the checkpoint",
            where="checkpoint",
            fix="pass an official UNITER checkpoint, or a BERT-architecture directory for BERT init",
        )
    out = {}
    for k, v in sd.items():
        if k.startswith(PREFIX):
            name = k[len(PREFIX) :]
            if name.startswith("img_embeddings.mask_embedding"):
                continue
            out[name] = v
    return out


def load_uniter_checkpoint(backbone, path: str | Path) -> InitReport:
    """Load an official UNITER checkpoint strictly: every backbone tensor must be present and fit."""
    raw = read_checkpoint(path)
    sd = convert_uniter_state_dict(raw)
    own = backbone.state_dict()
    rep = InitReport()
    for name, t in own.items():
        if name not in sd:
            if name.endswith("position_ids") or name.endswith("token_type_ids"):
                continue  # non-persistent buffers
            raise LtvlError(
                f"checkpoint has no 'uniter.{name}'",
                where=str(path),
                fix="the checkpoint is incomplete or not UNITER-base shaped",
            )
        if tuple(sd[name].shape) != tuple(t.shape):
            raise LtvlError(
                f"'uniter.{name}' has shape {list(sd[name].shape)}, the model expects {list(t.shape)}",
                where=str(path),
                fix="region features must match the checkpoint's img_dim (2048 for UNITER)",
            )
        rep.loaded.append(name)
    backbone.load_state_dict({k: sd[k] for k in rep.loaded}, strict=False)
    rep.unused = [k for k in raw if not (k.startswith(PREFIX) and k[len(PREFIX) :] in own)]  # task heads, MRM embedding
    return rep
