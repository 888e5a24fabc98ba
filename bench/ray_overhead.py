"""Orchestration cost of running IMP chains on Ray vs the same chains in a bare loop.

Same chains, same steps, same concurrency (one chain at a time), tiny preset on synthetic
VQA so training time is small and orchestration shows. Reports (issue 5 targets):
  * per-round overhead after a chain has started = Tune's time_this_iter_s − the round's own
    wall time measured inside the chain loop (target <= 1 s);
  * sweep wall time, Ray / bare loop (target <= 1.15x; dominated here by the ~20 s
    TorchTrainer start-up per chain, so it depends on how long the chains are).

    python bench/ray_overhead.py [--steps 60] [--chains 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--chains", type=int, default=2)
    a = ap.parse_args()
    import ray
    from ray import tune
    from ltvl.chainjob import build_job, with_prunable
    from ltvl.data.synthetic import make_synthetic
    from ltvl.imp import run_chain_with_trainer
    from ltvl.ray.tune_chain import run_chains
    from ltvl.train import Trainer
    from ltvl.vl import build_vl

    tmp = Path(tempfile.mkdtemp())
    make_synthetic("vqa", tmp / "data", n_train=512, n_test=128)
    base = {"task": "vqa", "data": str(tmp / "data"), "preset": "tiny", "layers": None, "steps": a.steps,
            "batch_size": 16, "eval_limit": None, "max_len": 12, "rate": 0.5, "target_sparsity": 0.9, "lr": 1e-3}
    rewinds = list(range(a.chains))

    t = time.perf_counter()
    bare_rounds = 0
    for rw in rewinds:
        job = build_job({**base, "rewind_step": rw})
        setup = build_vl(job.vl)
        job = with_prunable(job, setup.prunable)
        res = run_chain_with_trainer(job.chain, setup.model_factory, Trainer(setup.data, job.chain.train), tmp / "bare")
        bare_rounds += len(res.rounds)
    bare = time.perf_counter() - t

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t = time.perf_counter()
    grid = run_chains({**base, "rewind_step": tune.grid_search(rewinds)}, root=tmp / "ray_chains",
                      storage=tmp / "ray", name="bench", max_concurrent_trials=1)
    on_ray = time.perf_counter() - t
    overheads = []
    for r in grid:
        df = r.metrics_dataframe
        overheads += list((df["time_this_iter_s"] - df["wall_s"]).iloc[1:])  # after the chain has started
    ray.shutdown()
    print(f"machine: {machine()}")
    print(f"{a.chains} chains x {bare_rounds // a.chains} rounds x {a.steps} steps (tiny preset, synthetic VQA), one chain at a time")
    print(f"bare loop: {bare:.1f} s; Ray (Tune trial + TorchTrainer per chain): {on_ray:.1f} s; "
          f"ratio {on_ray / bare:.2f}x (target <= 1.15x)")
    print(f"per-round overhead after start: median {statistics.median(overheads):.3f} s, "
          f"max {max(overheads):.3f} s over {len(overheads)} rounds (target <= 1 s)")


if __name__ == "__main__":
    main()
