"""Masked training is exact, rewinding restores the optimizer and schedule, runs are deterministic."""
import pytest
import torch

from ltvl.core.toy import ToyTask, make_toy_model
from ltvl.core.train import TrainConfig, Trainer
from ltvl.pruning import MaskEnforcer, prune_to_sparsity, select_prunable


@pytest.fixture(scope="module")
def task():
    return ToyTask(n_train=256, n_test=128)


def _masked(model, sparsity=0.6):
    w = {n: p.detach() for n, p in select_prunable(model).items()}
    return prune_to_sparsity(w, None, sparsity)


def _assert_pruned_zero(model, mask):
    params = dict(model.named_parameters())
    for n, keep in mask.tensors.items():
        assert (params[n].detach()[~keep] == 0).all(), n


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_pruned_weights_stay_zero_under_adamw_decay_and_amp(task, amp):
    model = make_toy_model()
    mask = _masked(model)
    cfg = TrainConfig(steps=15, lr=1e-2, weight_decay=0.5, amp=amp, batch_size=16)
    Trainer(task, cfg).train(model, enforcer=MaskEnforcer(model, mask))
    _assert_pruned_zero(model, mask)
    # and the surviving weights did train
    params = dict(model.named_parameters())
    fresh = dict(make_toy_model().named_parameters())
    n = mask.names[0]
    assert not torch.equal(params[n][mask.tensors[n]], fresh[n][mask.tensors[n]])


def test_pruned_weights_get_zero_gradient(task):
    model = make_toy_model()
    mask = _masked(model)
    MaskEnforcer(model, mask)
    batch = task.batch(0, 16, 0)
    task.loss(model, batch).backward()
    params = dict(model.named_parameters())
    for n, keep in mask.tensors.items():
        assert (params[n].grad[~keep] == 0).all()
        assert params[n].grad[keep].abs().sum() > 0


def test_stale_momentum_cannot_revive_weights(task):
    """Momentum from dense training (a rewind point after step i) is cleared where pruned."""
    model = make_toy_model()
    tr = Trainer(task, TrainConfig(steps=10, lr=1e-2, batch_size=16))
    theta_i = tr.train(model, until=5, capture_at=[5]).captured[5]
    mask = _masked(model, 0.8)
    model2 = make_toy_model()
    enf = MaskEnforcer(model2, mask)
    tr.train(model2, enforcer=enf, start=theta_i)
    _assert_pruned_zero(model2, mask)


def test_rewind_restores_optimizer_and_schedule_exactly(task):
    """Train 0→t straight, versus 0→i, capture θi, then θi→t in a new model: bit-identical."""
    cfg = TrainConfig(steps=12, lr=5e-3, batch_size=16, warmup_ratio=0.25)
    straight = make_toy_model()
    Trainer(task, cfg).train(straight)
    first = make_toy_model()
    point = Trainer(task, cfg).train(first, until=5, capture_at=[5]).captured[5]
    assert point.step == 5 and point.optimizer["state"]  # Adam moments were captured
    resumed = make_toy_model()
    Trainer(task, cfg).train(resumed, start=point)
    for (n, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), n


def test_rewind_point_roundtrip_and_hash(tmp_path, task):
    from ltvl.core.train import RewindPoint
    from ltvl.util.errors import LtvlError
    model = make_toy_model()
    p = Trainer(task, TrainConfig(steps=4, batch_size=8)).train(model, capture_at=[2]).captured[2]
    sha = p.save(tmp_path / "ti.pt")
    back = RewindPoint.load(tmp_path / "ti.pt", sha)
    assert back.step == 2 and all(torch.equal(back.model[k], p.model[k]) for k in p.model)
    with pytest.raises(LtvlError, match="hash mismatch"):
        RewindPoint.load(tmp_path / "ti.pt", "0" * 64)


def test_grad_accumulation_runs_and_learns(task):
    model = make_toy_model()
    tr = Trainer(task, TrainConfig(steps=60, lr=2e-3, batch_size=16, grad_accum=2))
    out = tr.train(model)
    assert out.steps_run == 60 and out.last_loss < 1.2


def test_bad_train_config():
    from ltvl.util.errors import LtvlError
    with pytest.raises(LtvlError, match="train.steps"):
        TrainConfig(steps=0).validate()
    with pytest.raises(LtvlError, match="amp"):
        TrainConfig(amp="fp8").validate()


def test_training_from_a_rewind_point_does_not_mutate_it(task):
    model = make_toy_model()
    tr = Trainer(task, TrainConfig(steps=10, lr=1e-2, batch_size=16))
    point = tr.train(model, until=4, capture_at=[4]).captured[4]
    before = {k: v.clone() for k, v in point.optimizer["state"][0].items()}
    m2 = make_toy_model()
    tr.train(m2, enforcer=MaskEnforcer(m2, _masked(m2)), start=point)
    assert all(torch.equal(before[k], point.optimizer["state"][0][k]) for k in before)
