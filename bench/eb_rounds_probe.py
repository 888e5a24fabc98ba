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
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine  # noqa: E402
from cost_to_ticket import REPO, _dense, _job  # noqa: E402


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
        model = setup.model_factory()
        enforcer = MaskEnforcer(model, path[lv])
        trained = trainer.train(model, enforcer=enforcer, start=rewind, capture_at=[])
        metric = float(trainer.evaluate(model)["metric"])
        enforcer.remove()
        kept = metric >= p * reference
        out["verify"].append({"level": lv, "metric": metric, "kept": kept, "steps": trained.steps_run,
                              "wall_s": time.perf_counter() - t0, "mask_sha256": path[lv].sha256})
        if kept:
            answer = lv
            break
    out["answer"] = answer
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "sweeps" / "configs" / "rewind_grid.yaml"))
    ap.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                    help="override a recipe param (default: the cost bench run's own overrides)")
    ap.add_argument("--hop", type=int, default=2, help="levels between the path's masks")
    ap.add_argument("--interval", type=int, default=20, help="steps between a path round's mask draws")
    ap.add_argument("--threshold", type=float, default=0.02, help="settled when under this share of kept weights "
                    "moved between two draws")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--work", default=None, help="the cost bench's work dir (default: LTVL_HOME/bench/cost-to-ticket)")
    a = ap.parse_args()
    for flag, ok, why in (("--hop", a.hop >= 1, "levels between masks, >= 1"),
                          ("--interval", a.interval >= 1, "steps between mask draws, >= 1"),
                          ("--threshold", 0 < a.threshold < 1, "a share of kept weights, in (0, 1)"),
                          ("--procs", a.procs >= 1, "processes, >= 1")):
        if not ok:
            raise SystemExit(f"{flag} {getattr(a, flag[2:])} is out of range: it is {why}")

    from ltvl.core.dense import DenseSpec, DenseStore
    from ltvl.params.resolve import data_for, resolve_chain
    from ltvl.sweep.config import load_config
    from ltvl.util.atomic import atomic_write_text
    from ltvl.util.home import home
    from ltvl.vl.datasets import resolve_dataset

    work = Path(a.work) if a.work else home() / "bench" / "cost-to-ticket"
    if not (work / "results.json").exists():
        raise SystemExit(f"no cost bench results at {work / 'results.json'}: the probe compares against its "
                         "naive chains and reuses its dense runs; run bench/cost_to_ticket.py first "
                         "(or give its --work)")
    bench = json.loads((work / "results.json").read_text())
    ba = argparse.Namespace(**bench["args"])
    a.set = ba.set if a.set is None else a.set
    seeds = [int(s) for s in ba.seeds.split(",")]
    cfg = load_config("rewind_grid", a.config, [f"params.{kv}" for kv in a.set])
    params = {**cfg.params, "schedule": "geometric", "rate": ba.rate, "target_sparsity": ba.target,
              "rewind_step": ba.rewind, "method": "magnitude"}
    for s in seeds:  # the bench's dense runs are the reference: a recipe that has none is not its question
        if DenseStore(work / "chains", DenseSpec.of(resolve_chain({**params, "seed": s}).chain),
                      writer=False).record() is None:
            raise SystemExit(f"no dense run of this recipe for seed {s} in {work / 'chains'}: the probe reuses "
                             f"the cost bench's; give the bench run's overrides (it used --set {ba.set or 'nothing'}, "
                             f"this call --set {a.set or 'nothing'}; if they agree, the config changed since, e.g. "
                             "adamw_impl is fused since 2026-11-25: add --set adamw_impl=reference)")
    job = resolve_chain({**params, "seed": seeds[0]})
    resolve_dataset(data_for(job.params))
    sp = job.chain.sparsities()
    print(f"machine: {machine()}")
    print(f"recipe: {a.config} params + {a.set}; the cost bench's question (rate {ba.rate} to {ba.target}, "
          f"{len(sp)} levels, p = {ba.p}, seeds {seeds}); hop {a.hop}, interval {a.interval}, "
          f"threshold {a.threshold}", flush=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.procs, mp_context=get_context("spawn")) as pool:
        futures = {s: pool.submit(probe_task, params, s, str(work), ba.p, a.hop, a.interval, a.threshold)
                   for s in seeds}
        results = {s: f.result() for s, f in futures.items()}
    atomic_write_text(work / f"eb-rounds-hop{a.hop}.json",
                      json.dumps({"args": vars(a), "results": results, "wall_s": time.perf_counter() - t0}, indent=1))

    naive_steps, probe_steps, within = 0, 0, 0
    for s, r in results.items():
        nv = bench["results"][f"naive/{s}"]
        truth = max([lv["level"] for lv in nv["levels"] if lv["metric"] >= ba.p * nv["dense_metric"]], default=0)
        n_steps = nv["dense_steps"] + sum(lv["steps"] for lv in nv["levels"])
        steps = r["dense_steps"] + sum(x["steps"] for x in r["path"]) + sum(x["steps"] for x in r["verify"])
        naive_steps, probe_steps = naive_steps + n_steps, probe_steps + steps
        within += abs(r["answer"] - truth) <= 1
        print(f"seed {s}: answer L{r['answer']} (naive L{truth}, {r['answer'] - truth:+d}); steps {steps} of "
              f"naive {n_steps}; path " + " ".join(f"L{x['level']}:{x['steps']}{'' if x['settled'] else '!'}"
                                                    for x in r["path"])
              + "; verified " + " ".join(f"L{x['level']} {x['metric']:.4f}{'+' if x['kept'] else '-'}"
                                         for x in r["verify"])
              + f" (threshold {ba.p * r['dense_metric']:.4f})")
    print(f"total wall time: {time.perf_counter() - t0:.0f} s")
    print(f"eb-rounds probe steps ratio = {probe_steps / naive_steps:.2f} (answers within one level: "
          f"{within}/{len(seeds)} seeds)")


if __name__ == "__main__":
    main()
