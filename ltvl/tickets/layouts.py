"""A trained ticket's backbone written the way its own ecosystem loads it, with no ltvl installed.

- ViLT and LXMERT are transformers' ``ViltModel`` / ``LxmertModel``: ``save_pretrained`` writes
  ``config.json`` + ``model.safetensors``, which ``transformers.AutoModel.from_pretrained`` loads.
- UNITER-style backbones are BERT modules under UNITER's own names (``ltvl.vl.models.uniter``):
  ``uniter/`` holds UNITER's key layout (``uniter.embeddings…``, ``uniter.img_embeddings…``,
  ``uniter.encoder…``, ``uniter.pooler…``, as ChenRocks/UNITER's ``UniterModel.from_pretrained``
  reads a state dict) in safetensors and as the ``.pt`` tensor dict UNITER's code ``torch.load``s,
  beside UNITER's config JSON (its ``config/uniter-base.json`` keys) named as the weights are, so
  ltvl's own checkpoint inspection finds it too; ``bert/`` is the text encoder
  alone as a transformers ``BertModel`` directory.

Pruned weights are exactly +0.0 in every file. A new backbone kind is one writer and one line in
``WRITERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ltvl.util.errors import LtvlError

UNITER_CONFIG_KEYS = ("attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size",
                      "initializer_range", "intermediate_size", "max_position_embeddings", "num_attention_heads",
                      "num_hidden_layers", "type_vocab_size", "vocab_size")  # ChenRocks/UNITER config/uniter-*.json


def _save_transformers(model: nn.Module, out: Path) -> list[Path]:
    model.save_pretrained(str(out), safe_serialization=True)
    return sorted(p for p in out.iterdir() if p.is_file())


def write_vilt(backbone: nn.Module, out: Path, head: nn.Module | None = None, task: str | None = None) -> list[Path]:
    return _save_transformers(backbone.vilt, out / "model")


def write_lxmert(backbone: nn.Module, out: Path, head: nn.Module | None = None, task: str | None = None,
                 ) -> list[Path]:
    return _save_transformers(backbone.lxmert, out / "model")


# task -> the head's name in ChenRocks/UNITER's fine-tuning model, where our head is the same modules
# (model/vqa.py: vqa_output = Linear(h, 2h), GELU (erf), LayerNorm(2h, eps 1e-12), Linear(2h, answers))
UNITER_HEADS = {"vqa": "vqa_output."}


def write_uniter(backbone: nn.Module, out: Path, head: nn.Module | None = None, task: str | None = None,
                 ) -> list[Path]:
    import json

    from safetensors.torch import save_file
    from transformers import BertModel

    state = {f"uniter.{k}": v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()
             if not k.endswith(("position_ids", "token_type_ids"))}  # derived buffers, never in UNITER's files
    # UNITER pools the [CLS] state: with that pooling our head is its head, and its own model loads all
    if head is not None and task in UNITER_HEADS and getattr(backbone, "pooling", "cls") == "cls":
        state.update({UNITER_HEADS[task] + k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()})
    uniter = out / "uniter"
    uniter.mkdir(parents=True, exist_ok=True)
    save_file(state, str(uniter / "uniter.safetensors"), metadata={"format": "pt"})
    torch.save(state, uniter / "uniter.pt")  # tensors only: torch.load(..., weights_only=True) reads it
    cfg = backbone.config.to_dict()
    (uniter / "uniter.json").write_text(json.dumps({k: cfg[k] for k in UNITER_CONFIG_KEYS}, indent=2) + "\n")
    bert = BertModel(backbone.config, add_pooling_layer=True)
    missing, unexpected = bert.load_state_dict({k: v for k, v in backbone.state_dict().items()
                                                if k.startswith(("embeddings.", "encoder.", "pooler."))}, strict=False)
    if unexpected or [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]:
        raise LtvlError(f"the backbone's text encoder is not a BERT model (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]})", where="export", fix="report this: the UNITER layout changed")
    files = _save_transformers(bert, out / "bert")
    return sorted([*(p for p in uniter.iterdir() if p.is_file()), *files])


# (file under the export, our prefix of VLModel parameter names, the file's prefix): where each pruned
# tensor of ltvl's model is in each file a layout writes, so verify can check its zeros there
KEYS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "uniter": (("uniter/uniter.safetensors", "backbone.", "uniter."), ("bert/model.safetensors", "backbone.", "")),
    "lxmert": (("model/model.safetensors", "backbone.lxmert.", ""),),
    "vilt": (("model/model.safetensors", "backbone.vilt.", ""),),
}
WRITERS: dict[str, Callable[..., list[Path]]] = {
    "uniter": write_uniter, "lxmert": write_lxmert, "vilt": write_vilt}


def write_backbone(kind: str, backbone: nn.Module, out: Path, head: nn.Module | None = None,
                   task: str | None = None) -> list[Path]:
    """Write ``backbone`` (pruned weights already +0.0) under ``out`` in ``kind``'s layout, with the task
    ``head`` where the layout's own model has it; the files."""
    if kind not in WRITERS:
        raise LtvlError(f"no export layout for backbone kind {kind!r}", where="export", fix=f"one of {list(WRITERS)}")
    return WRITERS[kind](backbone, out, head, task)


def file_key(kind: str, relpath: str, name: str) -> str | None:
    """The key of our parameter ``name`` in the layout file ``relpath`` (None: that file does not hold it)."""
    for path, ours, theirs in KEYS[kind]:
        if path == relpath and name.startswith(ours):
            return theirs + name[len(ours):]
    return None
