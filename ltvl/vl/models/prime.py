"""θ'0 (SPEC §3): the IMP mask trained from another initialisation, the pre-trained BERT weights.

A BERT checkpoint (a transformers directory or file, ``bert.*`` or bare names, ``.safetensors``
or ``.bin``, ``LayerNorm.gamma/beta`` included) is loaded into the backbone by BERT's names:

- UNITER-style: the text embeddings, every encoder layer and the pooler; the image embeddings
  have no BERT counterpart and are freshly initialised (BERT's init, seeded), as UNITER itself
  was before pre-training;
- LXMERT: the embeddings, the language layers (BERT's layers past LXMERT's 9 are left out) and
  the pooler; the vision and cross-modality layers and ``visn_fc`` are freshly initialised;
- ViLT has ViT-style layers with no BERT counterpart: θ'0 for ViLT is another ViLT checkpoint.

A checkpoint of the preset's own model type (another UNITER, LXMERT or ViLT) is loaded whole.
A tensor BERT defines that the file lacks is an error unless ``allow_missing`` names it; a
shape that differs is always an error (a 768-wide BERT does not fit a 384-wide MiniLM).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ltvl.util.errors import LtvlError
from ltvl.vl.models import convert
from ltvl.vl.models.checkpoint import KIND_NAMES, content_sha256, inspect, read_state

ACCEPTS = {"uniter": ("bert", "uniter"), "lxmert": ("bert", "lxmert"), "vilt": ("vilt",)}
_BERT_PARTS = {"uniter": re.compile(r"^(embeddings|encoder|pooler)\."),
               "lxmert": re.compile(r"^(embeddings|encoder\.layer\.|pooler)\.")}
_SUB = {"uniter": "", "lxmert": "lxmert", "vilt": "vilt"}  # the backbone's submodule the weights go into


def check_prime(path: str, preset_kind: str, where: str = "prime_checkpoint") -> str:
    """θ'0's content hash, after checking its model type fits the backbone (before any compute)."""
    files, insp = inspect(path, where)
    if insp.kind not in ACCEPTS[preset_kind]:
        want = " or ".join(KIND_NAMES[k] for k in ACCEPTS[preset_kind])
        raise LtvlError(
            f"{files.path} is a {KIND_NAMES.get(insp.kind, insp.kind)} checkpoint ({insp.evidence}); θ'0 for a "
            f"{KIND_NAMES[preset_kind]} backbone needs a {want} checkpoint", where=where,
            fix="θ'0 is the paper's BERT init: give a BERT checkpoint (e.g. the bert-base-cased directory)"
            if preset_kind != "vilt" else "ViLT's layers have no BERT counterpart: give another ViLT checkpoint")
    return content_sha256(files)


def _body(state: dict, kind: str, preset_kind: str, source: str):
    if kind == "bert":
        return convert.bert_body(state, source)
    if kind == "uniter":
        return convert.uniter_body(state, source)
    if kind == "lxmert":
        return convert.airsplay_lxmert_body(state, source)
    report = convert.LoadReport(source, kind)
    body = {}
    for k, v in state.items():
        if k.startswith("vilt."):
            body[k[len("vilt."):]] = v
        else:
            report.dropped_heads.append(k)
    return body, report


def _fresh(name: str, like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """BERT's initialisation for a tensor θ'0's checkpoint has no counterpart for."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "bias" or like.dim() == 0:
        return torch.zeros_like(like)
    if like.dim() == 1:  # LayerNorm weights
        return torch.ones_like(like)
    return torch.randn(like.shape, generator=gen, dtype=torch.float32).mul_(0.02).to(like.dtype)


def prime_state(path: str, model: nn.Module, preset_kind: str, seed: int, allow_missing: str | None = None,
                where: str = "prime_checkpoint") -> tuple[dict[str, torch.Tensor], convert.LoadReport]:
    """θ'0 as ``{model name: tensor}`` for ``model`` (a VLModel: ``backbone.*``): the checkpoint's
    tensors by the reference names, plus BERT's init for the parts BERT has no counterpart for."""
    check_prime(path, preset_kind, where)
    files, insp = inspect(path, where)
    body, report = _body(read_state(files), insp.kind, preset_kind, str(files.path))
    sub_name = _SUB[preset_kind]
    target = model.backbone.get_submodule(sub_name) if sub_name else model.backbone
    own = target.state_dict()
    depth = len({m.group(1) for k in own for m in [re.match(r"encoder\.layer\.(\d+)\.", k)] if m})
    required = _BERT_PARTS.get(preset_kind) if insp.kind == "bert" else None
    convert.load_state(target, body, report, depth or None, required)
    convert.check_missing(report, allow_missing, str(files.path))
    prefix = "backbone." + (f"{sub_name}." if sub_name else "")
    out = {prefix + n: body[n] for n in report.loaded}
    gen = torch.Generator().manual_seed(seed)
    for n in sorted(report.fresh + report.missing):
        out[prefix + n] = _fresh(n, own[n], gen)
    return out, report
