"""PGD in the embedding space (SPEC §4): projection, exactness when off, R_kl, inner maximisation,
robustness gained, masks respected, all three backbones, bad input."""
import pytest
import torch

from ltvl.core.adversarial import (
    AdvConfig,
    Perturbations,
    adversarial_backward,
    per_example_norm,
    project,
    symmetric_kl,
)
from ltvl.core.train import TrainConfig, Trainer
from ltvl.pruning import MaskEnforcer, prune_to_sparsity, select_prunable
from ltvl.util.errors import LtvlError
from ltvl.vl.assemble import VLSpec, build_vl
from ltvl.vl.data.synthetic import make_synthetic
from ltvl.vl.models.presets import BackboneSpec


@pytest.fixture(scope="module")
def vqa_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("vqa")
    make_synthetic("vqa", d, n_train=64, n_test=32)
    return str(d)


def _setup(data, preset="tiny", task="vqa"):
    return build_vl(VLSpec(task=task, data=data, backbone=BackboneSpec(preset), max_len=12))


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_projection_keeps_delta_in_the_ball():
    d = torch.randn(5, 7, 3) * 10
    p = project(d, 2.0)
    assert (per_example_norm(p).flatten() <= 2.0 + 1e-5).all()
    small = torch.randn(5, 7, 3) * 1e-3
    assert torch.equal(project(small, 2.0), small)  # inside already: untouched
    assert torch.equal(project(d, 0.0), d)  # eps = 0: unbounded


def test_ascent_stays_in_the_ball(vqa_dir):
    setup = _setup(vqa_dir)
    model, batch = setup.model_factory(), setup.data.batch(0, 8, 0)
    cfg = AdvConfig(enabled=True, epsilon=0.05, step_size=1.0, steps=4, init="random", init_magnitude=0.1)
    pert = Perturbations(cfg, torch.Generator().manual_seed(0))
    for _ in range(cfg.steps):
        pert.start_pass()
        setup.data.task.loss(model(batch, pert, pert), batch).backward()
        pert.ascend()
    assert {k for k, _ in pert.deltas} == {"text", "image"}
    for d in pert.deltas.values():
        assert (per_example_norm(d).flatten() <= 0.05 + 1e-6).all()


@pytest.mark.parametrize("cfg", [AdvConfig(enabled=True, steps=0), AdvConfig(enabled=False, steps=3)])
def test_off_or_zero_steps_equals_standard_training_exactly(vqa_dir, cfg):
    setup = _setup(vqa_dir)
    batch = setup.data.batch(0, 8, 0)
    a, b = setup.model_factory(), setup.model_factory()
    torch.manual_seed(0)
    loss_a = setup.data.loss(a, batch)
    loss_a.backward()
    fwd, crit, klv = setup.data.adversarial_parts(b, batch)
    torch.manual_seed(0)
    stats = adversarial_backward(fwd, crit, cfg, kl_view=klv)
    assert stats["loss"] == loss_a.item()
    ga, gb = _grads(a), _grads(b)
    assert ga.keys() == gb.keys() and all(torch.equal(ga[k], gb[k]) for k in ga)


def test_symmetric_kl_is_symmetric_and_nonnegative():
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert torch.allclose(symmetric_kl(p, q), symmetric_kl(q, p))
    assert symmetric_kl(p, q) > 0 and abs(float(symmetric_kl(p, p))) < 1e-6


def test_inner_maximisation_increases_the_loss(vqa_dir):
    setup = _setup(vqa_dir)
    model, batch = setup.model_factory().eval(), setup.data.batch(0, 16, 0)
    clean = float(setup.data.task.loss(model(batch), batch))
    pert = Perturbations(AdvConfig(enabled=True, epsilon=1.0, step_size=0.3, steps=5))
    for _ in range(5):
        pert.start_pass()
        setup.data.task.loss(model(batch, pert, pert), batch).backward()
        pert.ascend()
    pert.start_pass()
    adv = float(setup.data.task.loss(model(batch, pert, pert), batch))
    assert adv > clean


@pytest.mark.parametrize("preset", ["tiny", "tiny-lxmert", "tiny-vilt"])
def test_adversarial_step_on_every_backbone_perturbs_both_modalities(vqa_dir, preset):
    setup = _setup(vqa_dir, preset)
    model, batch = setup.model_factory(), setup.data.batch(0, 4, 0)
    fwd, crit, klv = setup.data.adversarial_parts(model, batch)
    seen = []

    def spy(**deltas):
        out = fwd(**deltas)
        if isinstance(deltas["text_delta"], Perturbations):
            seen.append({k for k, _ in deltas["text_delta"].deltas})
        return out
    stats = adversarial_backward(spy, crit, AdvConfig(enabled=True, steps=2, epsilon=0.1), kl_view=klv)
    assert seen and seen[0] == {"text", "image"}
    assert stats["kl"] >= 0 and stats["adv_loss"] == stats["adv_loss"]


@pytest.mark.parametrize("amp,grad_accum", [("off", 1), ("bf16", 2)])
def test_masked_adversarial_training_keeps_pruned_weights_zero(vqa_dir, amp, grad_accum):
    setup = _setup(vqa_dir)
    model = setup.model_factory()
    prunable = select_prunable(model, setup.prunable)
    mask = prune_to_sparsity({n: p.detach() for n, p in prunable.items()}, None, 0.6)
    cfg = TrainConfig(steps=4, batch_size=8, lr=1e-2, amp=amp, grad_accum=grad_accum,
                      adversarial=AdvConfig(enabled=True, steps=2, epsilon=0.5))
    Trainer(setup.data, cfg).train(model, enforcer=MaskEnforcer(model, mask))
    params = dict(model.named_parameters())
    assert all((params[n][~k] == 0).all() for n, k in mask.tensors.items())


def _robust_accuracy(model, data, eps, steps=5):
    """Accuracy under a PGD attack on the image features at radius eps."""
    model.eval()
    prep, split = data.eval_prep, data.eval
    batch = data.task.collate(prep, split, torch.arange(len(prep["rows"])), torch.Generator())
    pert = Perturbations(AdvConfig(enabled=True, modality="image", epsilon=eps, step_size=eps / 2, steps=steps))
    for _ in range(steps):
        pert.start_pass()
        data.task.loss(model(batch, None, pert), batch).backward()
        pert.ascend()
    pert.start_pass()
    with torch.no_grad():
        return data.task.score(model(batch, None, pert), batch)["correct"] / len(prep["rows"])


@pytest.mark.long
def test_adversarial_training_buys_robustness(tmp_path):
    make_synthetic("refcoco_plus", tmp_path, n_train=1024, n_test=256)
    setup = _setup(str(tmp_path), task="refcoco_plus")
    eps = 1.5
    results = {}
    for name, adv in (("standard", AdvConfig()), ("adversarial", AdvConfig(enabled=True, modality="image",
                                                                         epsilon=eps, step_size=eps / 2, steps=3))):
        model = setup.model_factory()
        Trainer(setup.data, TrainConfig(steps=400, lr=1e-3, batch_size=32, adversarial=adv)).train(model)
        results[name] = (Trainer(setup.data, TrainConfig()).evaluate(model)["metric"],
                         _robust_accuracy(model, setup.data, eps))
    print(results)
    assert results["standard"][0] > 0.5  # both learned the task
    assert results["adversarial"][1] > results["standard"][1] + 0.05


def test_bad_adversarial_config():
    for kw, msg in [(dict(epsilon=-1.0), "epsilon"), (dict(step_size=-1e-3), "step_size"), (dict(steps=-1), "steps"),
                    (dict(modality="audio"), "unknown modality 'audio'"), (dict(init="gaussian"), "unknown init")]:
        with pytest.raises(LtvlError, match=msg):
            TrainConfig(adversarial=AdvConfig(enabled=True, **kw)).validate()


def test_image_perturbation_on_a_text_only_batch_is_refused():
    lin = torch.nn.Linear(4, 2)
    x = torch.randn(3, 4)

    from ltvl.vl.models.base import add_delta

    def text_only_forward(text_delta=None, image_delta=None):
        return lin(add_delta(x, text_delta, "text"))  # never asks for an image delta
    with pytest.raises(LtvlError, match="batch has no image input"):
        adversarial_backward(text_only_forward, lambda out: out.sum(), AdvConfig(enabled=True, modality="image"))
    from ltvl.core.toy import ToyTask
    with pytest.raises(LtvlError, match="does not support adversarial"):
        Trainer(ToyTask(n_train=8, n_test=8), TrainConfig(adversarial=AdvConfig(enabled=True)))
