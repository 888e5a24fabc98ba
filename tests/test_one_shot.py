"""The one-shot ticket (#33): prune the trained dense model straight to the target in one round,
rewind and train. Its mask is global magnitude pruning of the dense run's final weights, it
reuses the dense run an IMP chain of the same recipe trained, it is its own arm, and it resumes."""

import pytest
import torch

from ltvl.core.chain import ChainSpec
from ltvl.core.imp import run_chain
from ltvl.core.toy import ToyTask, make_toy_model
from ltvl.core.train import TrainConfig, Trainer
from ltvl.pruning import Schedule, load_mask, select_prunable
from ltvl.pruning.prunable import PrunableSpec
from ltvl.util.errors import LtvlError

TRAIN = TrainConfig(steps=8, lr=3e-3, batch_size=8, seed=0)
CONTEXT = (("task", "toy"), ("backbone", "toy-bert"))


def chain(schedule: Schedule, rewind: int = 0) -> ChainSpec:
    return ChainSpec(train=TRAIN, rewind_step=rewind, schedule=schedule, prunable=PrunableSpec(), context=CONTEXT)


def run(spec: ChainSpec, root):
    trainer = Trainer(ToyTask(), spec.train)
    return run_chain(spec, lambda: make_toy_model(0), trainer.train, trainer.evaluate, root)


def test_one_shot_prunes_the_dense_weights_to_the_target_in_one_round_and_shares_the_dense_run(tmp_path):
    imp = run(chain(Schedule("geometric", 0.5, 0.75)), tmp_path)  # trains the dense run
    one = run(chain(Schedule("one_shot", target_sparsity=0.75)), tmp_path)
    assert [round(r.sparsity, 4) for r in one.rounds] == [0.0, 0.75]
    assert one.rounds[0].steps_trained == 0  # round 0 read from IMP's dense run, not trained again
    assert one.rounds[0].metrics == imp.rounds[0].metrics
    # the reference: global magnitude pruning of the dense run's final weights, done here by hand
    from ltvl.core.dense import DenseSpec, DenseStore
    dense = DenseStore(tmp_path, DenseSpec.of(one.spec), writer=False)
    final = dense.final_weights(dense.record())
    model = make_toy_model(0)
    names = list(select_prunable(model, PrunableSpec()))
    scores = torch.cat([final[n].abs().flatten() for n in names])
    k = round(0.75 * scores.numel())
    cut = torch.sort(scores, stable=True).indices[:k]
    want = torch.ones(scores.numel(), dtype=torch.bool)
    want[cut] = False
    got = torch.cat([load_mask(one.rounds[1].mask_path).tensors[n].flatten() for n in names])
    assert torch.equal(got, want)
    again = run(chain(Schedule("one_shot", target_sparsity=0.75)), tmp_path)  # resume: a replay
    assert all(r.replayed for r in again.rounds)
    assert [r.mask_sha256 for r in again.rounds] == [r.mask_sha256 for r in one.rounds]


def test_one_shot_is_its_own_arm_and_needs_a_target():
    from ltvl.params.resolve import resolve_chain
    from ltvl.tracking.records import chain_name, lineage_tags

    job = resolve_chain({"schedule": "one_shot", "target_sparsity": 0.875, "rewind_step": 30, "steps": 300})
    assert job.chain.sparsities() == [0.875]
    assert chain_name(job) == "one-shot θi@30 · vqa · to 87.5% · seed 0"
    assert lineage_tags(job)["ltvl.schedule"] == "one_shot" and lineage_tags(job)["ltvl.arm"] == "one-shot θi@30"
    rate_free = resolve_chain({"schedule": "one_shot", "target_sparsity": 0.875, "rate": 0.3})
    assert rate_free.chain.sha256 == resolve_chain({"schedule": "one_shot", "target_sparsity": 0.875}).chain.sha256
    with pytest.raises(LtvlError, match="one_shot schedule prunes to target_sparsity in one round"):
        Schedule("one_shot", target_sparsity=None, rounds=2).validate()
    from ltvl.report.tables import line_of
    row = {"chain_key": "chain:x", "init": "theta0", "rewind_step": 0, "source_task": "vqa", "adv_use": "off",
           "epsilon": 0.0, "adaptive": False, "one_shot": True}
    assert line_of(row) == "one-shot" and line_of({**row, "one_shot": False}) == "IMP"  # never pooled with IMP
