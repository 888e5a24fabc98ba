"""Does a recipe's dense run learn? Per seed: its metric, both controls' floor, and the accuracy
by question type, so a plateau shows what the model has not learned (issue 16, item 4).

The recipe is a sweep config's params (default: the main job's) with --set overrides. For each
seed it trains the dense run exactly as a chain's round 0 would (ltvl.core.train.Trainer on the
assembled VL task), then scores every evaluation question. A question's type is its first two
words ("what color", "is there", …), VQA v2's notion of question type; the breakdown lists each
type's share of the questions and the model's accuracy on it next to the majority answer's.

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


def per_question(model, data) -> tuple[list[str], list[float], list[float]]:
    """(question type, the model's score, the majority answer's score) for every evaluated question."""
    import torch

    from ltvl.vl.tasks.base import ConstantAnswer

    task, prep, split = data.task, data.eval_prep, data.eval
    n = len(prep["rows"]) if data.eval_limit is None else min(data.eval_limit, len(prep["rows"]))
    texts = split.examples.column("text").to_pylist()[:n]
    majority = ConstantAnswer(task.majority_class(data.train_prep), task.num_outputs(split.info))
    scores: dict[str, list[float]] = {"model": [], "majority": []}
    model.eval()
    with torch.no_grad():
        for start in range(0, n, data.eval_batch_size):
            rows = torch.arange(start, min(start + data.eval_batch_size, n))
            batch = task.collate(prep, split, rows, torch.Generator().manual_seed(start))
            for name, m in (("model", model), ("majority", majority)):
                picked = batch["targets"].gather(1, m(batch).argmax(1, keepdim=True)).squeeze(1)
                scores[name] += picked.tolist()
    kinds = [" ".join(t.lower().rstrip("?").split()[:2]) for t in texts]
    return kinds, scores["model"], scores["majority"]


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
        kinds, mine, major = per_question(model, setup.data)
        by: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for k, s, m in zip(kinds, mine, major):
            by[k].append((s, m))
        print(f"seed {seed}: metric {metrics['metric']:.4f} (majority answer {metrics.get('majority_metric', 0):.4f}), "
              f"final loss {out.last_loss:.3f}, {job.chain.train.steps} steps + eval in {wall:.0f} s")
        for k, v in sorted(by.items(), key=lambda kv: -len(kv[1])):
            print(f"    {k:18} {len(v) / len(kinds):6.1%} of questions: accuracy {sum(s for s, _ in v) / len(v):.3f}"
                  f"  (majority answer {sum(m for _, m in v) / len(v):.3f})")


if __name__ == "__main__":
    main()
