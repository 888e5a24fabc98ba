"""Does a recipe's dense run learn? Per seed: its metric, both controls' floor, and the accuracy
by question type, so a plateau shows what the model has not learned (issue 16, item 4).

The recipe is a sweep config's params (default: the main job's) with --set overrides. For each
seed it trains the dense run exactly as a chain's round 0 would (ltvl.core.train.Trainer on the
assembled VL task), then scores every evaluation question. A question's type is its first two
words ("what color", "is there", …), VQA v2's notion of question type; the breakdown lists each
type's share of the questions and the model's accuracy on it, the same model's accuracy when
shown another question's image, and the majority answer's. A model that reads the image loses
accuracy when shown the wrong one; a model that answers from the question alone does not.

    python bench/recipe_check.py [--config sweeps/configs/rewind_grid.yaml] [--seeds 0,1,2] [--set lr=3e-4 ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "sweeps" / "configs" / "rewind_grid.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe param")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    import torch

    from ltvl.core.train import Trainer
    from ltvl.params.resolve import data_for, resolve_chain
    from ltvl.plan.config import load_config
    from ltvl.vl.assemble import build_vl
    from ltvl.vl.datasets import resolve_dataset
    from ltvl.vl.image_ablation import image_ablation

    torch.set_num_threads(a.threads)
    cfg = load_config("rewind_grid", a.config, [f"params.{kv}" for kv in a.set])
    print(f"machine: {machine()}")
    print(f"recipe: {a.config} params + {a.set or 'no overrides'}")
    for seed in (int(s) for s in a.seeds.split(",")):
        job = resolve_chain({**cfg.params, "seed": seed})
        job = job.with_data(str(resolve_dataset(data_for(job.params))))
        setup = build_vl(job.vl)
        trainer = Trainer(setup.data, job.chain.train)
        model = setup.model_factory()
        t0 = time.perf_counter()
        out = trainer.train(model)
        metrics = trainer.evaluate(model)
        wall = time.perf_counter() - t0
        ab = image_ablation(model, setup.data)
        print(f"seed {seed}: metric {metrics['metric']:.4f}; shown another question's image "
              f"{ab.mean('other image'):.4f}; majority answer {ab.mean('majority'):.4f}; "
              f"final loss {out.last_loss:.3f}, {job.chain.train.steps} steps + eval in {wall:.0f} s")
        print(f"    {'question type':16} {'share':>6} {'model':>7} {'other image':>12} {'majority':>9}")
        for k, count in ab.by_kind().items():
            print(f"    {k:16} {count / len(ab.kinds):6.1%} {ab.mean('model', k):7.3f} "
                  f"{ab.mean('other image', k):12.3f} {ab.mean('majority', k):9.3f}")


if __name__ == "__main__":
    main()
