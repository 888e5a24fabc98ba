"""AdamW's kernels on the main job's recipe: steps/s of one training run, per kernel choice.

Baseline: torch's per-tensor AdamW (``foreach=False``), what every ltvl store before 2026-11-25
was trained with. Against it, in the same process and on the same batches:

  reference   ltvl's ``adamw_impl: reference``: torch's multi-tensor loop; must be bit-identical
  fused       ``adamw_impl: fused``: one fused kernel per tensor; rounds differently (own identity)

Each variant builds the model fresh, trains --warmup steps untimed, then --steps timed steps
(the main job's recipe from sweeps/configs/rewind_grid.yaml, one torch thread by default, as a
chain trial runs), and the final weights are compared with the baseline's.

    python bench/adamw_kernels.py [--steps 60] [--threads 1] [--repeats 2]
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
VARIANTS = {"per-tensor (baseline)": {"foreach": False, "fused": None}, "reference": None, "fused": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="variants are run round-robin this many times")
    a = ap.parse_args()
    import dataclasses

    import torch

    from ltvl.core.train import Trainer
    from ltvl.params.resolve import data_for, resolve_chain
    from ltvl.plan.config import load_config
    from ltvl.vl.assemble import build_vl
    from ltvl.vl.datasets import resolve_dataset

    torch.set_num_threads(a.threads)
    print("machine:", machine())
    params = {**load_config("rewind_grid", REPO / "sweeps" / "configs" / "rewind_grid.yaml", []).params,
              "adamw_impl": "reference", "steps": a.warmup + a.steps}
    job = resolve_chain(params)
    job = job.with_data(str(resolve_dataset(data_for(job.params))))
    setup = build_vl(job.vl)
    rates: dict[str, list[float]] = {k: [] for k in VARIANTS}
    final: dict[str, dict] = {}
    for _ in range(a.repeats):
        for name, flags in VARIANTS.items():
            impl = "fused" if name == "fused" else "reference"
            trainer = Trainer(setup.data, dataclasses.replace(job.chain.train, adamw_impl=impl))
            if flags is not None:
                trainer._kernel_flags = lambda flags=flags: flags  # the old per-tensor update
            model = setup.model_factory()
            point = trainer.train(model, until=a.warmup, capture_at=[a.warmup]).captured[a.warmup]
            t0 = time.perf_counter()
            trainer.train(model, start=point)
            rates[name].append(a.steps / (time.perf_counter() - t0))
            final[name] = {k: v.clone() for k, v in model.state_dict().items()}
    base = final["per-tensor (baseline)"]
    best = {k: max(v) for k, v in rates.items()}
    print(f"recipe: main job ({params['preset']}, {params['layers']} layers, batch {params['batch_size']}), "
          f"{a.steps} timed steps, {a.threads} thread(s), best of {a.repeats}")
    print(f"{'kernels':<24}{'steps/s':>9}{'ratio':>8}  weights vs baseline")
    for name, r in best.items():
        same = all(torch.equal(base[k], v) for k, v in final[name].items())
        print(f"{name:<24}{r:>9.3f}{r / best['per-tensor (baseline)']:>8.2f}  "
              f"{'bit-identical' if same else 'differ (own identity)'}")
    print(f"adamw fused speed-up = {best['fused'] / best['per-tensor (baseline)']:.2f}x "
          f"(reference: {best['reference'] / best['per-tensor (baseline)']:.2f}x)")


if __name__ == "__main__":
    main()
