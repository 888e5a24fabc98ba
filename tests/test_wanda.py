"""Wanda (#33): prune by |W_ij|·‖X_j‖₂ (the weight times the norm of its input feature over calibration
batches), compared per output row as Wanda does, or globally. Checked against a reference computed by
hand on a model whose layer inputs are explicit, and as a chain arm on the toy BERT."""

import pytest
import torch

from ltvl.core.chain import ChainSpec
from ltvl.core.imp import run_chain_with_trainer
from ltvl.core.toy import ToyTask, make_toy_model
from ltvl.core.train import TrainConfig, Trainer
from ltvl.pruning import Schedule, load_mask, prune_to_sparsity, select_prunable
from ltvl.pruning.calibration import input_norms
from ltvl.pruning.prunable import PrunableSpec
from ltvl.pruning.prune import Scope
from ltvl.util.errors import LtvlError
from tests.helpers.models import MLP

TRAIN = TrainConfig(steps=8, lr=3e-3, batch_size=8, seed=0)
CONTEXT = (("task", "toy"), ("backbone", "toy-bert"))


def row_reference(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask pruning the k lowest scores of each row (stable: earlier columns first on ties)."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    for i, row in enumerate(scores):
        keep[i, torch.sort(row, stable=True).indices[:k]] = False
    return keep


def test_wanda_scores_and_row_selection_equal_a_hand_computation():
    model = MLP()
    x = torch.randn(4, 7, 6, generator=torch.Generator().manual_seed(1))  # 4 batches of 7 examples
    norms = input_norms(model, ["fc1.weight", "fc2.weight"], lambda m: [m(b) for b in x])
    with torch.no_grad():
        flat = x.reshape(-1, 6)
        want = {"fc1.weight": flat.square().sum(0).sqrt(),
                "fc2.weight": torch.relu(model.fc1(flat)).square().sum(0).sqrt()}
    for n in want:
        torch.testing.assert_close(norms[n], want[n], rtol=1e-6, atol=1e-7)
    weights = {n: p.detach() for n, p in model.named_parameters() if n.endswith("weight")}
    mask = prune_to_sparsity(weights, None, 0.6, method="wanda", scope="row", inputs=norms)
    for n, w in weights.items():
        k = round(0.6 * w.shape[1])
        assert torch.equal(mask.tensors[n], row_reference(w.abs() * want[n], k))
        assert (mask.tensors[n].sum(1) == w.shape[1] - k).all()  # every row keeps the same count
    # globally, as an option: the lowest |W|·‖x‖ over both tensors
    glob = prune_to_sparsity(weights, None, 0.6, method="wanda", scope="global", inputs=norms)
    scores = torch.cat([(weights[n].abs() * want[n]).flatten() for n in weights])
    cut = torch.sort(scores, stable=True).indices[:round(0.6 * scores.numel())]
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    keep[cut] = False
    assert torch.equal(torch.cat([glob.tensors[n].flatten() for n in weights]), keep)
    # a second prune keeps what was pruned, and only adds per row
    more = prune_to_sparsity(weights, mask, 0.8, method="wanda", scope="row", inputs=norms)
    assert not (more.tensors["fc1.weight"] & ~mask.tensors["fc1.weight"]).any()
    with pytest.raises(LtvlError, match="scores weights by their input activations"):
        prune_to_sparsity(weights, None, 0.5, method="wanda")
    with pytest.raises(LtvlError, match="below the current sparsity of a row"):
        prune_to_sparsity(weights, more, 0.5, method="wanda", scope=Scope.ROW, inputs=norms)


def chain(schedule: Schedule, **kw) -> ChainSpec:
    return ChainSpec(train=TRAIN, schedule=schedule, method="wanda", scope=Scope.ROW, prunable=PrunableSpec(),
                     context=CONTEXT, calibration_examples=16, **kw)


def run(spec: ChainSpec, root, share=()):
    return run_chain_with_trainer(spec, lambda: make_toy_model(0), Trainer(ToyTask(), spec.train), root,
                                  share_rewinds=share)


def test_a_wanda_chain_prunes_the_calibrated_dense_model_shares_its_dense_run_and_resumes(tmp_path):
    from ltvl.core.dense import DenseSpec, DenseStore
    imp = ChainSpec(train=TRAIN, schedule=Schedule("geometric", 0.5, 0.5), prunable=PrunableSpec(), context=CONTEXT)
    run(imp, tmp_path, share=(TRAIN.steps,))  # the dense run, keeping θT (as a sweep's dense stage does)
    spec = chain(Schedule("geometric", 0.5, 0.75))
    got = run(spec, tmp_path)
    assert got.rounds[0].steps_trained == 0  # no second dense run
    assert [round(r.sparsity, 2) for r in got.rounds] == [0.0, 0.5, 0.75]
    # reference: the trained dense model, calibrated on the first 16 training examples, pruned per row
    trainer = Trainer(ToyTask(), TRAIN)
    model = make_toy_model(0)
    trainer.train(model)
    dense = DenseStore(tmp_path, DenseSpec.of(spec), writer=False)
    names = list(select_prunable(model, PrunableSpec()))
    assert dense.final_weights(dense.record()).keys() == set(names)
    seen = []
    norms = input_norms(model, names, lambda m: (seen.append(1), trainer.calibrate(m, 16)))
    params = dict(model.named_parameters())
    first = load_mask(got.rounds[1].mask_path)
    for n in names:
        w = params[n].detach()
        assert torch.equal(first.tensors[n], row_reference(w.abs() * norms[n], round(0.5 * w.shape[1]))), n
    assert first.metadata["method"] == "wanda" and first.metadata["scope"] == "row"
    (got.directory / "rounds" / "002.json").unlink()  # a crash before round 2's record
    again = run(spec, tmp_path)
    assert [r.replayed for r in again.rounds] == [True, True, False]
    assert again.rounds[2].mask_sha256 == got.rounds[2].mask_sha256


def test_wanda_in_params_is_per_row_by_default_and_its_calibration_is_identity():
    from ltvl.params.resolve import resolve_chain
    from ltvl.tracking.records import active_params, chain_name

    job = resolve_chain({"method": "wanda", "schedule": "one_shot", "target_sparsity": 0.5})
    assert job.chain.scope == Scope.ROW and job.params.scope == "row"
    assert chain_name(job).startswith("Wanda (one-shot) · vqa")
    assert active_params(job)["calibration_examples"] == 128
    assert resolve_chain({"method": "wanda", "scope": "global"}).chain.scope == Scope.GLOBAL
    assert resolve_chain({"method": "wanda", "calibration_examples": 64}).chain.sha256 != job.chain.sha256
    plain = resolve_chain({})
    assert plain.chain.sha256 == resolve_chain({"calibration_examples": 64}).chain.sha256  # inert for IMP
    assert "calibration_examples" not in active_params(plain)
    assert job.chain.dense_steps == (0, 200)  # the dense run keeps θT to calibrate the first prune
    with pytest.raises(LtvlError, match="adaptive schedule re-prunes earlier tries"):
        resolve_chain({"method": "wanda", "schedule": "adaptive"})


def test_a_wanda_chain_without_a_calibration_function_is_refused_by_name(tmp_path):
    from ltvl.core.imp import run_chain

    trainer = Trainer(ToyTask(), TRAIN)
    with pytest.raises(LtvlError, match="method 'wanda' reads activations, but no calibration function"):
        run_chain(chain(Schedule("one_shot", target_sparsity=0.5)), lambda: make_toy_model(0), trainer.train,
                  trainer.evaluate, tmp_path)
