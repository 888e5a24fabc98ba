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
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


IMAGE_KEYS = ("features", "boxes", "image_mask", "pixels")


def per_question(model, data) -> tuple[list[str], dict[str, list[float]]]:
    """Each evaluated question's type, and its score by: the model, the model shown another
    question's image (half the evaluation set away, so never its own), and the majority answer."""
    import torch

    from ltvl.vl.tasks.base import ConstantAnswer

    task, prep, split = data.task, data.eval_prep, data.eval
    n = len(prep["rows"]) if data.eval_limit is None else min(data.eval_limit, len(prep["rows"]))
    texts = split.examples.column("text").to_pylist()[:n]
    majority = ConstantAnswer(task.majority_class(data.train_prep), task.num_outputs(split.info))
    scores: dict[str, list[float]] = {"model": [], "other image": [], "majority": []}
    model.eval()
    with torch.no_grad():
        for start in range(0, n, data.eval_batch_size):
            rows = torch.arange(start, min(start + data.eval_batch_size, n))
            batch = task.collate(prep, split, rows, torch.Generator().manual_seed(start))
            other = task.collate(prep, split, (rows + n // 2) % n, torch.Generator().manual_seed(start))
            swapped = {**batch, **{k: other[k] for k in IMAGE_KEYS if k in other}}
            for name, m, b in (("model", model, batch), ("other image", model, swapped),
                               ("majority", majority, batch)):
                picked = batch["targets"].gather(1, m(b).argmax(1, keepdim=True)).squeeze(1)
                scores[name] += picked.tolist()
    return [" ".join(t.lower().rstrip("?").split()[:2]) for t in texts], scores


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
    from ltvl.sweep.config import load_config
    from ltvl.vl.assemble import build_vl
    from ltvl.vl.datasets import resolve_dataset

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
        kinds, scores = per_question(model, setup.data)
        by: dict[str, list[int]] = defaultdict(list)
        for i, k in enumerate(kinds):
            by[k].append(i)

        def mean(name: str, idx: list[int], scores: dict = scores) -> float:
            return sum(scores[name][i] for i in idx) / len(idx)
        every = list(range(len(kinds)))
        print(f"seed {seed}: metric {metrics['metric']:.4f}; shown another question's image "
              f"{mean('other image', every):.4f}; majority answer {mean('majority', every):.4f}; "
              f"final loss {out.last_loss:.3f}, {job.chain.train.steps} steps + eval in {wall:.0f} s")
        print(f"    {'question type':16} {'share':>6} {'model':>7} {'other image':>12} {'majority':>9}")
        for k, idx in sorted(by.items(), key=lambda kv: -len(kv[1])):
            print(f"    {k:16} {len(idx) / len(kinds):6.1%} {mean('model', idx):7.3f} "
                  f"{mean('other image', idx):12.3f} {mean('majority', idx):9.3f}")


if __name__ == "__main__":
    main()
