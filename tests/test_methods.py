"""Pruning methods are one registry: a method registered there prunes, is a schema choice, names
its arm, and is checked by the chain spec; the built-in names keep every chain's hash."""

import pytest
import torch

from ltvl.core.chain import ChainSpec
from ltvl.params.schema import INFO
from ltvl.pruning import Method, prune_to_sparsity
from ltvl.pruning.methods import METHODS, PruningMethod, get_method
from ltvl.util.errors import LtvlError


@pytest.fixture
def registered(monkeypatch):
    """A toy method: prune the weights with the lowest flat index first."""
    def by_index(weights, seed):
        return lambda name, out: out.copy_(torch.arange(out.numel(), dtype=out.dtype).view_as(out))
    method = PruningMethod("by_index", "prune by position (a test)", "by-index", "by_index", by_index)
    monkeypatch.setitem(METHODS, method.name, method)
    return method


def test_the_schema_offers_exactly_the_registered_methods(registered):
    assert INFO["method"].allowed() == tuple(METHODS) and "by_index" in INFO["method"].allowed()


def test_a_registered_method_prunes_is_checked_and_names_its_arm(registered):
    w = {"a": torch.randn(4, 4)}
    mask = prune_to_sparsity(w, None, 0.25, method="by_index")
    assert mask.tensors["a"].flatten().tolist() == [False] * 4 + [True] * 12
    assert mask.metadata["method"] == "by_index"
    ChainSpec(method="by_index").validate()
    from ltvl.tracking.arms import SPARSE_CONTROL, arm_label
    assert arm_label(ticket=False, init="by_index") == "by-index"
    assert arm_label(ticket=False, init=get_method("all").init_label) == SPARSE_CONTROL == get_method("all").arm


def test_an_unknown_method_is_refused_naming_the_registered_ones():
    with pytest.raises(LtvlError, match=r"(?s)unknown pruning method 'smallest'.*magnitude, random"):
        ChainSpec(method="smallest").validate()


def test_the_built_in_names_keep_every_chain_hash():
    for m in Method:
        assert ChainSpec(method=m.value).sha256 == ChainSpec(method=m).sha256
    assert ChainSpec(method="magnitude").sha256 == ChainSpec().sha256  # the default is not hashed
    assert ChainSpec(method="all").prunes_all and not ChainSpec(method="random").prunes_all
