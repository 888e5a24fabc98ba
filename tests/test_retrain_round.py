"""A stored round trained again (#34: what an export writes): the same routine a chain runs, from what
the store holds, held to the round's record, for every way a round starts."""

import json

import pytest

from ltvl.core.chain import ChainSpec
from ltvl.core.imp import retrain_round, run_chain_with_trainer
from ltvl.core.toy import ToyTask, make_toy_model
from ltvl.core.train import TrainConfig, Trainer
from ltvl.pruning import Schedule
from ltvl.pruning.prunable import PrunableSpec
from ltvl.util.errors import LtvlError
from ltvl.util.weights import state_sha256

TRAIN = TrainConfig(steps=8, lr=3e-3, batch_size=8, seed=0)
CONTEXT = (("task", "toy"),)


@pytest.mark.parametrize("kw", [
    {"rewind_step": 2, "schedule": Schedule("geometric", 0.5, 0.75)},  # IMP θi
    {"schedule": Schedule("geometric", 0.5, 0.75), "retrain": "finetune"},  # a later round continues a stored state
    {"schedule": Schedule("gradual", 0.5, 0.75)},  # GMP: one round ramping from the dense mask
], ids=["imp", "finetune", "gmp"])
def test_a_finished_round_trained_again_is_the_recorded_ticket(kw, tmp_path):
    spec = ChainSpec(train=TRAIN, prunable=PrunableSpec(), context=CONTEXT, **kw)
    trainer = Trainer(ToyTask(), TRAIN)
    got = run_chain_with_trainer(spec, lambda: make_toy_model(0), trainer, tmp_path)
    last = len(got.rounds) - 1
    model, mask, rec = retrain_round(spec, tmp_path, last, lambda: make_toy_model(0), trainer.train, trainer.evaluate)
    assert mask.sha256 == got.rounds[last].mask_sha256 and rec["metrics"] == got.rounds[last].metrics
    again, _, _ = retrain_round(spec, tmp_path, last, lambda: make_toy_model(0), trainer.train, trainer.evaluate)
    assert state_sha256(again.state_dict()) == state_sha256(model.state_dict())  # deterministic


def test_a_round_that_does_not_reproduce_is_refused(tmp_path):
    spec = ChainSpec(train=TRAIN, rewind_step=2, schedule=Schedule("geometric", 0.5, 0.75), prunable=PrunableSpec(),
                     context=CONTEXT)
    trainer = Trainer(ToyTask(), TRAIN)
    got = run_chain_with_trainer(spec, lambda: make_toy_model(0), trainer, tmp_path)
    path = got.directory / "rounds" / "001.json"
    rec = json.loads(path.read_text())
    rec["metrics"]["metric"] += 0.01  # as if another machine had scored it
    from ltvl.core.store import write_record
    write_record(path, {k: v for k, v in rec.items() if k not in ("record_sha256", "format", "record_format")})
    with pytest.raises(LtvlError, match="does not reproduce the recorded ticket"):
        retrain_round(spec, tmp_path, 1, lambda: make_toy_model(0), trainer.train, trainer.evaluate)
    with pytest.raises(LtvlError, match="has no finished pruned round 7"):
        retrain_round(spec, tmp_path, 7, lambda: make_toy_model(0), trainer.train, trainer.evaluate)
