"""What the cost-to-ticket probes share: the cost bench run they read, checked before any compute.

A probe answers the cost bench's question another way and compares against that bench's naive
chains (same stores, recipe and machine), so it trains only its own rounds. Its dense runs are
the bench's, counted in full; a recipe whose dense runs are not in the bench's store is another
question, and is refused before any training.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from cost_to_ticket import REPO


def add_bench_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--config", default=str(REPO / "sweeps" / "configs" / "rewind_grid.yaml"))
    ap.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                    help="override a recipe param (default: the cost bench run's own overrides)")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--work", default=None, help="the cost bench's work dir (default: LTVL_HOME/bench/cost-to-ticket)")


def check_ranges(a: argparse.Namespace, checks: list[tuple[str, bool, str]]) -> None:
    """Refuse each out-of-range flag, naming it and its range (``--procs`` is always checked)."""
    for flag, ok, why in [*checks, ("--procs", a.procs >= 1, "processes, >= 1")]:
        if not ok:
            raise SystemExit(f"{flag} {getattr(a, flag[2:].replace('-', '_'))} is out of range: it is {why}")


@dataclass
class BenchRun:
    """The cost bench run a probe reads: its results, arguments, seeds and the probe's recipe."""

    work: Path
    results: dict  # results.json's "results": naive/<seed> chains and the bench's searches
    args: argparse.Namespace  # the bench's own flags (rate, target, p, seeds, rewind, set)
    seeds: list[int]
    params: dict  # the recipe's params with the bench's schedule
    overrides: list[str]  # the probe's --set

    def naive(self, seed: int) -> tuple[int, int]:
        """Naive IMP's answer (highest level keeping p) and its steps, dense run included."""
        nv = self.results[f"naive/{seed}"]
        truth = max([lv["level"] for lv in nv["levels"] if lv["metric"] >= self.args.p * nv["dense_metric"]],
                    default=0)
        return truth, nv["dense_steps"] + sum(lv["steps"] for lv in nv["levels"])

    def start(self, config: str, probe: str) -> list[float]:
        """Prepare the data once (before processes race for it), print the header, return the levels."""
        from _common import machine

        from ltvl.params.resolve import data_for, resolve_chain
        from ltvl.vl.datasets import resolve_dataset

        job = resolve_chain({**self.params, "seed": self.seeds[0]})
        resolve_dataset(data_for(job.params))
        sp, a = job.chain.sparsities(), self.args
        print(f"machine: {machine()}")
        print(f"recipe: {config} params + {self.overrides}; the cost bench's question (rate {a.rate} to {a.target}, "
              f"{len(sp)} levels, p = {a.p}, seeds {self.seeds}); {probe}", flush=True)
        return sp


def open_bench_run(a: argparse.Namespace) -> BenchRun:
    """Read and check the bench run named by ``--work``; ``--set`` defaults to its overrides."""
    from ltvl.core.dense import DenseSpec, DenseStore
    from ltvl.params.resolve import resolve_chain
    from ltvl.plan.config import load_config
    from ltvl.util.home import home

    work = Path(a.work) if a.work else home() / "bench" / "cost-to-ticket"
    if not (work / "results.json").exists():
        raise SystemExit(f"no cost bench results at {work / 'results.json'}: the probe compares against its "
                         "naive chains and reuses its dense runs; run bench/cost_to_ticket.py first "
                         "(or give its --work)")
    bench = json.loads((work / "results.json").read_text())
    ba = argparse.Namespace(**bench["args"])
    overrides = ba.set if a.set is None else a.set
    seeds = [int(s) for s in ba.seeds.split(",")]
    cfg = load_config("rewind_grid", a.config, [f"params.{kv}" for kv in overrides])
    params = {**cfg.params, "schedule": "geometric", "rate": ba.rate, "target_sparsity": ba.target,
              "rewind_step": ba.rewind, "method": "magnitude"}
    for s in seeds:  # the bench's dense runs are the reference: a recipe that has none is not its question
        if DenseStore(work / "chains", DenseSpec.of(resolve_chain({**params, "seed": s}).chain),
                      writer=False).record() is None:
            raise SystemExit(f"no dense run of this recipe for seed {s} in {work / 'chains'}: the probe reuses "
                             f"the cost bench's; give the bench run's overrides (it used --set {ba.set or 'nothing'}, "
                             f"this call --set {overrides or 'nothing'}; if they agree, the config changed since, "
                             "e.g. adamw_impl is fused since 2026-11-25: add --set adamw_impl=reference)")
    return BenchRun(work, bench["results"], ba, seeds, params, overrides)


def train_ticket(setup, trainer, mask, rewind) -> tuple[float, int]:
    """Train ``mask ⊙ rewind`` to the end of the recipe and evaluate it: (metric, steps trained)."""
    from ltvl.pruning.enforce import MaskEnforcer

    model = setup.model_factory()
    enforcer = MaskEnforcer(model, mask)
    trained = trainer.train(model, enforcer=enforcer, start=rewind, capture_at=[])
    metric = float(trainer.evaluate(model)["metric"])
    enforcer.remove()
    return metric, trained.steps_run
