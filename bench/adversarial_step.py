"""Cost of one adversarial training step (K PGD steps, "free" AT) vs one standard step.

Real MiniLM-L6-H384 (the `minilm` preset, all 6 layers) on real easy-VQA batches (prepared
under $LTVL_HOME on first use). Standard and AT steps alternate; medians are compared.
Target (issue 4): AT step <= 1.1 x (K+1) standard steps.

    python bench/adversarial_step.py [--k 3] [--steps 12] [--batch 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    from ltvl.core.adversarial import AdvConfig
    from ltvl.core.train import TrainConfig, Trainer
    from ltvl.vl.assemble import VLSpec, build_vl
    from ltvl.vl.datasets import resolve_dataset
    from ltvl.vl.models.presets import BackboneSpec
    setup = build_vl(VLSpec(task="vqa", data=str(resolve_dataset("easy-vqa")), backbone=BackboneSpec("minilm"),
                            max_len=16))
    std = Trainer(setup.data, TrainConfig(steps=10_000, batch_size=a.batch, max_grad_norm=None))
    adv = Trainer(setup.data, TrainConfig(steps=10_000, batch_size=a.batch, max_grad_norm=None,
                                          adversarial=AdvConfig(enabled=True, steps=a.k)))
    models = {"standard": setup.model_factory(), "adversarial": setup.model_factory()}
    trainers = {"standard": std, "adversarial": adv}
    times = {"standard": [], "adversarial": []}
    for i in range(a.steps + 2):
        order = ("standard", "adversarial") if i % 2 == 0 else ("adversarial", "standard")
        for name in order:
            t = time.perf_counter()
            _one_step(trainers[name], models[name], i)
            if i >= 2:  # the first two are warm-up
                times[name].append(time.perf_counter() - t)
    s, d = statistics.median(times["standard"]), statistics.median(times["adversarial"])
    print(f"machine: {machine()}")
    print(f"model: minilm (6 layers, real weights) on easy-VQA, batch {a.batch}; K = {a.k}; {a.steps} steps each")
    print(f"standard step    median {s * 1e3:.0f} ms")
    print(f"adversarial step median {d * 1e3:.0f} ms")
    ratio = d / s
    print(f"ratio {ratio:.2f} = {ratio / (a.k + 1):.3f} x (K+1)  (target <= 1.1 x (K+1)) -> "
          f"{'OK' if ratio <= 1.1 * (a.k + 1) else 'OVER'}")


def _one_step(trainer, model, step):
    """Exactly the trainer's per-step work (batch, forward/backward(s), optimizer step)."""
    from ltvl.core.train import param_groups, to_device
    if not hasattr(model, "_bench_opt"):
        model._bench_opt = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-5)
    opt = model._bench_opt
    opt.zero_grad(set_to_none=True)
    batch = to_device(trainer.task.batch(step, trainer.cfg.batch_size, 0), trainer.device)
    if trainer.cfg.adversarial.active:
        trainer._adversarial_micro_step(model, batch, None, step, 0)
    else:
        trainer.task.loss(model, batch).backward()
    opt.step()


if __name__ == "__main__":
    main()
