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


def _trained(task, cfg, flags=None, monkeypatch=None, **kw):
    tr = Trainer(task, cfg)
    if flags is not None:
        monkeypatch.setattr(tr, "_kernel_flags", lambda: flags)
    model = make_toy_model()
    out = tr.train(model, **kw)
    return model, out


def test_the_reference_adamw_is_bit_identical_to_torch_s_per_tensor_loop(task, monkeypatch):
    """ltvl runs the reference AdamW as torch's multi-tensor loop (faster); every store trained before
    with the per-tensor loop must stay reproducible, masked or not."""
    cfg = TrainConfig(steps=12, lr=5e-3, batch_size=16, weight_decay=0.1)
    ours, _ = _trained(task, cfg)
    plain, _ = _trained(task, cfg, {"foreach": False, "fused": None}, monkeypatch)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), plain.state_dict().values()))
    mask = _masked(make_toy_model())
    m1, m2 = make_toy_model(), make_toy_model()
    Trainer(task, cfg).train(m1, enforcer=MaskEnforcer(m1, mask))
    tr = Trainer(task, cfg)
    monkeypatch.setattr(tr, "_kernel_flags", lambda: {"foreach": False, "fused": None})
    tr.train(m2, enforcer=MaskEnforcer(m2, mask))
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_fused_adamw_is_its_own_deterministic_run_and_rewinds_exactly(task):
    ref = TrainConfig(steps=12, lr=5e-3, batch_size=16, warmup_ratio=0.25)
    fused = TrainConfig(steps=12, lr=5e-3, batch_size=16, warmup_ratio=0.25, adamw_impl="fused")
    a, _ = _trained(task, fused)
    b, _ = _trained(task, fused)
    r, _ = _trained(task, ref)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), r.state_dict().values())), \
        "fused rounds differently: if it ever matches the reference, the flag no longer reaches torch"
    # θi from a fused run resumes into the same fused run, and its file does not name the kernels
    _, out = _trained(task, fused, until=5, capture_at=[5])
    point = out.captured[5]
    assert all(g["fused"] is None and g["foreach"] is None for g in point.optimizer["param_groups"])
    resumed = make_toy_model()
    Trainer(task, fused).train(resumed, start=point)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), resumed.state_dict().values()))


def test_adamw_impl_is_checked_and_only_a_non_default_one_enters_identity():
    from ltvl.core.identity import identity
    from ltvl.params.resolve import resolve_chain
    from ltvl.util.errors import LtvlError
    with pytest.raises(LtvlError, match="adamw_impl") as e:
        TrainConfig(adamw_impl="apex").validate()
    assert "reference or fused" in str(e.value)
    with pytest.raises(LtvlError, match=r"params\.adamw_impl") as e:  # a config's typo, named before any compute
        resolve_chain({"task": "vqa", "data": "synthetic:vqa", "preset": "tiny", "adamw_impl": "fussed"})
    assert "fused" in str(e.value)
    assert "adamw_impl" not in identity(TrainConfig())
    base = {"task": "vqa", "data": "synthetic:vqa", "preset": "tiny", "steps": 10}
    ref, fused = resolve_chain(base).chain, resolve_chain({**base, "adamw_impl": "fused"}).chain
    assert ref.train.adamw_impl == "reference" and fused.train.adamw_impl == "fused"
    assert identity(fused)["train"] == {**identity(ref)["train"], "adamw_impl": "fused"}
    # the dense spec hashes its TrainConfig whole: the field added later enters only when set
    from ltvl.core.dense import DenseSpec
    assert "adamw_impl" not in identity(DenseSpec.of(ref))["train"]
    assert identity(DenseSpec.of(fused))["train"]["adamw_impl"] == "fused"
