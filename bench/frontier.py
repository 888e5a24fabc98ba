"""Is a ticket worth its cost? (#33) Every route to a sparse MiniLM on easy-VQA with the main job's
recipe, on one seed, sharing one dense run: IMP rewound to θ0 and θi and random pruning to 93.75%,
and at 87.5% and 93.75% the one-shot ticket, prune + fine-tune from θT, Wanda + fine-tune and GMP
(sweeps/configs/frontier.yaml; the study is --seeds 0,1,2, one sweep per seed into one experiment).

It runs that sweep (resumable: a re-run replays the chain stores), reads every round back from the
stores, and prints the frontier: at each sparsity the best arm, its metric with its standard
error (the binomial error on the evaluated questions: one seed), its optimizer steps (the dense
run's plus every pruned round of its chain so far) and their multiple of IMP's, and whether it is
ahead of the runner-up beyond two standard errors (ltvl.report.frontier, the same numbers
`ltvl report` shows).

    python bench/frontier.py [--seeds 0,1,2] [--set params.steps=20 ...] [--sparsity 0.875] [--no-run]

The last line reads: frontier: at 87.5% best arm = NAME (metric M, X× IMP's training steps)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine  # noqa: E402

CONFIG = "frontier"


def rounds_of(overrides: list[str]):
    """Every finished round of the sweep's chains, read from their stores, as the report's rows."""
    import pandas as pd

    from ltvl.core.dense import DenseStore
    from ltvl.core.imp import ChainStore
    from ltvl.params.resolve import ChainJob
    from ltvl.plan.config import find_config, load_config
    from ltvl.plan.plan import build_plan
    from ltvl.tracking.records import arm
    from ltvl.util.home import home

    cfg = load_config("rewind_grid", find_config(CONFIG), overrides)
    root = Path(cfg.root or home() / "sweeps" / cfg.name / "chains")
    rows, n_eval = [], {}
    for planned in build_plan(cfg).chains:
        job = planned.job
        assert isinstance(job, ChainJob)
        dense = DenseStore(root, job.dense, writer=False).record()
        if dense is not None and dense.metrics.get("n"):
            n_eval[job.params.task] = float(dense.metrics["n"])
        for rec in ChainStore(root, job.chain, writer=False).finished_rounds():
            rows.append({"chain_key": f"chain:{job.chain.sha256}", "task": job.params.task, "line": arm(job),
                         "seed": job.params.seed, "round": rec["round"], "sparsity": round(rec["sparsity"], 3),
                         "metric": rec["metrics"]["metric"], "steps": job.chain.train.steps,
                         "rewind_step": job.chain.rewind_step, "finetune": job.chain.finetunes,
                         "steps_trained": rec.get("steps_trained", 0)})
    return pd.DataFrame(rows), n_eval


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0", help="comma-separated seeds: one sweep per seed, one experiment")
    ap.add_argument("--set", action="append", default=[], help="override a sweep key, e.g. params.steps=20")
    ap.add_argument("--sparsity", type=float, default=0.875, help="the headline's sparsity")
    ap.add_argument("--no-run", action="store_true", help="only read the stores a previous run left")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    t0 = time.time()
    seeds = [int(s) for s in args.seeds.split(",")]
    sets = {seed: [*args.set, f"params.seed={seed}"] for seed in seeds}
    for seed in seeds if not args.no_run else []:
        ltvl = shutil.which("ltvl") or str(Path(sys.executable).parent / "ltvl")
        cmd = [ltvl, "sweep", "run", CONFIG] + [a for s in sets[seed] for a in ("--set", s)]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    print(f"sweep wall time: {time.time() - t0:.0f} s")

    import pandas as pd

    from ltvl.report import frontier

    parts = [rounds_of(sets[seed]) for seed in seeds]
    rounds = pd.concat([r for r, _ in parts])
    n_eval = {k: v for _, n in parts for k, v in n.items()}
    pts = frontier.points(rounds, n_eval)
    print(f"\nseeds: {seeds}; evaluated questions per metric: {n_eval}")
    print("\nevery arm (metric ± standard error: over seeds, or binomial with one; steps to reach it):")
    for row in pts.sort_values(["sparsity", "mean"], ascending=[True, False]).itertuples():
        print(f"  {row.sparsity:6.1%}  {row.line:34s} {row.mean:.4f} ± {row.se:.4f}  {int(row.cost):6,d} steps")
    print("\nbest arm per sparsity:")
    print(frontier.best_by_sparsity(pts).to_string(index=False))
    line, noise = frontier.headline(pts, args.sparsity)
    print(noise)
    print(f"frontier: {line}")


if __name__ == "__main__":
    main()
