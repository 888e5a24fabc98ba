import pytest
from torch import nn

from ltvl.pruning import PrunableSpec, describe, select_from_state, select_prunable
from ltvl.util.errors import LtvlError


def test_default_selects_encoder_linear_weights_and_pooler(tiny_bert):
    names = list(select_prunable(tiny_bert))
    expected = {f"encoder.layer.{i}.{s}.weight" for i in range(2) for s in
                ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                 "intermediate.dense", "output.dense")} | {"pooler.dense.weight"}
    assert set(names) == expected
    assert not any("embeddings" in n or "LayerNorm" in n or n.endswith("bias") for n in names)


def test_task_head_outside_encoder_is_not_pruned(tiny_bert):
    class WithHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert, self.head = tiny_bert, nn.Linear(32, 3)
    names = select_prunable(WithHead())
    assert "head.weight" not in names and "bert.pooler.dense.weight" in names


def test_include_exclude(tiny_bert):
    spec = PrunableSpec.of(include=[r"attention\.self"], exclude=[r"layer\.1\."])
    assert set(select_prunable(tiny_bert, spec)) == {f"encoder.layer.0.attention.self.{k}.weight"
                                                      for k in ("query", "key", "value")}


def test_pattern_that_selects_nothing_is_an_error(tiny_bert):
    with pytest.raises(LtvlError, match="include pattern 'decoder' selects no parameter"):
        select_prunable(tiny_bert, PrunableSpec.of(include=["decoder"]))
    with pytest.raises(LtvlError, match="exclude pattern 'nothing'"):
        select_prunable(tiny_bert, PrunableSpec.of(exclude=["nothing"]))
    with pytest.raises(LtvlError, match="leave no prunable"):
        select_prunable(tiny_bert, PrunableSpec.of(exclude=["."]))
    with pytest.raises(LtvlError, match="invalid regex"):
        select_prunable(tiny_bert, PrunableSpec.of(include=["("]))


def test_checkpoint_selection_matches_module_selection(tiny_bert):
    from_module = select_prunable(tiny_bert)
    from_state = select_from_state(tiny_bert.state_dict())
    assert set(from_module) == set(from_state)


def test_describe_lists_counts(tiny_bert):
    sel = select_prunable(tiny_bert)
    text = describe(sel)
    total = sum(p.numel() for p in sel.values())
    assert f"{len(sel)} tensors, {total:,} prunable weights" in text
