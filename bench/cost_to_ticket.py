"""Cost to a ticket: the highest sparsity whose ticket keeps p of dense, naively and cheaply.

The question (issue 16): on the main job's real recipe (its params from
sweeps/configs/rewind_grid.yaml: MiniLM on easy-VQA), with a geometric schedule at rate 0.2 up
to 95% sparsity, which is the highest level whose IMP ticket keeps p = 99% of its seed's dense
metric? Answered per seed, by each strategy, on the same machine in one run:

  naive            one chain per seed, every level, no early stop (ltvl.core.imp.run_chain)
  early abandon    the same chains stopped at their first level below p. Its rounds are the
                   naive chain's rounds (bit-identical: tests/test_cost_strategies.py), so its
                   cost and answer are read from them, never re-trained
  + adaptive rate  bracket search (ltvl.core.level_search): jumps of --jump levels while tickets
                   keep p, then bisection between the last good and first bad level
  + seed-informed  seeds after the first cap their jumps at the first seed's answer, try the level
                   above it, then jump on
  + early-bird     the dense phase stops once its magnitude mask settles (ltvl.core.early_bird);
                   tickets are judged against the early-bird model's metric, a weaker reference
  shared masks     what a sweep with seed_informed + share_masks runs: the first seed's adaptive
                   chain (jump --share-jump) searches; the others walk its masks one level at a
                   time from its answer on their own θ0 and dense run (ltvl.core.lead_masks).
                   Real chains in the bench's store (resumable); not cumulative with the rows above

Every strategy pays for its dense phase, even where its run is shared with another strategy on
disk (the same dense run, computed once). Wall time is the sum of the trainings and evaluations
a strategy needs, each measured where it ran (one torch thread per process, --procs processes).

    python bench/cost_to_ticket.py [--seeds 0,1,2] [--jump 4] [--procs 2] [--set steps=20 ...]

The main job runs AdamW fused since 2026-11-25; the runs in bench/RESULTS.md used the reference
kernel: add --set adamw_impl=reference to replay their stores.

The last line reads: cost-to-ticket steps ratio = X (answers within one level: K/N seeds)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _job(params: dict, seed: int):
    """The chain job, its dataset resolved, its model and trainer built (in the calling process)."""
    import torch

    from ltvl.core.train import Trainer
    from ltvl.params.resolve import data_for, resolve_chain
    from ltvl.vl.assemble import build_vl
    from ltvl.vl.datasets import resolve_dataset

    torch.set_num_threads(int(os.environ.get("LTVL_BENCH_THREADS", "1")))
    job = resolve_chain({**params, "seed": seed})
    job = job.with_data(str(resolve_dataset(data_for(job.params))))
    setup = build_vl(job.vl)
    return job, setup, Trainer(setup.data, job.chain.train)


def naive_task(params: dict, seed: int, work: str) -> dict:
    """Every level of one seed's IMP chain (resumable: a re-run replays the finished rounds)."""
    from ltvl.core.dense import DenseSpec, DenseStore
    from ltvl.core.imp import run_chain_with_trainer

    job, setup, trainer = _job(params, seed)
    res = run_chain_with_trainer(job.chain, setup.model_factory, trainer, Path(work) / "chains",
                                 data_sha256=setup.info.content_sha256)
    dense = DenseStore(Path(work) / "chains", DenseSpec.of(job.chain), writer=False).record()
    return {"seed": seed, "dense_metric": dense.metrics["metric"], "dense_steps": dense.steps,
            "dense_wall_s": dense.wall_s, "n_eval": dense.metrics.get("n"), "majority": setup.data.majority_control(),
            "levels": [{"level": r.round, "sparsity": r.sparsity, "metric": r.metrics["metric"],
                        "steps": job.chain.train.steps - job.chain.rewind_step, "wall_s": r.wall_s,
                        "mask_sha256": r.mask_sha256} for r in res.rounds[1:]]}


def _dense(job, setup, trainer, work: str):
    """The seed's full dense run from the bench's store: trained once, read by every strategy."""
    from ltvl.core.dense import DenseSpec, DenseStore, ensure_dense

    spec = job.chain
    return ensure_dense(DenseStore(Path(work) / "chains", DenseSpec.of(spec)), {spec.rewind_step},
                        setup.model_factory, trainer.train, trainer.evaluate, data_sha256=setup.info.content_sha256)


def search_task(params: dict, seed: int, work: str, p: float, jump: int, start: int | None,
                early_bird: dict | None) -> dict:
    """One seed's bracket search, from the shared dense run or from an early-bird dense phase."""
    from ltvl.core.early_bird import train_until_early_bird
    from ltvl.core.level_search import ImpLevels, bracket_search, next_level

    job, setup, trainer = _job(params, seed)
    spec, sparsities = job.chain, job.chain.sparsities()
    out: dict = {"seed": seed, "jump": jump, "start": start}
    t0 = time.perf_counter()
    if early_bird is None:
        got = _dense(job, setup, trainer, work)
        rewind, weights = got.theta(spec.rewind_step), got.final_weights()
        out.update(dense_metric=got.record.metrics["metric"], dense_steps=got.record.steps,
                   dense_wall_s=got.record.wall_s)
    else:
        model = setup.model_factory()
        first = sparsities[next_level(0, None, len(sparsities), jump, start) - 1]  # the first try's mask
        eb = train_until_early_bird(trainer, model, spec.prunable, first, interval=early_bird["interval"],
                                    threshold=early_bird["threshold"], capture_at=[spec.rewind_step])
        metric = trainer.evaluate(model)["metric"]
        rewind, weights = eb.captured[spec.rewind_step], eb.weights
        out.update(dense_metric=metric, dense_steps=eb.step, dense_wall_s=time.perf_counter() - t0,
                   early_bird={"step": eb.step, "settled": eb.settled, "distances": eb.distances})
    levels = ImpLevels(sparsities, setup.model_factory, trainer, rewind, weights, out["dense_metric"], p,
                       method=spec.method, scope=spec.scope, seed=spec.train.seed)
    res = bracket_search(len(sparsities), levels, jump=jump, start=start)
    out.update(answer=res.answer, tries=[asdict(t) for t in res.tries])
    return out


# ---------------------------------------------------------------- the strategies, from task outputs
def shared_task(params: dict, seed: int, work: str, p: float, jump: int, lead: int | None, start: int | None) -> dict:
    """One chain of the shared-masks strategy: the lead's adaptive search (``lead`` None), or a
    follower walking the lead's masks from ``start`` (the sweep's share_masks)."""
    from ltvl.core.imp import run_chain_with_trainer

    sched = {"schedule": "adaptive", "keep": p, "jump": jump}
    if lead is not None and start:
        sched.update(start_level=start, masks_of_seed=lead)
    job, setup, trainer = _job({**params, **sched}, seed)
    dense = _dense(job, setup, trainer, work).record  # the bench's full dense run: naive's reference too
    res = run_chain_with_trainer(job.chain, setup.model_factory, trainer, Path(work) / "chains",
                                 data_sha256=setup.info.content_sha256)
    tries = [{"level": r.level, "parent": r.parent_level, "kept": r.kept, "metric": r.metrics["metric"],
              "steps": job.chain.train.steps - job.chain.rewind_step, "wall_s": r.wall_s} for r in res.rounds[1:]]
    return {"seed": seed, "dense_metric": dense.metrics["metric"], "dense_steps": dense.steps,
            "dense_wall_s": dense.wall_s, "answer": max([t["level"] for t in tries if t["kept"]], default=0),
            "tries": tries, "lead": lead, "start": start}


def _answer_naive(n: dict, threshold: float) -> int:
    kept = [lv["level"] for lv in n["levels"] if lv["metric"] >= threshold]
    return max(kept, default=0)


def early_abandon(n: dict, p: float) -> dict:
    """The naive chain up to and including its first level below p."""
    threshold = p * n["dense_metric"]
    used = []
    for lv in n["levels"]:
        used.append(lv)
        if lv["metric"] < threshold:
            break
    answer = used[-1]["level"] - 1 if used and used[-1]["metric"] < threshold else len(used)
    return {"seed": n["seed"], "answer": answer, "steps": n["dense_steps"] + sum(lv["steps"] for lv in used),
            "wall_s": n["dense_wall_s"] + sum(lv["wall_s"] for lv in used), "tries": len(used)}


def _cost(s: dict) -> dict:
    return {"seed": s["seed"], "answer": s["answer"], "steps": s["dense_steps"] + sum(t["steps"] for t in s["tries"]),
            "wall_s": s["dense_wall_s"] + sum(t["wall_s"] for t in s["tries"]), "tries": len(s["tries"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "sweeps" / "configs" / "rewind_grid.yaml"),
                    help="the sweep config whose params are the recipe (default: the main job's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe param")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rate", type=float, default=0.2)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--rewind", type=int, default=0, help="rewind step i (0 = θ0)")
    ap.add_argument("--p", type=float, default=0.99, help="a ticket must keep p x its seed's dense metric")
    ap.add_argument("--jump", type=int, default=4, help="levels per jump of the adaptive rate")
    ap.add_argument("--eb-interval", type=int, default=20, help="steps between early-bird masks")
    ap.add_argument("--eb-threshold", type=float, default=0.05, help="settled below this mask distance")
    ap.add_argument("--procs", type=int, default=2, help="processes (one torch thread each)")
    ap.add_argument("--work", default=None, help="stores and results (default: LTVL_HOME/bench/cost-to-ticket)")
    ap.add_argument("--share-jump", type=int, default=2, help="the shared-masks lead's jump")
    ap.add_argument("--only", default=None, metavar="KIND[,KIND]", help="run only these strategies (naive, "
                    "adaptive, eb, shared) and merge them into the work dir's results.json, whose run must "
                    "have had the same question (seeds, rate, target, rewind, p, --set)")
    ap.add_argument("--report", action="store_true", help="print the tables from the work dir's results.json, "
                    "train nothing")
    a = ap.parse_args()

    from ltvl.util.atomic import atomic_write_text
    from ltvl.util.home import home

    work = Path(a.work) if a.work else home() / "bench" / "cost-to-ticket"
    saved = work / "results.json"
    if a.report:  # the tables again, from the saved results: the run's own args, not this call's (no data needed)
        from ltvl.pruning.schedule import Schedule

        if not saved.exists():
            raise SystemExit(f"--report: no results at {saved}; run the benchmark first (or give its --work)")
        got = json.loads(saved.read_text())
        ga = argparse.Namespace(**got["args"])
        levels = Schedule("geometric", ga.rate, ga.target).sparsities()
        steps = got["results"][f"naive/{ga.seeds.split(',')[0]}"]["dense_steps"]
        return summarize(ga, got["results"], levels, steps, got.get("wall_s"), saved)

    from ltvl.params.resolve import data_for, resolve_chain
    from ltvl.plan.config import load_config
    from ltvl.vl.datasets import resolve_dataset

    cfg = load_config("rewind_grid", a.config, [f"params.{kv}" for kv in a.set])
    params = {**cfg.params, "schedule": "geometric", "rate": a.rate, "target_sparsity": a.target,
              "rewind_step": a.rewind, "method": "magnitude"}
    seeds = [int(s) for s in a.seeds.split(",")]
    job = resolve_chain({**params, "seed": seeds[0]})  # every bad input refused before any training
    if not 0 < a.eb_interval <= job.chain.train.steps:
        raise SystemExit(f"--eb-interval {a.eb_interval} is not in (0, steps={job.chain.train.steps}]: the "
                         "early-bird row draws a mask every that many dense steps; e.g. a tenth of the steps")
    if a.share_jump < 1:
        raise SystemExit(f"--share-jump {a.share_jump} is out of range: it is the shared-masks lead's levels per "
                         "try, >= 1 (2 was measured)")
    config, overrides = a.config, a.set  # this call's recipe (--only keeps the saved run's flags in ``a``)
    kinds = {"naive", "adaptive", "eb", "shared"}
    only = set(a.only.split(",")) if a.only else kinds
    results: dict[str, dict] = {}
    earlier_wall: float | None = None  # --only: the whole benchmark's wall time, kept
    if a.only:
        if not only <= kinds:
            raise SystemExit(f"--only {a.only}: unknown strategies {sorted(only - kinds)}; choose from {sorted(kinds)}")
        if not saved.exists():
            raise SystemExit(f"--only merges into {saved}, which does not exist: run the whole benchmark first")
        got = json.loads(saved.read_text())
        same = ("seeds", "rate", "target", "rewind", "p")
        if any(got["args"].get(k) != vars(a)[k] for k in same):
            was = ", ".join(f"--{k} {got['args'].get(k)}" for k in same)
            raise SystemExit(f"--only: {saved} answers another question ({was}); give the same flags, or another "
                             "--work")
        from ltvl.core.dense import DenseSpec, DenseStore
        for s in seeds:  # its naive rows are compared with these: the recipe must be theirs (same dense runs)
            if DenseStore(work / "chains", DenseSpec.of(resolve_chain({**params, "seed": s}).chain),
                          writer=False).record() is None:
                raise SystemExit(f"--only: no dense run of this recipe for seed {s} in {work / 'chains'}; the saved "
                                 f"run used --set {got['args'].get('set')} (the config may have changed since: "
                                 "adamw_impl is fused since 2026-11-25, add --set adamw_impl=reference)")
        results = {k: v for k, v in got["results"].items() if k.split("/")[0].split("-")[0] not in only}
        earlier_wall = got.get("wall_s")
        a = argparse.Namespace(**{**got["args"], "only": a.only, "share_jump": a.share_jump, "procs": a.procs,
                                  "only_set": a.set})
    resolve_dataset(data_for(job.params))  # prepared once, before the processes race for it
    sparsities = job.chain.sparsities()
    work.mkdir(parents=True, exist_ok=True)
    eb = {"interval": a.eb_interval, "threshold": a.eb_threshold}
    print(f"machine: {machine()}")
    print(f"recipe: {config} params + {overrides or 'no overrides'}; rewind {a.rewind}, geometric rate {a.rate} "
          f"to {a.target}: {len(sparsities)} levels ({', '.join(f'{s:.1%}' for s in sparsities)}); "
          f"p = {a.p}; seeds {seeds}; {a.procs} processes", flush=True)

    t0 = time.perf_counter()
    pool = ProcessPoolExecutor(a.procs, mp_context=get_context("spawn"))
    pending: dict[Future, str] = {}

    def submit(key: str, fn, *args) -> None:
        pending[pool.submit(fn, *args)] = key

    # the first seed's searches first: the seed-informed searches of the others wait on them
    if "shared" in only:
        submit(f"shared/{seeds[0]}", shared_task, params, seeds[0], str(work), a.p, a.share_jump, None, None)
    if "adaptive" in only:
        submit(f"adaptive/{seeds[0]}", search_task, params, seeds[0], str(work), a.p, a.jump, None, None)
    if "eb" in only:
        submit(f"eb/{seeds[0]}", search_task, params, seeds[0], str(work), a.p, a.jump, None, eb)
    for s in seeds if "naive" in only else []:
        submit(f"naive/{s}", naive_task, params, s, str(work))
    for s in seeds[1:] if "adaptive" in only else []:
        submit(f"adaptive/{s}", search_task, params, s, str(work), a.p, a.jump, None, None)
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for f in done:
            key = pending.pop(f)
            results[key] = f.result()
            kind, seed = key.split("/")
            print(f"  {time.perf_counter() - t0:7.0f} s  {key} done", flush=True)
            if seed == str(seeds[0]) and kind == "shared":  # the others walk its masks from its answer
                for s in seeds[1:]:
                    submit(f"shared/{s}", shared_task, params, s, str(work), a.p, a.share_jump, seeds[0],
                           results[key]["answer"])
            if seed == str(seeds[0]) and kind in ("adaptive", "eb"):
                start = results[key]["answer"] or None  # a first seed that kept nothing gives no start
                for s in seeds[1:]:
                    submit(f"{kind}-informed/{s}", search_task, params, s, str(work), a.p, a.jump, start,
                           eb if kind == "eb" else None)
    pool.shutdown()
    wall = time.perf_counter() - t0
    if a.only:  # the whole benchmark's wall time stays; this call's is recorded beside it
        atomic_write_text(saved, json.dumps({"args": vars(a), "results": results, "wall_s": earlier_wall,
                                             "only_wall_s": wall}, indent=1))
        print(f"wall time of this call (--only {a.only}): {wall:.0f} s")
        return summarize(a, results, sparsities, job.chain.train.steps, earlier_wall, saved)
    atomic_write_text(saved, json.dumps({"args": vars(a), "results": results, "wall_s": wall}, indent=1))
    summarize(a, results, sparsities, job.chain.train.steps, wall, saved)


def summarize(a: argparse.Namespace, results: dict[str, dict], sparsities: list[float], train_steps: int,
              wall_total: float | None, saved: Path) -> None:
    """The strategies' table, every try, the early-bird stops, and the last line."""
    seeds = [int(s) for s in a.seeds.split(",")]
    naive = {s: results[f"naive/{s}"] for s in seeds}
    rows = {
        "naive": [{"seed": s, "answer": _answer_naive(n, a.p * n["dense_metric"]),
                   "steps": n["dense_steps"] + sum(lv["steps"] for lv in n["levels"]),
                   "wall_s": n["dense_wall_s"] + sum(lv["wall_s"] for lv in n["levels"]), "tries": len(n["levels"])}
                  for s, n in naive.items()],
        "early abandon": [early_abandon(n, a.p) for n in naive.values()],
        f"+ adaptive rate (jump {a.jump})": [_cost(results[f"adaptive/{s}"]) for s in seeds],
        "+ seed-informed": [_cost(results[f"adaptive/{seeds[0]}"])]
                           + [_cost(results[f"adaptive-informed/{s}"]) for s in seeds[1:]],
        "+ early-bird": [_cost(results[f"eb/{seeds[0]}"])] + [_cost(results[f"eb-informed/{s}"]) for s in seeds[1:]],
    }
    shared = f"shared masks (jump {getattr(a, 'share_jump', 2)})"
    if all(f"shared/{s}" in results for s in seeds):
        rows[shared] = [_cost(results[f"shared/{s}"]) for s in seeds]
    base_steps = sum(r["steps"] for r in rows["naive"])
    base_wall = sum(r["wall_s"] for r in rows["naive"])
    truth = {r["seed"]: r["answer"] for r in rows["naive"]}

    def level(k: int) -> str:
        return f"L{k} ({sparsities[k - 1]:.1%})" if k else "L0 (dense only)"

    from ltvl.tracking.records import dense_flag

    for s, n in naive.items():  # SPEC §7: a dense run no better than the majority answer is no reference
        flag = dense_flag(n["dense_metric"], n.get("n_eval"), majority=n.get("majority"))
        print(f"seed {s}: dense {n['dense_metric']:.4f}, majority answer {n.get('majority', float('nan')):.4f}"
              + (f": FLAGGED, {flag}; its answers are no evidence" if flag else ": clears the control"))
    print("\nanswers are levels of the schedule; naive per seed: "
          + ", ".join(f"seed {s} {level(k)}" for s, k in truth.items()))
    print(f"{'strategy':28} {'steps':>7} {'x naive':>8} {'wall s':>8} {'x naive':>8} {'tries':>6} {'±1 level':>9}"
          "  answers (levels vs naive)")
    within: dict[str, int] = {}
    for name, rs in rows.items():
        steps, wall = sum(r["steps"] for r in rs), sum(r["wall_s"] for r in rs)
        within[name] = sum(abs(r["answer"] - truth[r["seed"]]) <= 1 for r in rs)
        answers = ", ".join(f"{level(r['answer'])} {r['answer'] - truth[r['seed']]:+d}" for r in rs)
        print(f"{name:28} {steps:7d} {steps / base_steps:8.3f} {wall:8.0f} {wall / base_wall:8.3f} "
              f"{sum(r['tries'] for r in rs):6d} {within[name]:>7}/{len(rs)}  {answers}")
    print("\nthe searches' tries, in order (level <- the level it was pruned from, + kept p, - did not):")
    for key, r in results.items():
        if "tries" in r:
            print(f"  {key:22} " + " ".join(f"L{t['level']}<-L{t['parent']}{'+' if t['kept'] else '-'}"
                                              for t in r["tries"]))
    for s in seeds:
        e = results[f"eb/{s}" if s == seeds[0] else f"eb-informed/{s}"]
        print(f"early-bird seed {s}: dense phase stopped at step {e['early_bird']['step']} of "
              f"{train_steps} (settled: {e['early_bird']['settled']}); its metric {e['dense_metric']:.4f} "
              f"vs the full dense run's {naive[s]['dense_metric']:.4f}; mask distances "
              + ", ".join(f"{st}:{d:.3f}" for st, d in e["early_bird"]["distances"]))
    # ltvl's cheapest strategy is what a sweep runs: schedule: adaptive + seed_informed (+ share_masks
    # since its row exists). Early-bird is measured above, but it judges tickets against a dense model
    # stopped mid-training, so it is not ltvl's answer: its row says what it would save and how far
    # it moves the answers.
    cheapest = shared if shared in rows else "+ seed-informed"
    ratio = sum(r["steps"] for r in rows[cheapest]) / base_steps
    if wall_total is not None:
        print(f"total wall time of this benchmark: {wall_total:.0f} s; results: {saved}")
    how = (f"schedule: adaptive, jump {getattr(a, 'share_jump', 2)}, with seed_informed and share_masks"
           if cheapest == shared else f"schedule: adaptive, jump {a.jump}, with seed_informed")
    print(f"ltvl's cheapest strategy: {cheapest} ({how})")
    print(f"cost-to-ticket steps ratio = {ratio:.2f} (answers within one level: {within[cheapest]}/"
          f"{len(seeds)} seeds)")


if __name__ == "__main__":
    main()
