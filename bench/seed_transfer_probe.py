"""Probe (not a sweep strategy): one seed finds the path, the other seeds only check its masks.

Why: bench/RESULTS.md shows that on the cost-to-ticket question a strategy whose every seed walks
its own path of full IMP rounds reaches 1/3 of naive IMP's steps only if no jump on any seed ever
loses a ticket: 3 dense runs leave 4 tries per seed, exactly a jump-4 path. But the seeds share
the pre-trained θ0 of every encoder weight, and the paper's own result is that tickets transfer
(across tasks, even). So the budget can be spent unevenly:

  lead       the first seed searches alone with small jumps (``--jump``, default 2: two 20% IMP
             rounds in one) and bisection after a loss: ltvl's bracket search. Its masks for
             every level are kept: a level it trained as its own mask, any other pruned from the
             trained weights of the highest level below it that kept p (free: no training).
  followers  each other seed trains the lead's mask at the lead's answer from its own θ0 (its
             own head init and data order) and judges it against p × its own full dense run;
             then it walks one level at a time, up while the tickets keep p, down while they do
             not. Its answer is the highest level that kept p.

Cost in rounds (one round = one dense run): 3 dense runs, the lead's ~7 tries at jump 2, and
1-3 per follower, about 13 of naive's 45. What it gives up: the followers' masks are the lead's,
so the seeds' answers are no longer independent draws of IMP's mask; they are independent draws
of training on one mask. The printout says how much of θ0 the seeds share.

It reads the cost bench's results.json (naive answers and steps) and reuses its dense runs; a
recipe whose dense runs are not in that store is refused before any training. Run it with the
overrides of the bench run it reads (the default), e.g.:

    python bench/seed_transfer_probe.py --set eval_limit=null --set adamw_impl=reference

Since measured (bench/RESULTS.md), it is a sweep option: ``seed_informed: true`` with
``share_masks: true`` (ltvl.core.lead_masks), measured as the cost bench's ``shared masks`` row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _probe import add_bench_args, check_ranges, open_bench_run, train_ticket  # noqa: E402
from cost_to_ticket import _dense, _job  # noqa: E402


def walk_from(start: int, n_levels: int, kept_at: Callable[[int], bool]) -> int:
    """The highest level that keeps p, walking from ``start`` as ltvl.core.level_search.walk_level does."""
    from ltvl.core.level_search import walk_level

    good, bad = 0, None
    while (level := walk_level(good, bad, n_levels, start)) is not None:
        good, bad = (level, bad) if kept_at(level) else (good, level if bad is None else min(bad, level))
    return good


def lead_task(params: dict, seed: int, work: str, masks_dir: str, p: float, jump: int, threads: int) -> dict:
    """The lead seed's bracket search; writes a mask for every level of the schedule to ``masks_dir``."""
    import torch

    from ltvl.core.level_search import ImpLevels, bracket_search
    from ltvl.core.train import derive_seed
    from ltvl.pruning.maskfile import save_mask
    from ltvl.pruning.prune import prune_to_sparsity

    job, setup, trainer = _job(params, seed)
    torch.set_num_threads(threads)  # it runs alone: the followers need its masks
    spec, sp = job.chain, job.chain.sparsities()
    got = _dense(job, setup, trainer, work)  # on disk: main() checked before any compute
    reference = got.record.metrics["metric"]
    levels = ImpLevels(sp, setup.model_factory, trainer, got.theta(spec.rewind_step), got.final_weights(),
                       reference, p, method=spec.method, scope=spec.scope, seed=spec.train.seed)
    res = bracket_search(len(sp), levels, jump=jump)
    out_dir = Path(masks_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = {}
    for level in range(1, len(sp) + 1):
        if level in levels.kept:
            mask, source = levels.kept[level][0], level
        else:  # the IMP prune of the closest kept level's trained weights: what a jump from it draws
            source = max(k for k in levels.kept if k < level)
            parent, weights = levels.kept[source]
            mask = prune_to_sparsity(weights, parent, sp[level - 1], method=spec.method, scope=spec.scope,
                                     seed=derive_seed(spec.train.seed, "prune", level - 1),
                                     metadata={"level": level, "parent_level": source})
        save_mask(mask, out_dir / f"L{level:02d}.safetensors")
        sources[level] = source
    return {"seed": seed, "dense_metric": reference, "dense_steps": got.record.steps, "answer": res.answer,
            "tries": [asdict(t) for t in res.tries], "mask_sources": sources}


def follower_task(params: dict, seed: int, work: str, masks_dir: str, p: float, start: int, lead_seed: int) -> dict:
    """Walk the lead's masks from ``start`` on this seed's own θ0 and dense reference."""
    from ltvl.core.dense import DenseSpec, DenseStore
    from ltvl.params.resolve import resolve_chain
    from ltvl.pruning.maskfile import load_mask

    job, setup, trainer = _job(params, seed)
    spec, n = job.chain, len(job.chain.sparsities())
    got = _dense(job, setup, trainer, work)
    rewind, reference = got.theta(spec.rewind_step), got.record.metrics["metric"]
    lead_chain = resolve_chain({**params, "seed": lead_seed}).chain
    lead_theta = DenseStore(Path(work) / "chains", DenseSpec.of(lead_chain), writer=False).get_theta(
        spec.rewind_step).model
    names = load_mask(Path(masks_dir) / "L01.safetensors").names
    total = sum(rewind.model[k].numel() for k in names)
    shared = sum(int((rewind.model[k] == lead_theta[k]).sum()) for k in names) / total

    tries: list[dict] = []

    def kept_at(level: int) -> bool:
        t0 = time.perf_counter()
        metric, steps = train_ticket(setup, trainer, load_mask(Path(masks_dir) / f"L{level:02d}.safetensors"), rewind)
        tries.append({"level": level, "metric": metric, "kept": metric >= p * reference, "steps": steps,
                      "wall_s": time.perf_counter() - t0})
        return tries[-1]["kept"]

    return {"seed": seed, "dense_metric": reference, "dense_steps": got.record.steps,
            "answer": walk_from(start, n, kept_at), "tries": tries, "theta0_shared": shared}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bench_args(ap)
    ap.add_argument("--jump", type=int, default=2, help="the lead's jump: levels pruned per try while tickets keep p")
    ap.add_argument("--lead-threads", type=int, default=2, help="torch threads of the lead's search (it runs alone)")
    a = ap.parse_args()
    check_ranges(a, [("--jump", a.jump >= 1, "levels per try, >= 1"),
                     ("--lead-threads", a.lead_threads >= 1, "threads, >= 1")])

    from ltvl.util.atomic import atomic_write_text

    run = open_bench_run(a)
    if len(run.seeds) < 2:
        raise SystemExit(f"the bench run at {run.work} has one seed ({run.seeds}): the probe needs a lead and "
                         "at least one follower; run bench/cost_to_ticket.py with --seeds 0,1,2")
    run.start(a.config, f"lead seed {run.seeds[0]}, jump {a.jump}")
    t0 = time.perf_counter()
    lead_seed, masks_dir = run.seeds[0], str(run.work / f"seed-transfer-jump{a.jump}" / "lead-masks")
    ctx = get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        lead = pool.submit(lead_task, run.params, lead_seed, str(run.work), masks_dir, run.args.p, a.jump,
                           a.lead_threads).result()
    lead_wall = time.perf_counter() - t0
    with ProcessPoolExecutor(a.procs, mp_context=ctx) as pool:
        futures = {s: pool.submit(follower_task, run.params, s, str(run.work), masks_dir, run.args.p, lead["answer"],
                                  lead_seed) for s in run.seeds[1:]}
        followers = {s: f.result() for s, f in futures.items()}
    wall = time.perf_counter() - t0
    results = {lead_seed: lead, **followers}
    atomic_write_text(run.work / f"seed-transfer-jump{a.jump}" / "results.json",
                      json.dumps({"args": vars(a), "results": results, "lead_wall_s": lead_wall, "wall_s": wall},
                                 indent=1))

    naive_steps, probe_steps, within = 0, 0, 0
    for s, r in results.items():
        truth, n_steps = run.naive(s)
        steps = r["dense_steps"] + sum(t["steps"] for t in r["tries"])
        naive_steps, probe_steps = naive_steps + n_steps, probe_steps + steps
        within += abs(r["answer"] - truth) <= 1
        role = "lead" if s == lead_seed else f"follower, θ0 shared with the lead: {r['theta0_shared']:.1%}"
        print(f"seed {s} ({role}): answer L{r['answer']} (naive L{truth}, {r['answer'] - truth:+d}); steps {steps} "
              f"of naive {n_steps}; tries " + " ".join(
                  f"L{t['level']}{'<-L' + str(t['parent']) if 'parent' in t else ''} {t['metric']:.4f}"
                  f"{'+' if t['kept'] else '-'}" for t in r["tries"])
              + f" (threshold {run.args.p * r['dense_metric']:.4f})")
    print(f"total wall time: {wall:.0f} s (the lead's search {lead_wall:.0f} s)")
    print(f"seed-transfer probe steps ratio = {probe_steps / naive_steps:.2f} (answers within one level: "
          f"{within}/{len(run.seeds)} seeds)")


if __name__ == "__main__":
    main()
