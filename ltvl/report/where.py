"""Where the sparsity is (#33 item 5): a mask's sparsity per layer and per module type (attention
Q/K/V/output, feed-forward in/out, pooler; LXMERT's language, vision and cross-modality layers),
and the overlap of two masks per module type (do IMP and Wanda choose the same weights?).
Pure functions of masks, read by ``ltvl report``.

A tensor's block and kind come from its name, in every backbone's own naming: BERT, UNITER and
ViLT (``encoder.layer.N.attention.self.query``), transformers' LXMERT (``encoder.layer`` language,
``encoder.r_layers`` vision, ``encoder.x_layers`` cross-modality with ``visual_attention``,
``lang_self_att``/``visn_self_att``, ``lang_inter``/``visn_inter``, ``lang_output``/``visn_output``).
"""

from __future__ import annotations

import re

import pandas as pd
import torch

from ltvl.pruning.mask import Mask

KINDS = ("attn Q", "attn K", "attn V", "attn out", "cross-attn Q", "cross-attn K", "cross-attn V", "cross-attn out",
         "FFN in", "FFN out", "pooler", "other")
_BLOCK = re.compile(r"(?:^|\.)(layer|r_layers|x_layers)\.(\d+)\.")
_STACK = {"layer": "layer", "r_layers": "vision", "x_layers": "cross"}


def module_of(name: str) -> tuple[str, str]:
    """(block, kind) of a prunable tensor: ``("layer 3", "attn Q")``, ``("cross 1", "cross-attn out")``."""
    if "pooler" in name:
        return "pooler", "pooler"
    m = _BLOCK.search(name)
    block = f"{_STACK[m.group(1)]} {int(m.group(2))}" if m else "other"
    cross = "visual_attention" in name  # LXMERT's cross-modality attention
    prefix = "cross-attn" if cross else "attn"
    for pat, kind in ((r"\.query\.", "Q"), (r"\.key\.", "K"), (r"\.value\.", "V")):
        if re.search(pat, name):
            return block, f"{prefix} {kind}"
    if re.search(r"(attention|_att)\.output\.|attention\.output\.dense|\.att\.output", name) or (
            cross and ".output." in name):
        return block, f"{prefix} out"
    if re.search(r"(intermediate|_inter)\.", name):
        return block, "FFN in"
    if re.search(r"(\.output|_output)\.", name):
        return block, "FFN out"
    return block, "other"


def _order(block: str) -> tuple:
    stack, _, idx = block.partition(" ")
    return (["layer", "vision", "cross", "pooler", "other"].index(stack) if stack in
            ("layer", "vision", "cross", "pooler", "other") else 9, int(idx) if idx.isdigit() else 0)


def group_sparsity(mask: Mask) -> pd.DataFrame:
    """Sparsity per block (rows, in model order) and module kind (columns); NaN where a block has no
    tensor of that kind."""
    pruned: dict[tuple[str, str], int] = {}
    total: dict[tuple[str, str], int] = {}
    for name, t in mask.tensors.items():
        key = module_of(name)
        pruned[key] = pruned.get(key, 0) + int((~t).sum())
        total[key] = total.get(key, 0) + t.numel()
    blocks = sorted({b for b, _ in total}, key=_order)
    kinds = [k for k in KINDS if any(kk == k for _, kk in total)]
    return pd.DataFrame([[pruned[(b, k)] / total[(b, k)] if (b, k) in total else float("nan") for k in kinds]
                         for b in blocks], index=blocks, columns=kinds)


def kind_iou(a: Mask, b: Mask) -> dict[str, float]:
    """IoU of the kept weights of two masks per module kind, and over everything (``all``)."""
    a.check_compatible(b.shapes, what="other mask")
    inter: dict[str, int] = {}
    union: dict[str, int] = {}
    for name, ta in a.tensors.items():
        tb = b.tensors[name]
        kind = module_of(name)[1]
        inter[kind] = inter.get(kind, 0) + int(torch.logical_and(ta, tb).sum())
        union[kind] = union.get(kind, 0) + int(torch.logical_or(ta, tb).sum())
    out = {k: inter[k] / union[k] if union[k] else 1.0 for k in KINDS if k in union}
    out["all"] = a.iou(b)
    return out
