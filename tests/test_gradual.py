"""Gradual magnitude pruning (#33): ``schedule: gradual`` is one round that starts dense and ramps the
sparsity to the target while it trains (Zhu & Gupta's cubic schedule). Checked against the same run
done by hand in segments: train to a prune step, prune the live weights, continue from the captured
state under the new mask."""

import pytest

from ltvl.core.chain import ChainSpec
from ltvl.core.imp import run_chain_with_trainer
from ltvl.core.toy import ToyTask, make_toy_model
from ltvl.core.train import TrainConfig, Trainer
from ltvl.pruning import Mask, MaskEnforcer, Schedule, load_mask, prune_to_sparsity, select_prunable
from ltvl.pruning.prunable import PrunableSpec
from ltvl.pruning.schedule import gradual_prunes
from ltvl.util.errors import LtvlError

TRAIN = TrainConfig(steps=8, lr=3e-3, batch_size=8, seed=0)
CONTEXT = (("task", "toy"), ("backbone", "toy-bert"))


def test_the_cubic_ramp_is_zhu_and_gupta_s():
    prunes = gradual_prunes(100, 0.9)  # the ramp spans 75 steps: 10 prunes, every 7 steps
    assert [s for s, _ in prunes] == [7, 14, 21, 28, 35, 42, 49, 56, 63, 70]
    assert [round(v, 6) for _, v in prunes] == [round(0.9 * (1 - (1 - k / 10) ** 3), 6) for k in range(1, 11)]
    assert prunes[-1][1] == pytest.approx(0.9) and prunes[0][1] == pytest.approx(0.9 * 0.271)
    assert gradual_prunes(8, 0.75) == [(k, 0.75 * (1 - (1 - k / 6) ** 3)) for k in range(1, 7)]


def test_a_gmp_round_reports_its_ramp_s_target_not_its_dense_start():
    from ltvl.pruning.gradual import GradualEnforcer

    model = make_toy_model(0)
    weights = {n: p.detach() for n, p in select_prunable(model, PrunableSpec()).items()}
    enforcer = GradualEnforcer(model, Mask.dense_like(weights), gradual_prunes(8, 0.75), lambda w, m, s: m)
    assert enforcer.mask.sparsity == 0.0 and enforcer.target == pytest.approx(0.75)  # the progress line's "→"
    enforcer.remove()


def test_a_gradual_round_equals_the_same_ramp_done_by_hand_in_segments(tmp_path):
    spec = ChainSpec(train=TRAIN, schedule=Schedule("gradual", target_sparsity=0.75), prunable=PrunableSpec(),
                     context=CONTEXT)
    got = run_chain_with_trainer(spec, lambda: make_toy_model(0), Trainer(ToyTask(), TRAIN), tmp_path)
    assert [round(r.sparsity, 4) for r in got.rounds] == [0.0, 0.75]
    assert got.rounds[1].steps_trained == TRAIN.steps and got.rounds[0].next_mask_sha256 == got.rounds[0].mask_sha256
    final = load_mask(got.rounds[1].mask_path)
    assert final.parent == got.rounds[0].mask_sha256 and final.metadata["gradual_prunes"] == 6
    # by hand: segments [0,1), [1,2), …, [6,8), each pruning the live weights at its start
    trainer = Trainer(ToyTask(), TRAIN)
    model = make_toy_model(0)
    names = list(select_prunable(model, PrunableSpec()))
    params = dict(model.named_parameters())
    mask = Mask.dense_like({n: params[n] for n in names})
    point, at = None, 0
    for step, sparsity in [*gradual_prunes(TRAIN.steps, 0.75), (TRAIN.steps, None)]:
        enforcer = MaskEnforcer(model, mask)
        out = trainer.train(model, enforcer=enforcer, start=point, until=step, capture_at=[step])
        enforcer.remove()
        point, at = out.captured[step], step
        if sparsity is not None:
            mask = prune_to_sparsity({n: point.model[n] for n in names}, mask, sparsity)
    assert at == TRAIN.steps and mask.sha256 == final.sha256
    model.load_state_dict(point.model)
    assert trainer.evaluate(model) == got.rounds[1].metrics
    again = run_chain_with_trainer(spec, lambda: make_toy_model(0), Trainer(ToyTask(), TRAIN), tmp_path)
    assert all(r.replayed for r in again.rounds) and again.rounds[1].mask_sha256 == final.sha256


def test_gmp_is_its_own_arm_and_uses_no_rate():
    from ltvl.params.resolve import resolve_chain
    from ltvl.report.tables import line_of
    from ltvl.tracking.records import active_params, chain_name, lineage_tags

    gmp = {"schedule": "gradual", "target_sparsity": 0.875}
    job = resolve_chain(gmp)
    assert chain_name(job) == "GMP · vqa · to 87.5% · seed 0" and lineage_tags(job)["ltvl.schedule"] == "gradual"
    assert "rate" not in active_params(job)
    assert resolve_chain({**gmp, "rate": 0.3}).chain.sha256 == job.chain.sha256
    assert chain_name(resolve_chain({**gmp, "retrain": "finetune"})).startswith("GMP + fine-tune")
    assert chain_name(resolve_chain({**gmp, "rewind_step": 20})).startswith("GMP θi@20")
    with pytest.raises(LtvlError, match="gradual schedule prunes while it trains"):
        resolve_chain({**gmp, "method": "wanda"})
    with pytest.raises(LtvlError, match="gradual schedule prunes to target_sparsity in one round"):
        Schedule("gradual", target_sparsity=None, rounds=3).validate()
    row = {"chain_key": "chain:x", "init": "theta0", "rewind_step": 0, "source_task": "vqa", "adv_use": "off",
           "epsilon": 0.0, "adaptive": False, "one_shot": False, "finetune": False, "gradual": True}
    assert line_of(row) == "GMP"
