import pytest
import torch

from ltvl.pruning import (
    Mask,
    Method,
    Scope,
    high_magnitude_mask,
    matched_random,
    prune_fraction_of_remaining,
    prune_to_sparsity,
    random_mask,
    select_prunable,
)
from ltvl.pruning.kselect import select_smallest, sortable_keys
from ltvl.util.errors import LtvlError
from tests.conftest import brute_force_prune


def _weights(seed=0, ties=False):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 9), (3, 5), (11, 4), (6,)]
    if ties:  # small integers: many exact ties, including zeros and negatives
        return {f"w{i}": torch.randint(-4, 5, s, generator=g).float() for i, s in enumerate(shapes)}
    return {f"w{i}": torch.randn(s, generator=g) for i, s in enumerate(shapes)}


def test_sortable_keys_preserve_float_order():
    x = torch.tensor([3.0, -0.0, 0.0, -1e-30, 1e-30, -2.5, float("inf"), -float("inf"), 7e30, -7e30])
    assert torch.equal(torch.argsort(sortable_keys(x), stable=True), torch.argsort(x, stable=True))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k", [0, 1, 17, 100, 180])
def test_select_smallest_equals_stable_sort(ties, k):
    w = _weights(1, ties)
    alive = {n: torch.rand(t.shape, generator=torch.Generator().manual_seed(5)) > 0.2 for n, t in w.items()}
    k = min(k, sum(int(a.sum()) for a in alive.values()))
    got = select_smallest({n: t.shape for n, t in w.items()}, lambda n, out: w[n].abs(), alive, k)
    ref = brute_force_prune(w, alive, k)
    assert all(torch.equal(got[n], ref[n]) for n in w)


@pytest.mark.parametrize("ties", [False, True])
def test_global_magnitude_prune_is_exact(ties):
    w = _weights(2, ties)
    n = sum(t.numel() for t in w.values())
    m = prune_to_sparsity(w, None, 0.37)
    assert m.n_pruned == round(0.37 * n)
    ref = brute_force_prune(w, None, round(0.37 * n))
    assert all(torch.equal(m.tensors[k], ~ref[k]) for k in w)


def test_iterative_prune_keeps_pruned_and_prunes_fraction_of_remaining():
    w = _weights(3)
    m1 = prune_fraction_of_remaining(w, None, 0.2)
    m2 = prune_fraction_of_remaining(w, m1, 0.2)
    n = m1.numel
    assert m1.n_pruned == round(0.2 * n)
    assert m2.n_pruned == m1.n_pruned + round(0.2 * (n - m1.n_pruned))
    assert all(not (m2.tensors[k] & ~m1.tensors[k]).any() for k in w)  # nothing revived
    assert m2.parent == m1.sha256
    # m2 adds exactly the smallest live weights of w
    extra = {k: m1.tensors[k] & ~m2.tensors[k] for k in w}
    ref = brute_force_prune(w, m1.tensors, m2.n_pruned - m1.n_pruned)
    assert all(torch.equal(extra[k], ref[k]) for k in w)


def test_layerwise_prunes_each_tensor_exactly():
    w = _weights(4)
    m = prune_to_sparsity(w, None, 0.5, scope=Scope.LAYERWISE)
    for k, t in w.items():
        assert int((~m.tensors[k]).sum()) == round(0.5 * t.numel())
        ref = brute_force_prune({k: t}, None, round(0.5 * t.numel()))
        assert torch.equal(~m.tensors[k], ref[k])


def test_random_pruning_matches_count_and_is_seeded():
    w = _weights(5)
    a = prune_to_sparsity(w, None, 0.6, method=Method.RANDOM, seed=1)
    b = prune_to_sparsity(w, None, 0.6, method=Method.RANDOM, seed=1)
    c = prune_to_sparsity(w, None, 0.6, method=Method.RANDOM, seed=2)
    assert a.equal(b) and not a.equal(c)
    assert a.n_pruned == round(0.6 * a.numel)
    mag = prune_to_sparsity(w, None, 0.6)
    rp = matched_random(mag, seed=3)
    assert rp.n_pruned == mag.n_pruned and not rp.equal(mag)
    lw = matched_random(prune_to_sparsity(w, None, 0.6, scope="layerwise"), seed=3, scope="layerwise")
    for k, t in w.items():
        assert int((~lw.tensors[k]).sum()) == round(0.6 * t.numel())
    with pytest.raises(LtvlError, match="needs a seed"):
        prune_to_sparsity(w, None, 0.6, method=Method.RANDOM)
    r = random_mask({"x": (100, 10)}, 0.25, seed=0)
    assert r.n_pruned == 250


def test_high_magnitude_keeps_the_smallest():
    w = _weights(6)
    low = prune_to_sparsity(w, None, 0.5)
    high = high_magnitude_mask(w, low)
    assert high.n_pruned == low.n_pruned
    kept_hi = torch.cat([w[k][high.tensors[k]].abs() for k in w])
    pruned_hi = torch.cat([w[k][~high.tensors[k]].abs() for k in w])
    assert kept_hi.max() <= pruned_hi.min()
    # at 50% with distinct magnitudes the high-magnitude mask is the complement of IMP's
    assert all(torch.equal(high.tensors[k], ~low.tensors[k]) for k in w)


def test_matches_torch_global_unstructured_on_bert(tiny_bert):
    import torch.nn.utils.prune as tprune
    params = select_prunable(tiny_bert)
    ours = prune_to_sparsity({n: p.detach().clone() for n, p in params.items()}, None, 0.42)
    mods = dict(tiny_bert.named_modules())
    tprune.global_unstructured([(mods[n.rsplit(".", 1)[0]], "weight") for n in params],
                               pruning_method=tprune.L1Unstructured, amount=ours.n_pruned)
    for n in params:
        theirs = mods[n.rsplit(".", 1)[0]].weight_mask.bool()
        assert torch.equal(theirs, ours.tensors[n]), n


def test_same_inputs_give_bit_identical_masks(tiny_bert):
    w = {n: p.detach() for n, p in select_prunable(tiny_bert).items()}
    assert prune_to_sparsity(w, None, 0.7).sha256 == prune_to_sparsity(w, None, 0.7).sha256


def test_bad_inputs():
    w = _weights(7)
    for s in (-0.1, 1.0, 1.5):
        with pytest.raises(LtvlError, match="outside"):
            prune_to_sparsity(w, None, s)
    bad = dict(w)
    bad["w1"] = w["w1"].clone()
    bad["w1"][0, 0] = float("nan")
    with pytest.raises(LtvlError, match="'w1' has 1 NaN/inf"):
        prune_to_sparsity(bad, None, 0.5)
    bad["w1"][0, 0] = float("inf")
    with pytest.raises(LtvlError, match="NaN/inf"):
        prune_to_sparsity(bad, None, 0.5)
    m = prune_to_sparsity(w, None, 0.5)
    with pytest.raises(LtvlError, match="below the mask's current sparsity"):
        prune_to_sparsity(w, m, 0.3)
    with pytest.raises(LtvlError, match="rate"):
        prune_fraction_of_remaining(w, None, 1.0)
    other = Mask({"w0": torch.ones(7, 9, dtype=torch.bool)})
    with pytest.raises(LtvlError, match="'w1'"):
        prune_to_sparsity(w, other, 0.5)
