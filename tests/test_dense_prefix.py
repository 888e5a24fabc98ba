"""The shared dense prefix: chains differing only in rewind step / rate / method train one dense run."""
import dataclasses

from ltvl.core.imp import ChainSpec, run_chain
from ltvl.core.toy import ToyTask, make_toy_model
from ltvl.core.train import TrainConfig, Trainer
from ltvl.pruning import Method, Schedule, load_mask

TASK = ToyTask(n_train=256, n_test=128)
TRAIN = TrainConfig(steps=12, lr=3e-3, batch_size=16)
REWINDS, RATES = (0, 3, 6), (0.5, 0.7)


class CountingTrainer:
    """A real Trainer that records every training call (dense = no mask)."""

    def __init__(self, cfg: TrainConfig):
        self.inner, self.calls = Trainer(TASK, cfg), []

    def train(self, model, **kw):
        out = self.inner.train(model, **kw)
        self.calls.append({"dense": kw.get("enforcer") is None, "steps": out.steps_run, "start": kw.get("start")})
        return out


def _spec(rewind, rate, method=Method.MAGNITUDE):
    return ChainSpec(train=TRAIN, rewind_step=rewind, schedule=Schedule("geometric", rate, 0.8), method=method)


def _grid(root, counter):
    out = {}
    for rewind in REWINDS:
        for rate in RATES:
            out[rewind, rate] = run_chain(_spec(rewind, rate), make_toy_model, counter.train, counter.inner.evaluate,
                                          root, share_rewinds=REWINDS)
    return out


def test_three_rewinds_by_two_rates_execute_exactly_one_dense_training(tmp_path):
    counter = CountingTrainer(TRAIN)
    chains = _grid(tmp_path, counter)
    dense = [c for c in counter.calls if c["dense"]]
    assert len(dense) == 1 and dense[0]["steps"] == TRAIN.steps and dense[0]["start"] is None
    assert sum(c.rounds[0].steps_trained for c in chains.values()) == TRAIN.steps
    # one dense record: same round-0 metrics everywhere, and θi stored once per rewind step
    assert all(c.rounds[0].metrics == chains[0, 0.5].rounds[0].metrics for c in chains.values())
    dense_dirs = list((tmp_path / "dense").iterdir())
    assert len(dense_dirs) == 1
    assert sorted(p.name for p in (dense_dirs[0] / "theta").glob("*.pt")) == ["0.pt", "3.pt", "6.pt"]
    assert not list(tmp_path.glob("*/theta_i.pt"))  # chains reference θi, they do not copy it
    # the first pruned mask is shared by every chain with the same rate, whatever its rewind step
    for rate in RATES:
        firsts = {chains[r, rate].rounds[1].mask_sha256 for r in REWINDS}
        assert len(firsts) == 1
        assert load_mask(chains[0, rate].rounds[1].mask_path).sha256 == firsts.pop()
    assert chains[0, 0.5].rounds[1].mask_sha256 != chains[0, 0.7].rounds[1].mask_sha256


def test_shared_prefix_is_bit_identical_to_standalone_chains(tmp_path):
    shared = _grid(tmp_path / "shared", CountingTrainer(TRAIN))
    for key in [(3, 0.5), (6, 0.7)]:
        alone_trainer = Trainer(TASK, TRAIN)
        alone = run_chain(_spec(*key), make_toy_model, alone_trainer.train, alone_trainer.evaluate,
                          tmp_path / f"alone-{key[0]}")
        assert [r.mask_sha256 for r in alone.rounds] == [r.mask_sha256 for r in shared[key].rounds]
        assert [r.metrics for r in alone.rounds] == [r.metrics for r in shared[key].rounds]


def test_a_new_rewind_step_replays_only_up_to_that_step(tmp_path):
    counter = CountingTrainer(TRAIN)
    run_chain(_spec(0, 0.5), make_toy_model, counter.train, counter.inner.evaluate, tmp_path)
    counter.calls.clear()
    later = run_chain(_spec(4, 0.5), make_toy_model, counter.train, counter.inner.evaluate, tmp_path)
    dense = [c for c in counter.calls if c["dense"]]
    assert [c["steps"] for c in dense] == [4]  # not the whole dense run again
    assert later.rounds[0].steps_trained == 4
    alone_trainer = Trainer(TASK, TRAIN)
    alone = run_chain(_spec(4, 0.5), make_toy_model, alone_trainer.train, alone_trainer.evaluate, tmp_path / "alone")
    assert [r.mask_sha256 for r in alone.rounds] == [r.mask_sha256 for r in later.rounds]


def test_random_pruning_shares_the_dense_run_but_not_the_first_mask(tmp_path):
    counter = CountingTrainer(TRAIN)
    imp = run_chain(_spec(0, 0.5), make_toy_model, counter.train, counter.inner.evaluate, tmp_path)
    rp = run_chain(_spec(0, 0.5, Method.RANDOM), make_toy_model, counter.train, counter.inner.evaluate, tmp_path)
    assert sum(c["dense"] for c in counter.calls) == 1
    assert rp.rounds[0].metrics == imp.rounds[0].metrics
    assert rp.rounds[1].mask_sha256 != imp.rounds[1].mask_sha256
    assert dataclasses.replace(_spec(0, 0.5), method=Method.RANDOM).short_hash == rp.directory.name


def test_a_corrupt_theta_i_names_its_file_and_the_hint_recovers_it(tmp_path):
    """The fix hint points where θi lives (the dense store); following it gives the same masks."""
    import re

    import pytest

    from ltvl.util.errors import LtvlError

    counter = CountingTrainer(TRAIN)
    first = run_chain(_spec(3, 0.5), make_toy_model, counter.train, counter.inner.evaluate, tmp_path)
    theta = next((tmp_path / "dense").glob("*/theta/3.pt"))
    data = bytearray(theta.read_bytes())
    data[len(data) // 2] ^= 0xFF
    theta.write_bytes(bytes(data))
    for r in tmp_path.glob("*/rounds/00[2-9].json"):
        r.unlink()  # force a re-run of the later rounds, which rewind to θi
    with pytest.raises(LtvlError, match="hash mismatch") as e:
        run_chain(_spec(3, 0.5), make_toy_model, counter.train, counter.inner.evaluate, tmp_path)
    msg = str(e.value)
    assert str(theta) in msg and "3.sha256" in msg
    theta.unlink()  # do what the hint says
    theta.with_suffix(".sha256").unlink()
    again = run_chain(_spec(3, 0.5), make_toy_model, counter.train, counter.inner.evaluate, tmp_path)
    assert [r.mask_sha256 for r in again.rounds] == [r.mask_sha256 for r in first.rounds]
    assert re.search(r"dense/\w+/theta/3\.pt", msg)
