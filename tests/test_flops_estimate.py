"""The plan's FLOPs before anything ran (#33 item 2): an analytic count of a step's matmuls from the
backbone's shape and the batch's (ltvl.vl.flops), held here to torch's FlopCounterMode on the real
first step of each backbone kind and each task with a fixed number of passes per example."""

import pytest

from ltvl.core.adversarial import AdvConfig
from ltvl.core.train import TrainConfig, Trainer
from ltvl.vl.assemble import VLSpec, build_vl
from ltvl.vl.datasets import ensure_synthetic
from ltvl.vl.flops import estimate_for, estimate_step
from ltvl.vl.models.presets import BackboneSpec
from ltvl.vl.tasks import get_task

BATCH, MAX_LEN = 4, 12
CASES = [("vqa", "tiny"), ("vqa", "tiny-lxmert"), ("vqa", "tiny-vilt"), ("vqa", "minilm"), ("nlvr2", "tiny"),
         ("vcr", "tiny"), ("flickr30k", "tiny"), ("refcoco_plus", "tiny"), ("nlvr2", "tiny-vilt"),
         ("vcr", "tiny-lxmert")]


def counted(spec: VLSpec) -> tuple[float, object]:
    setup = build_vl(spec)
    out = Trainer(setup.data, TrainConfig(steps=1, lr=1e-4, batch_size=BATCH, seed=0)).train(setup.model_factory())
    return out.flops_per_step, setup.info


@pytest.mark.parametrize(("task", "preset"), CASES)
def test_the_estimate_is_within_3_percent_of_the_counted_step(task, preset):
    spec = VLSpec(task=task, data=str(ensure_synthetic(task)), backbone=BackboneSpec(preset=preset), max_len=MAX_LEN)
    real, info = counted(spec)
    est = estimate_step(get_task(task), spec.backbone, MAX_LEN, BATCH, info)
    assert est is not None and abs(est.flops / real - 1) < 0.03, (est.flops, real)
    assert f"{BATCH} examples x {MAX_LEN} text + " in est.basis


def test_the_estimate_follows_the_depth_the_batch_and_the_workers():
    data = str(ensure_synthetic("vqa"))
    two = VLSpec(task="vqa", data=data, backbone=BackboneSpec(preset="minilm", num_layers=2), max_len=MAX_LEN)
    four = VLSpec(task="vqa", data=data, backbone=BackboneSpec(preset="minilm", num_layers=4), max_len=MAX_LEN)
    train = TrainConfig(steps=1, lr=1e-4, batch_size=BATCH, seed=0)
    e2, e4 = estimate_for(two, train), estimate_for(four, train)
    assert 1.7 < e4.flops / e2.flops < 2.0  # the encoder doubles; embeddings, pooler and head do not
    assert estimate_for(two, train, world_size=3).flops == pytest.approx(3 * e2.flops)
    double = TrainConfig(steps=1, lr=1e-4, batch_size=2 * BATCH, seed=0)
    assert estimate_for(two, double).flops == pytest.approx(2 * e2.flops)


def test_no_estimate_where_the_passes_are_not_known_before_running(tmp_path):
    data = str(ensure_synthetic("vqa"))
    spec = VLSpec(task="vqa", data=data, backbone=BackboneSpec(preset="tiny"), max_len=MAX_LEN)
    adversarial = TrainConfig(steps=1, lr=1e-4, batch_size=BATCH, seed=0, adversarial=AdvConfig(enabled=True))
    assert estimate_for(spec, adversarial) is None  # PGD's passes: counted on the first step
    elsewhere = VLSpec(task="vqa", data=str(tmp_path / "not-yet"), backbone=BackboneSpec(preset="tiny"))
    assert estimate_for(elsewhere, TrainConfig(steps=1, lr=1e-4, batch_size=BATCH, seed=0)) is None
    pretrain = VLSpec(task="pretrain", data=str(ensure_synthetic("pretrain")), backbone=BackboneSpec(preset="tiny"))
    assert estimate_for(pretrain, TrainConfig(steps=1, lr=1e-4, batch_size=BATCH, seed=0)) is None
