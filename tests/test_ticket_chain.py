"""Ticket chains: baselines at an IMP chain's sparsities, and transfer, one resumable round per mask."""
import pytest

from ltvl.core.baselines import Baseline
from ltvl.core.imp import ChainSpec, run_chain
from ltvl.core.ticket_chain import TicketSpec, chain_masks, run_ticket_chain
from ltvl.core.toy import ToyTask, make_toy_model
from ltvl.core.train import TrainConfig, Trainer
from ltvl.pruning import Schedule, load_mask
from ltvl.util.errors import LtvlError

TASK = ToyTask(n_train=256, n_test=128)
TRAIN = TrainConfig(steps=10, lr=3e-3, batch_size=16)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    tr = Trainer(TASK, TRAIN)
    spec = ChainSpec(train=TRAIN, rewind_step=2, schedule=Schedule("geometric", 0.5, 0.8))
    return run_chain(spec, make_toy_model, tr.train, tr.evaluate, root), root


def _spec(baseline, chain_result):
    return TicketSpec(Baseline(baseline), chain_result.spec.sha256, "toy", TRAIN, chain_result.spec.prunable, ())


@pytest.mark.parametrize("baseline", ["theta0_shuffled", "high_magnitude", "random", "imp"])
def test_baseline_tickets_follow_the_chain_sparsities(chain, baseline, tmp_path):
    res, root = chain
    sources = chain_masks(root, res.spec)[1]
    assert [s.round for s in sources] == [1, 2, 3]
    out = run_ticket_chain(_spec(baseline, res), sources, make_toy_model, Trainer(TASK, TRAIN), tmp_path)
    assert [r.round for r in out] == [1, 2, 3]
    for r, src in zip(out, res.rounds[1:]):
        assert abs(r.sparsity - src.sparsity) < 1e-6
        assert r.source_mask_sha256 == src.mask_sha256
        assert load_mask(r.mask_path).sha256 == r.mask_sha256
        same_mask = r.mask_sha256 == src.mask_sha256
        assert same_mask == (baseline in ("theta0_shuffled", "imp"))  # RP / high-magnitude prune other weights
        assert 0 <= r.metrics["metric"] <= 1
        # every baseline ticket carries the invariants a chain round does, measured on its trained model
        assert r.checks["ok"] and r.checks["pruned_nonzero"] == 0 and r.checks["sparsity_ok"]
        assert r.checks["optimizer_state_masked"] is True and r.checks["sparsity_measured"] == r.sparsity


def test_ticket_chain_replays_finished_rounds(chain, tmp_path):
    res, root = chain
    sources = chain_masks(root, res.spec)[1]
    first = run_ticket_chain(_spec("theta0_shuffled", res), sources, make_toy_model, Trainer(TASK, TRAIN), tmp_path)

    class NoTrain(Trainer):
        def train(self, *a, **k):
            raise AssertionError("a finished ticket round was re-trained")
    again = run_ticket_chain(_spec("theta0_shuffled", res), sources, make_toy_model, NoTrain(TASK, TRAIN), tmp_path)
    assert all(r.replayed for r in again) and [r.metrics for r in again] == [r.metrics for r in first]
    assert [r.checks for r in again] == [r.checks for r in first]  # the record keeps them


def test_a_ticket_whose_pruned_weights_move_is_recorded_as_a_breach(chain, tmp_path):
    """Something writes into the pruned weights after training (a hook, an optimizer the enforcer does
    not know): the round says so rather than passing as a ticket."""
    import torch

    class Leaky(Trainer):
        def train(self, model, **kw):
            out = super().train(model, **kw)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01)
            return out

    res, root = chain
    sources = chain_masks(root, res.spec)[1][:1]
    out = run_ticket_chain(_spec("theta0_shuffled", res), sources, make_toy_model, Leaky(TASK, TRAIN), tmp_path)
    assert not out[0].checks["ok"] and out[0].checks["pruned_nonzero"] > 0


def test_ticket_bad_input(chain, tmp_path):
    res, root = chain
    with pytest.raises(LtvlError, match="no finished pruned rounds"):
        chain_masks(tmp_path / "nothing", ChainSpec())
    with pytest.raises(LtvlError, match="theta0_prime baseline needs another checkpoint"):
        run_ticket_chain(_spec("theta0_prime", res), chain_masks(root, res.spec)[1], make_toy_model,
                         Trainer(TASK, TRAIN), tmp_path)
    from ltvl.params.resolve import resolve_ticket
    with pytest.raises(LtvlError, match="params.ticket: unknown ticket 'lucky'"):
        resolve_ticket({"ticket": "lucky", "source": {}})
    with pytest.raises(LtvlError, match="params.source must be dict or list, got int 3"):
        resolve_ticket({"ticket": "imp", "source": 3})
    with pytest.raises(LtvlError, match="ticket source must be a chain's params or a list of mask files"):
        resolve_ticket({"ticket": "imp", "source": [3]})
    with pytest.raises(LtvlError, match="prime_checkpoint"):
        resolve_ticket({"ticket": "theta0_prime", "source": {}})
