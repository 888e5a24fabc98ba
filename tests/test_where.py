"""Where the sparsity is (#33 item 5): tensor names of every backbone map to their block and module
kind, and per-kind sparsity and IoU equal a count done by hand."""

import torch

from ltvl.pruning import Mask
from ltvl.report.where import group_sparsity, kind_iou, module_of


def test_names_of_each_backbone_map_to_block_and_kind():
    assert module_of("backbone.bert.encoder.layer.3.attention.self.query.weight") == ("layer 3", "attn Q")
    assert module_of("uniter.encoder.layer.0.attention.output.dense.weight") == ("layer 0", "attn out")
    assert module_of("uniter.encoder.layer.0.intermediate.dense.weight") == ("layer 0", "FFN in")
    assert module_of("uniter.encoder.layer.0.output.dense.weight") == ("layer 0", "FFN out")
    assert module_of("vilt.encoder.layer.11.attention.attention.value.weight") == ("layer 11", "attn V")
    assert module_of("lxmert.encoder.r_layers.2.attention.self.key.weight") == ("vision 2", "attn K")
    assert module_of("lxmert.encoder.x_layers.1.visual_attention.att.query.weight") == ("cross 1", "cross-attn Q")
    assert module_of("lxmert.encoder.x_layers.1.visual_attention.output.dense.weight") == ("cross 1", "cross-attn out")
    assert module_of("lxmert.encoder.x_layers.0.lang_self_att.self.value.weight") == ("cross 0", "attn V")
    assert module_of("lxmert.encoder.x_layers.0.lang_self_att.output.dense.weight") == ("cross 0", "attn out")
    assert module_of("lxmert.encoder.x_layers.0.visn_inter.dense.weight") == ("cross 0", "FFN in")
    assert module_of("lxmert.encoder.x_layers.0.lang_output.dense.weight") == ("cross 0", "FFN out")
    assert module_of("backbone.pooler.dense.weight") == ("pooler", "pooler")


def test_sparsity_and_iou_per_kind_equal_a_hand_count():
    q, f = "encoder.layer.0.attention.self.query.weight", "encoder.layer.1.intermediate.dense.weight"
    a = Mask({q: torch.tensor([[True, False], [False, False]]), f: torch.tensor([[True, True, True, False]])})
    b = Mask({q: torch.tensor([[True, True], [False, False]]), f: torch.tensor([[False, True, True, True]])})
    s = group_sparsity(a)
    assert list(s.index) == ["layer 0", "layer 1"] and list(s.columns) == ["attn Q", "FFN in"]
    assert s.loc["layer 0", "attn Q"] == 0.75 and s.loc["layer 1", "FFN in"] == 0.25
    assert s.loc["layer 0", "FFN in"] != s.loc["layer 0", "FFN in"]  # no such tensor: NaN, not 0
    iou = kind_iou(a, b)
    assert iou["attn Q"] == 1 / 2 and iou["FFN in"] == 2 / 4 and iou["all"] == 3 / 6
