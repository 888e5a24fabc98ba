"""Prune + fine-tune (#33): ``retrain: finetune`` trains each pruned round from the weights it pruned
(θT after the dense run), with a fresh optimizer and the whole LR schedule, instead of rewinding.
One-shot, it is the classic prune-then-fine-tune baseline; iterative, IMP with learning-rate
rewinding. Checked against an independent computation that never touches the chain's stores."""

import pytest

from ltvl.core.chain import ChainSpec
from ltvl.core.imp import run_chain
from ltvl.core.toy import ToyTask, make_toy_model
from ltvl.core.train import TrainConfig, Trainer
from ltvl.pruning import MaskEnforcer, Schedule, load_mask
from ltvl.pruning.prunable import PrunableSpec
from ltvl.util.errors import LtvlError

TRAIN = TrainConfig(steps=8, lr=3e-3, batch_size=8, seed=0)
CONTEXT = (("task", "toy"), ("backbone", "toy-bert"))


def chain(schedule: Schedule, retrain: str = "finetune", rewind: int = 0) -> ChainSpec:
    return ChainSpec(train=TRAIN, rewind_step=rewind, schedule=schedule, prunable=PrunableSpec(), context=CONTEXT,
                     retrain=retrain)


def run(spec: ChainSpec, root, share=()):
    trainer = Trainer(ToyTask(), spec.train)
    return run_chain(spec, lambda: make_toy_model(0), trainer.train, trainer.evaluate, root, share_rewinds=share)


def test_prune_and_fine_tune_trains_the_pruned_dense_weights_with_the_whole_schedule(tmp_path):
    ticket = run(chain(Schedule("one_shot", target_sparsity=0.75), retrain="rewind"), tmp_path)
    ft = run(chain(Schedule("one_shot", target_sparsity=0.75)), tmp_path)
    assert ft.rounds[1].mask_sha256 == ticket.rounds[1].mask_sha256  # the same one-shot mask, shared
    assert ft.spec.sha256 != ticket.spec.sha256
    assert ft.rounds[1].steps_trained == TRAIN.steps  # the whole schedule, not t - i
    # the reference, by hand: train dense for t steps, mask it, train t more steps from a fresh optimizer
    trainer = Trainer(ToyTask(), TRAIN)
    model = make_toy_model(0)
    trainer.train(model)
    enforcer = MaskEnforcer(model, load_mask(ft.rounds[1].mask_path))
    out = trainer.train(model, enforcer=enforcer)
    assert out.mean_loss == ft.rounds[1].train_loss and trainer.evaluate(model) == ft.rounds[1].metrics
    assert ft.rounds[1].train_loss != ticket.rounds[1].train_loss  # a different route from the rewound ticket


def test_iterative_fine_tuning_continues_from_the_last_round_and_resumes_bit_identically(tmp_path):
    spec = chain(Schedule("geometric", 0.5, 0.75))
    first = run(spec, tmp_path)
    assert [round(r.sparsity, 2) for r in first.rounds] == [0.0, 0.5, 0.75]
    assert first.rounds[1].weights_sha256 and first.rounds[2].weights_sha256 is None  # the state round 2 starts from
    # reference: round 2 fine-tunes round 1's trained weights, pruned to 75%
    trainer = Trainer(ToyTask(), TRAIN)
    model = make_toy_model(0)
    trainer.train(model)
    for r in (1, 2):
        enforcer = MaskEnforcer(model, load_mask(first.rounds[r].mask_path))
        out = trainer.train(model, enforcer=enforcer)
        enforcer.remove()
        assert out.mean_loss == first.rounds[r].train_loss and trainer.evaluate(model) == first.rounds[r].metrics
    # a crash after round 1: round 2 is recomputed from round 1's stored state, bit for bit
    (first.directory / "rounds" / "002.json").unlink()
    again = run(spec, tmp_path)
    assert [r.replayed for r in again.rounds] == [True, True, False]
    assert again.rounds[2].mask_sha256 == first.rounds[2].mask_sha256
    assert again.rounds[2].metrics == first.rounds[2].metrics
    assert again.rounds[2].train_loss == first.rounds[2].train_loss


def test_a_fine_tuning_chain_refuses_what_means_nothing_to_it():
    with pytest.raises(LtvlError, match="rewind_step 3 means nothing to a fine-tuning chain"):
        chain(Schedule("one_shot", target_sparsity=0.75), rewind=3).validate()
    with pytest.raises(LtvlError, match="retrain: finetune works on a geometric"):
        chain(Schedule("adaptive", 0.5, 0.75)).validate()
    with pytest.raises(LtvlError, match="retrain 'later' is not one of rewind, finetune"):
        chain(Schedule("one_shot", target_sparsity=0.75), retrain="later").validate()
    assert chain(Schedule("geometric", 0.5, 0.75), retrain="rewind").sha256 == \
        ChainSpec(train=TRAIN, schedule=Schedule("geometric", 0.5, 0.75), prunable=PrunableSpec(),
                  context=CONTEXT).sha256  # the default is out of every existing chain's hash


def test_fine_tuning_arms_are_named_tagged_and_planned_as_what_they_are():
    from ltvl.params.resolve import resolve_chain
    from ltvl.plan.plan import plan_chain
    from ltvl.report.tables import line_of
    from ltvl.tracking.records import active_params, chain_name, lineage_tags

    pft = {"schedule": "one_shot", "target_sparsity": 0.875, "retrain": "finetune", "steps": 300}
    job = resolve_chain(pft)
    assert chain_name(job) == "prune + fine-tune · vqa · to 87.5% · seed 0"
    assert lineage_tags(job)["ltvl.retrain"] == "finetune"
    assert active_params(job)["retrain"] == "finetune"
    assert "retrain" not in active_params(resolve_chain({"steps": 300}))  # shown only where it acts
    assert job.chain.start_step == 300 and job.chain.steps_per_round == 300
    assert plan_chain(pft).steps == 300  # one round of the whole schedule
    assert chain_name(resolve_chain({"retrain": "finetune", "rate": 0.5})).startswith("IMP + fine-tune · vqa")
    assert chain_name(resolve_chain({"retrain": "finetune", "method": "random"})).startswith("RP + fine-tune")
    with pytest.raises(LtvlError, match="rewind_step 30 means nothing"):
        resolve_chain({**pft, "rewind_step": 30})
    row = {"chain_key": "chain:x", "init": "theta0", "rewind_step": 0, "source_task": "vqa", "adv_use": "off",
           "epsilon": 0.0, "adaptive": False, "one_shot": True, "finetune": True}
    assert line_of(row) == "prune + fine-tune" and line_of({**row, "one_shot": False}) == "IMP + fine-tune"


def test_the_dense_stage_keeps_theta_T_for_a_fine_tuning_chain(tmp_path):
    """The sweep's dense stage captures θT in the one dense run (no replay later) for a fine-tuning chain."""
    from ltvl.ray.space import job_entry
    from ltvl.ray.stages import _rewinds_by_dense

    pft = {"steps": 40, "schedule": "one_shot", "target_sparsity": 0.5, "retrain": "finetune"}
    entries = [job_entry({"steps": 40, "rewind_step": 4}, tmp_path), job_entry(pft, tmp_path)]
    assert entries[0]["dense_sha256"] == entries[1]["dense_sha256"]
    assert _rewinds_by_dense(entries) == {entries[0]["dense_sha256"]: [4, 40]}
    assert entries[1]["cost"] == 40
