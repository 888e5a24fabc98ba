"""Proof on real data: the real pre-trained MiniLM (UNITER-style) fine-tuned on real easy-VQA
with the main job's recipe clearly beats the most-frequent-answer baseline, which the test
computes itself, and reads the image: shown another question's image, it names colours no
better than chance."""
import collections

import pytest

from ltvl.core.train import TrainConfig, Trainer
from ltvl.vl.assemble import VLSpec, build_vl
from ltvl.vl.data.easy_vqa import prepare_easy_vqa
from ltvl.vl.data.store import open_split
from ltvl.vl.image_ablation import image_ablation
from ltvl.vl.models.presets import BackboneSpec


@pytest.mark.long
def test_minilm_learns_easy_vqa(tmp_path_factory):
    data = tmp_path_factory.mktemp("easy-vqa")
    info = prepare_easy_vqa(data)
    train, test = open_split(data, "train"), open_split(data, "test")
    # majority baseline: the most frequent *training* answer, scored on the test split
    majority = collections.Counter(a[0] for a in train.examples["answer_ids"].to_pylist()).most_common(1)[0][0]
    assert train.examples.num_rows == 38575 and test.examples.num_rows == 9673
    test_answers = [a[0] for a in test.examples["answer_ids"].to_pylist()][:2000]  # the evaluated questions
    baseline = sum(a == majority for a in test_answers) / len(test_answers)
    assert info.answers[majority] in ("yes", "no") and 0.3 < baseline < 0.45

    # the first 2 of MiniLM's 6 pre-trained layers: the main job's backbone, and 3x faster
    setup = build_vl(VLSpec(task="vqa", data=str(data), max_len=16, eval_limit=2000,
                            backbone=BackboneSpec("minilm", num_layers=2, pooling="cls+image")))
    # the majority-answer control, computed by the task from its own data, is that baseline exactly
    assert setup.data.majority_control() == pytest.approx(baseline)
    # the main job's dense recipe (sweeps/configs/rewind_grid.yaml): 300 steps of 32 questions, fused AdamW
    trainer = Trainer(setup.data, TrainConfig(steps=300, lr=1e-4, batch_size=32, warmup_ratio=0.1, adamw_impl="fused"))
    model = setup.model_factory()
    trainer.train(model)
    metrics = trainer.evaluate(model)
    assert metrics["n"] == 2000
    ab = image_ablation(model, setup.data)
    assert ab.mean("model") == pytest.approx(metrics["metric"])
    colour = ab.mean("model", "what color"), ab.mean("other image", "what color")
    print(f"easy-VQA accuracy {metrics['metric']:.4f} (another question's image: {ab.mean('other image'):.4f}) vs "
          f"majority baseline {baseline:.4f}; 'what color' {colour[0]:.3f} vs {colour[1]:.3f} with another image")
    assert metrics["metric"] > baseline + 0.3
    assert metrics["metric"] > ab.mean("other image") + 0.04  # it reads the image …
    assert colour[0] > 0.5 and colour[1] < 0.3  # … most of all for colours: 6 of them, chance is 1/6
