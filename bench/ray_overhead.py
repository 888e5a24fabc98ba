"""Orchestration cost of a sweep of IMP chains on Ray vs the same chains in a bare loop.

Same chains (rewind steps x pruning rates), same training steps, same data, same machine, in one
run. The bare loop is what a researcher's own script would do: the chains one after another in
one process, torch using every core, sharing the dense run through the same core API. Ray runs
them as Tune trials (a dense stage, then one TorchTrainer per chain) with the default resources
(one CPU per trial, so a 2-core machine runs two chains at once, one torch thread each).

Reports (issue 5 targets):
  * per-round overhead after a chain has started = Tune's time_this_iter_s minus the round's
    own wall time measured inside the chain loop (target <= 1 s);
  * sweep wall time, Ray / bare loop (target <= 1.15x);
  * the shared dense prefix: training steps executed vs the naive total (every chain training
    its own dense run).

    python bench/ray_overhead.py [--preset tiny] [--layers N] [--steps 300] [--rewinds 0,30] [--rates 0.5,0.7]
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
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--layers", type=int, default=None, help="truncate the backbone (minilm)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rewinds", default="0,30")
    ap.add_argument("--rates", default="0.5,0.7")
    ap.add_argument("--target", type=float, default=0.8)
    ap.add_argument("--n-train", type=int, default=2048)
    a = ap.parse_args()
    import ray
    from ray import tune

    from ltvl.core.imp import run_chain_with_trainer
    from ltvl.core.train import Trainer
    from ltvl.params.resolve import resolve_chain
    from ltvl.ray.stages import run_chains, stage_results
    from ltvl.vl.assemble import build_vl
    from ltvl.vl.data.synthetic import make_synthetic

    tmp = Path(tempfile.mkdtemp())
    make_synthetic("vqa", tmp / "data", n_train=a.n_train, n_test=256)
    base = {"task": "vqa", "data": str(tmp / "data"), "preset": a.preset, "layers": a.layers, "steps": a.steps,
            "batch_size": 16, "eval_limit": None, "max_len": 12, "target_sparsity": a.target, "lr": 1e-3}
    rewinds = [int(x) for x in a.rewinds.split(",")]
    rates = [float(x) for x in a.rates.split(",")]
    points = [{**base, "rewind_step": rw, "rate": rt} for rw in rewinds for rt in rates]

    t = time.perf_counter()
    executed = naive = rounds = 0
    for p in points:
        job = resolve_chain(p)
        setup = build_vl(job.vl)
        res = run_chain_with_trainer(job.chain, setup.model_factory, Trainer(setup.data, job.chain.train),
                                     tmp / "bare", share_rewinds=rewinds)
        executed += sum(r.steps_trained for r in res.rounds)
        naive += a.steps + (len(res.rounds) - 1) * (a.steps - job.chain.rewind_step)
        rounds += len(res.rounds)
    bare = time.perf_counter() - t

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    t = time.perf_counter()
    grid = run_chains({**base, "rewind_step": tune.grid_search(rewinds), "rate": tune.grid_search(rates)},
                      root=tmp / "ray_chains", storage=tmp / "ray", name="bench")
    on_ray = time.perf_counter() - t
    overheads, ray_steps = [], 0
    for r in grid:
        df = r.metrics_dataframe
        overheads += list((df["time_this_iter_s"] - df["wall_s"]).iloc[1:])  # after the chain has started
        ray_steps += int(df["steps_trained"].sum())
    dense = stage_results(tmp / "ray", "bench", "dense")
    ray_steps += sum(int(r.metrics["dense_steps"]) for r in dense)
    ray.shutdown()
    print(f"machine: {machine()}")
    print(f"{len(points)} chains (rewind {rewinds} x rate {rates}, target {a.target}), {rounds} rounds, "
          f"{a.steps} steps, preset {a.preset}, synthetic VQA ({a.n_train} train)")
    print(f"bare loop: {bare:.1f} s; Ray: {on_ray:.1f} s; ratio {on_ray / bare:.2f}x (target <= 1.15x)")
    print(f"per-round overhead after start: median {statistics.median(overheads):.3f} s, "
          f"max {max(overheads):.3f} s over {len(overheads)} rounds (target <= 1 s)")
    print(f"training steps executed: bare {executed}, Ray {ray_steps}; naive (a dense run per chain) {naive}; "
          f"saving {1 - executed / naive:.1%}")


if __name__ == "__main__":
    main()
