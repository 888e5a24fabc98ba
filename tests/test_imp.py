"""The IMP chain: rounds, sparsities, lineage, resume after a crash, determinism, bad input."""
import json

import pytest

from ltvl.core.imp import ChainSpec, run_chain, run_chain_with_trainer
from ltvl.core.toy import ToyTask, make_toy_model
from ltvl.core.train import TrainConfig, Trainer
from ltvl.pruning import Method, Schedule, load_mask
from ltvl.util.errors import LtvlError

TASK = ToyTask(n_train=256, n_test=128)
SPEC = ChainSpec(train=TrainConfig(steps=20, lr=3e-3, batch_size=16), rewind_step=5,
                 schedule=Schedule("geometric", 0.5, 0.8))


def _run(root, spec=SPEC, reporter=None, train_fn=None):
    tr = Trainer(TASK, spec.train)
    return run_chain(spec, make_toy_model, train_fn or tr.train, tr.evaluate, root, reporter)


def test_chain_rounds_sparsities_and_lineage(tmp_path):
    seen = []
    res = _run(tmp_path, reporter=seen.append)
    assert [r.round for r in seen] == [0, 1, 2, 3]
    assert [round(r.sparsity, 3) for r in res.rounds] == [0.0, 0.5, 0.75, 0.875]
    for prev, cur in zip(res.rounds, res.rounds[1:]):
        assert cur.parent_sha256 == prev.mask_sha256 == load_mask(cur.mask_path).parent
        assert prev.next_mask_sha256 == cur.mask_sha256
    assert res.rounds[-1].next_mask_sha256 is None
    assert all(0.0 <= r.metrics["metric"] <= 1.0 for r in res.rounds)
    assert (res.directory / "theta_i.json").exists()
    doc = json.loads((res.directory / "spec.json").read_text())
    assert doc["format"] == 1 and doc["identity"]["rewind_step"] == 5 and doc["spec"]["rewind_step"] == 5
    # every mask on disk verifies against its hash
    for f in (res.directory / "masks").iterdir():
        assert load_mask(f).sha256 == f.name.split(".")[0]


def test_rerun_replays_without_training(tmp_path):
    first = _run(tmp_path)

    def must_not_train(*a, **k):
        raise AssertionError("a finished round was re-trained")
    again = _run(tmp_path, train_fn=must_not_train)
    assert all(r.replayed for r in again.rounds)
    assert [r.mask_sha256 for r in again.rounds] == [r.mask_sha256 for r in first.rounds]


def test_resume_after_crash_is_bit_identical(tmp_path):
    reference = _run(tmp_path / "ref")
    tr = Trainer(TASK, SPEC.train)
    calls = {"n": 0}

    def crashing_train(model, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # dies in the middle of round 2
            raise RuntimeError("simulated worker death")
        return tr.train(model, **kw)
    with pytest.raises(RuntimeError, match="simulated"):
        _run(tmp_path / "crash", train_fn=crashing_train)
    partial = sorted(p.name for p in (tmp_path / "crash" / SPEC.short_hash / "rounds").iterdir())
    assert partial == ["000.json", "001.json"]
    resumed = _run(tmp_path / "crash")
    assert [r.replayed for r in resumed.rounds] == [True, True, False, False]
    assert [r.mask_sha256 for r in resumed.rounds] == [r.mask_sha256 for r in reference.rounds]
    assert [r.metrics for r in resumed.rounds] == [r.metrics for r in reference.rounds]


def test_two_fresh_runs_give_identical_masks(tmp_path):
    a, b = _run(tmp_path / "a"), _run(tmp_path / "b")
    assert [r.mask_sha256 for r in a.rounds] == [r.mask_sha256 for r in b.rounds]


def test_random_pruning_chain_differs_from_imp(tmp_path):
    imp = _run(tmp_path)
    rp_spec = ChainSpec(**{**SPEC.__dict__, "method": Method.RANDOM})
    rp = _run(tmp_path, spec=rp_spec)
    assert rp.directory != imp.directory
    assert [round(r.sparsity, 3) for r in rp.rounds] == [round(r.sparsity, 3) for r in imp.rounds]
    assert rp.rounds[1].mask_sha256 != imp.rounds[1].mask_sha256


def test_corrupted_round_mask_is_detected(tmp_path):
    res = _run(tmp_path)
    path = res.rounds[2].mask_path
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(LtvlError, match="hash mismatch|corrupt"):
        _run(tmp_path)


def test_bad_chain_specs():
    with pytest.raises(LtvlError, match="rewind step 20"):
        ChainSpec(train=TrainConfig(steps=20), rewind_step=20).validate()
    with pytest.raises(LtvlError, match="schedule.rate"):
        ChainSpec(schedule=Schedule("geometric", 1.5, 0.5)).validate()
    with pytest.raises(LtvlError, match="trainer's TrainConfig"):
        run_chain_with_trainer(SPEC, make_toy_model, Trainer(TASK, TrainConfig(steps=3)), "/tmp/unused")


def test_layer_collapse_is_reported(tmp_path):
    """A tensor whose weights are all tiny is pruned whole by global magnitude pruning: say so."""
    import torch

    def factory():
        m = make_toy_model()
        with torch.no_grad():
            m.bert.pooler.dense.weight.mul_(1e-4)
        return m
    spec = ChainSpec(train=TrainConfig(steps=3, lr=1e-5, batch_size=8), schedule=Schedule("geometric", 0.5, 0.7))
    tr = Trainer(TASK, spec.train)
    res = run_chain(spec, factory, tr.train, tr.evaluate, tmp_path)
    assert res.rounds[0].fully_pruned == []
    assert "bert.pooler.dense.weight" in res.rounds[-1].fully_pruned
