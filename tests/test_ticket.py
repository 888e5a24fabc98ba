import pytest
import torch

from ltvl.core.baselines import Baseline, prepare, train_ticket
from ltvl.core.toy import ToyTask, make_toy_model
from ltvl.core.train import TrainConfig, Trainer
from ltvl.pruning import prune_to_sparsity, select_prunable, snapshot


@pytest.fixture(scope="module")
def mask():
    m = make_toy_model()
    return prune_to_sparsity({n: p.detach() for n, p in select_prunable(m).items()}, None, 0.5)


@pytest.mark.parametrize("baseline", list(Baseline))
def test_every_baseline_trains_at_the_same_sparsity(baseline, mask):
    other = snapshot(make_toy_model(seed=9))
    run = train_ticket(baseline, mask, make_toy_model, Trainer(ToyTask(n_train=128, n_test=64),
                       TrainConfig(steps=3, batch_size=8)), seed=1, other_state=other)
    assert run.mask.n_pruned == mask.n_pruned
    assert 0.0 <= run.metrics["metric"] <= 1.0
    assert (run.mask.equal(mask)) == (baseline not in (Baseline.RANDOM, Baseline.HIGH_MAGNITUDE))


def test_baseline_weights_differ_as_specified(mask):
    theta0 = snapshot(make_toy_model())
    n = mask.names[0]
    shuf, _, _ = prepare("theta0_shuffled", mask, make_toy_model, seed=1)
    assert not torch.equal(shuf.state_dict()[n], theta0[n])
    prime, _, rep = prepare("theta0_prime", mask, make_toy_model, other_state=snapshot(make_toy_model(seed=4)))
    assert not torch.equal(prime.state_dict()[n], theta0[n]) and n in rep.loaded
    imp, m, _ = prepare("imp", mask, make_toy_model)
    assert torch.equal(imp.state_dict()[n], theta0[n]) and m is mask
