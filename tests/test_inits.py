import torch

from ltvl.core.toy import make_toy_model
from ltvl.pruning import load_matching, reinitialise, select_prunable, shuffle_within_tensors, snapshot


def test_shuffle_permutes_within_each_tensor_deterministically():
    a, b = make_toy_model(), make_toy_model()
    names = list(select_prunable(a))
    before = snapshot(a)
    shuffle_within_tensors(a, names, seed=3)
    shuffle_within_tensors(b, names, seed=3)
    for n in names:
        x, y = a.state_dict()[n], before[n]
        assert not torch.equal(x, y)
        assert torch.equal(torch.sort(x.flatten()).values, torch.sort(y.flatten()).values)
        assert torch.equal(x, b.state_dict()[n])
    untouched = [k for k in before if k not in names]
    assert all(torch.equal(a.state_dict()[k], before[k]) for k in untouched)


def test_load_matching_reports_what_came_from_where():
    model = make_toy_model(seed=0)
    other = snapshot(make_toy_model(seed=1))
    other.pop("head.weight")
    other["bert.pooler.dense.weight"] = torch.zeros(3, 3)
    other["extra.thing"] = torch.zeros(1)
    rep = load_matching(model, other)
    assert "head.weight" in rep.initialised
    assert rep.shape_mismatch == ["bert.pooler.dense.weight"]
    assert rep.unused == ["extra.thing"]
    n = "bert.encoder.layer.0.attention.self.query.weight"
    assert n in rep.loaded and torch.equal(model.state_dict()[n], other[n])


def test_reinitialise_is_seeded_and_changes_weights():
    a, b, c = make_toy_model(), make_toy_model(), make_toy_model()
    reinitialise(a, 1), reinitialise(b, 1), reinitialise(c, 2)
    n = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(a.state_dict()[n], b.state_dict()[n])
    assert not torch.equal(a.state_dict()[n], c.state_dict()[n])
    assert not torch.equal(a.state_dict()[n], make_toy_model().state_dict()[n])
