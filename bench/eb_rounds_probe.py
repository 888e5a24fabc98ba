"""Probe (not a sweep strategy): early-bird *rounds* on the cost-to-ticket question.

Why: bench/RESULTS.md shows that on the cost-to-ticket question any strategy whose tries are full
IMP rounds reaches 1/3 of naive IMP's steps only if no jump ever loses a ticket, because every
try trains ``steps`` steps. A round serves two ends: its trained weights give the next mask,
and its metric says whether the level keeps p. Early-bird (You et al. 2020) says the first end
needs far fewer steps than training to the end. This probe splits the two:

  path          from the full dense run, prune ``--hop`` levels at a time; each pruned round
                trains ``mask ⊙ θ0`` only until the mask it will give (``--hop`` levels further)
                stops moving: under ``--threshold`` of its kept weights change between two
                draws ``--interval`` steps apart. Masks are drawn every ``--hop`` levels to the
                schedule's end.
  verification  the path's masks, highest level first, each trained for the full ``steps`` and
                judged against p x the full dense run's metric (the same reference as naive
                IMP); the first that keeps p is the answer.

Measured (bench/RESULTS.md, 2026-11-25): every path round settled by step 40, but its masks made
tickets 6-7 points below IMP's at 95.6%; 0.41 of naive steps, 0 of 3 answers within one level.

It reads the naive chains' answers and steps from the cost bench's results.json (same stores,
same recipe, same machine), so it trains only its own rounds; its dense runs are the bench's
(counted in full), and a recipe whose dense runs are not in the bench's store is refused before
any training. Run it with the overrides of the bench run it reads (the default), e.g.:

    python bench/eb_rounds_probe.py --set eval_limit=null --set adamw_impl=reference
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

sys.path.insert(0, os.path.dirname(__file__))
from _probe import add_bench_args, check_ranges, open_bench_run, train_ticket  # noqa: E402
from cost_to_ticket import _dense, _job  # noqa: E402


def _changed(a, b) -> float:
    """Fraction of a mask's kept weights that the other mask does not keep (same sparsity)."""
    kept = sum(int(t.sum()) for t in a.tensors.values())
    moved = sum(int((t & ~b.tensors[n]).sum()) for n, t in a.tensors.items())
    return moved / kept if kept else 0.0


def probe_task(params: dict, seed: int, work: str, p: float, hop: int, interval: int, threshold: float) -> dict:
    import torch

    from ltvl.core.train import derive_seed
    from ltvl.pruning.enforce import MaskEnforcer
    from ltvl.pruning.mask import Mask
    from ltvl.pruning.prune import prune_to_sparsity

    job, setup, trainer = _job(params, seed)
    spec, sp = job.chain, job.chain.sparsities()
    n, steps = len(sp), spec.train.steps
    got = _dense(job, setup, trainer, work)  # on disk: main() checked before any compute
    rewind, weights = got.theta(spec.rewind_step), got.final_weights()
    reference = got.record.metrics["metric"]

    def prune(w: dict, parent: Mask | None, level: int) -> Mask:
        return prune_to_sparsity(w, parent, sp[level - 1], method=spec.method, scope=spec.scope,
                                 seed=derive_seed(spec.train.seed, "prune", level - 1), metadata={"level": level})

    def kept_weights(model: torch.nn.Module, mask: Mask) -> dict[str, torch.Tensor]:
        ps = dict(model.named_parameters())
        return {k: ps[k].detach().clone() for k in mask.names}

    out: dict = {"seed": seed, "dense_metric": reference, "dense_steps": got.record.steps, "path": [],
                 "verify": []}
    path: dict[int, Mask] = {}
    level, parent = 0, Mask.dense_like({k: v.detach() for k, v in weights.items()})
    while True:
        nxt = min(level + hop, n)
        path[nxt] = prune(weights, parent, nxt)
        if nxt == n:
            break
        after = min(nxt + hop, n)
        t0 = time.perf_counter()
        model = setup.model_factory()
        enforcer = MaskEnforcer(model, path[nxt])
        point, until, previous, distances, settled = rewind, rewind.step, None, [], False
        while until < steps and not settled:
            until = min(until + interval, steps)
            trained = trainer.train(model, enforcer=enforcer, start=point, until=until, capture_at={until})
            point = trained.captured[until]
            drawn = prune(kept_weights(model, path[nxt]), path[nxt], after)
            if previous is not None:
                distances.append((until, _changed(drawn, previous)))
                settled = distances[-1][1] < threshold
            previous = drawn
        enforcer.remove()
        out["path"].append({"level": nxt, "steps": until - rewind.step, "settled": settled, "distances": distances,
                            "wall_s": time.perf_counter() - t0})
        weights, parent, level = kept_weights(model, path[nxt]), path[nxt], nxt
    answer = 0
    for lv in sorted(path, reverse=True):
        t0 = time.perf_counter()
        metric, steps_run = train_ticket(setup, trainer, path[lv], rewind)
        kept = metric >= p * reference
        out["verify"].append({"level": lv, "metric": metric, "kept": kept, "steps": steps_run,
                              "wall_s": time.perf_counter() - t0, "mask_sha256": path[lv].sha256})
        if kept:
            answer = lv
            break
    out["answer"] = answer
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bench_args(ap)
    ap.add_argument("--hop", type=int, default=2, help="levels between the path's masks")
    ap.add_argument("--interval", type=int, default=20, help="steps between a path round's mask draws")
    ap.add_argument("--threshold", type=float, default=0.02, help="settled when under this share of kept weights "
                    "moved between two draws")
    a = ap.parse_args()
    check_ranges(a, [("--hop", a.hop >= 1, "levels between masks, >= 1"),
                     ("--interval", a.interval >= 1, "steps between mask draws, >= 1"),
                     ("--threshold", 0 < a.threshold < 1, "a share of kept weights, in (0, 1)")])

    from ltvl.util.atomic import atomic_write_text

    run = open_bench_run(a)
    run.start(a.config, f"hop {a.hop}, interval {a.interval}, threshold {a.threshold}")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.procs, mp_context=get_context("spawn")) as pool:
        futures = {s: pool.submit(probe_task, run.params, s, str(run.work), run.args.p, a.hop, a.interval,
                                  a.threshold) for s in run.seeds}
        results = {s: f.result() for s, f in futures.items()}
    atomic_write_text(run.work / f"eb-rounds-hop{a.hop}.json",
                      json.dumps({"args": vars(a), "results": results, "wall_s": time.perf_counter() - t0}, indent=1))

    naive_steps, probe_steps, within = 0, 0, 0
    for s, r in results.items():
        truth, n_steps = run.naive(s)
        steps = r["dense_steps"] + sum(x["steps"] for x in r["path"]) + sum(x["steps"] for x in r["verify"])
        naive_steps, probe_steps = naive_steps + n_steps, probe_steps + steps
        within += abs(r["answer"] - truth) <= 1
        print(f"seed {s}: answer L{r['answer']} (naive L{truth}, {r['answer'] - truth:+d}); steps {steps} of "
              f"naive {n_steps}; path " + " ".join(f"L{x['level']}:{x['steps']}{'' if x['settled'] else '!'}"
                                                    for x in r["path"])
              + "; verified " + " ".join(f"L{x['level']} {x['metric']:.4f}{'+' if x['kept'] else '-'}"
                                         for x in r["verify"])
              + f" (threshold {run.args.p * r['dense_metric']:.4f})")
    print(f"total wall time: {time.perf_counter() - t0:.0f} s")
    print(f"eb-rounds probe steps ratio = {probe_steps / naive_steps:.2f} (answers within one level: "
          f"{within}/{len(run.seeds)} seeds)")


if __name__ == "__main__":
    main()
