"""Ray Tune over IMP chains: a function trainable per chain that fits one TorchTrainer (Train V2);
each round reaches Tune as one iteration (``training_iteration`` = round + 1).

A sweep runs in stages, each a Tuner under ``storage/<name>-<stage>``:

1. ``dense``: one trial per group of chains that share a dense run (same recipe and context,
   different rewind step / rate / method). It trains the dense model once, captures θi for
   every rewind step of the group and the first mask of every rate.
2. ``chains``: one trial per chain; round 0 comes from the dense store at no training cost.
3. ``tickets``: baselines and transfers that need finished chains (:mod:`ltvl.ray.tickets`).

Every stage is idempotent (the chain and dense stores replay what is on disk), so ``resume``
restores each stage's Tuner and finishes only what is unfinished.
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from ltvl.params.resolve import DEFAULTS, build_job, chain_spec
from ltvl.core.dense import DenseSpec, DenseStore
from ltvl.util.errors import LtvlError
from ltvl.ray.worker import train_chain, train_dense, train_tickets

RESOURCE_KEYS = ("num_workers", "use_gpu", "cpus_per_worker", "max_failures")
NON_PARAM_KEYS = ("root", "storage", "env", "dense_rewinds", "group", "job")  # plumbing, never a chain's identity
DRIVER_CPU = 0.1  # a trial's function driver: it only builds and waits on the TorchTrainer
# A worker reserves 0.9 CPU by default so that a trial (worker + driver) costs exactly one CPU:
# a 2-core machine then runs two chains at once, each with one torch thread, instead of one.
DEFAULT_CPUS_PER_WORKER = 1 - DRIVER_CPU


def chain_params(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in RESOURCE_KEYS + NON_PARAM_KEYS}


def dense_key(params: dict) -> str:
    """Which dense run a chain's round 0 is: chains with equal keys share it."""
    return DenseSpec.of(chain_spec(params)).sha256


def _fit_train(loop: Callable[[dict], None], loop_config: dict, config: dict, run_name: str) -> None:
    cpus = config.get("cpus_per_worker", DEFAULT_CPUS_PER_WORKER)
    # One Train run per trial *attempt*: a worker-group restart inside this fit() resumes from the
    # run's checkpoint, but a restarted sweep driver must not inherit a run whose reports Tune lost.
    run_name = f"{run_name}-{tune.get_context().get_trial_id()}-{uuid.uuid4().hex[:6]}"
    TorchTrainer(
        loop,
        train_loop_config={**loop_config, "cpus": cpus},
        scaling_config=ScalingConfig(num_workers=config.get("num_workers", 1), use_gpu=config.get("use_gpu", False),
                                     resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=run_name, storage_path=config["storage"],
                             failure_config=FailureConfig(max_failures=config.get("max_failures", 0)),
                             callbacks=[TuneReportCallback()],
                             worker_runtime_env={"env_vars": dict(config.get("env", {}))}),
    ).fit()


def chain_trainable(config: dict[str, Any]) -> None:
    """Tune function trainable for one chain (with ``group``: one shared dense run; with
    ``ticket_job``: one ticket chain)."""
    config = flatten_config(config)
    if "group" in config:
        job = build_job(config["group"][0], data_path="/unused")
        _fit_train(train_dense, {"group": config["group"], "root": config["root"]}, config,
                   f"dense-{job.chain.short_hash}")
        return
    params = chain_params(config)
    job = build_job(params, data_path="/unused")  # validation only; the worker resolves the data
    if params.get("ticket") is not None:
        _fit_train(train_tickets, {"params": params, "root": config["root"]}, config, f"ticket-{job.chain.short_hash}")
        return
    reported = -1  # after a driver restart, Tune's last checkpoint says which rounds it already has
    if (ckpt := tune.get_checkpoint()) is not None:
        with ckpt.as_directory() as d:
            reported = json.loads(Path(d, "round.json").read_text())["round"]
    share = config.get("dense_rewinds", {}).get(dense_key(params), [])
    _fit_train(train_chain, {"params": params, "root": config["root"], "share_rewinds": share,
                             "reported_round": reported}, config, f"chain-{job.chain.short_hash}")


def flatten_config(config: dict) -> dict:
    """A trial's config with its ``job`` (one chain or ticket's params, when the stage is a list
    of jobs rather than a grid) merged in."""
    if "job" not in config:
        return config
    return {**{k: v for k, v in config.items() if k != "job"}, **config["job"]}


def trial_name(trial) -> str:
    """``chain-<hash16>`` / ``dense-<hash16>``: what a researcher can match to the chain store."""
    config = flatten_config(trial.config)
    if "group" in config:
        return f"dense-{dense_key(config['group'][0])[:16]}-{trial.trial_id}"
    if config.get("ticket"):
        return f"ticket-{config['ticket']}-{config.get('task', 'vqa')}-{trial.trial_id}"
    return f"chain-{build_job(chain_params(config), '/unused').chain.short_hash}-{trial.trial_id}"


def grid_points(param_space: dict) -> list[dict]:
    """Every combination of the ``tune.grid_search`` axes (other values as they are)."""
    axes = {k: v["grid_search"] for k, v in param_space.items() if isinstance(v, dict) and "grid_search" in v}
    fixed = {k: v for k, v in param_space.items() if k not in axes}
    return [{**fixed, **dict(zip(axes, combo))} for combo in itertools.product(*axes.values())] or [fixed]


def _search_domains(param_space: dict) -> dict:
    return {k: v for k, v in param_space.items() if isinstance(v, tune.search.sample.Domain)}


def validate_space(param_space: dict) -> int:
    """Build every grid point's chain spec now, so bad input fails before any trial starts.
    Searched (sampled) values are checked at their bounds."""
    domains = _search_domains(param_space)
    points = grid_points({k: v for k, v in param_space.items() if k not in domains})
    for point in points:
        for probe in _domain_probes(domains):
            build_job(chain_params({**point, **probe}), data_path="/unused")
    return len(points)


def _domain_probes(domains: dict) -> list[dict]:
    if not domains:
        return [{}]
    lows, highs = {}, {}
    for k, d in domains.items():
        if isinstance(d, tune.search.sample.Categorical):
            lows[k], highs[k] = d.categories[0], d.categories[-1]
        else:
            lows[k], highs[k] = d.lower, d.upper - (1 if isinstance(d, tune.search.sample.Integer) else 0)
    return [lows, highs]


def check_resources(num_workers: int, use_gpu: bool, cpus_per_worker: float,
                    driver_resources: dict | None = None) -> None:
    """Refuse, before any trial starts, a trial shape the cluster can never place."""
    total = ray.cluster_resources()
    for name, amount in (driver_resources or {}).items():
        if total.get(name, 0) < amount:
            raise LtvlError(f"trial drivers need resource {name!r} x{amount:g}, the cluster offers "
                            f"{total.get(name, 0):g}", where="resources.driver_resources",
                            fix="start the head with --resources='{\"%s\": 1000}' or drop it" % name)
    need_cpu = num_workers * cpus_per_worker + DRIVER_CPU
    if use_gpu and total.get("GPU", 0) < num_workers:
        raise LtvlError(f"a trial needs {num_workers} GPUs but the cluster has {total.get('GPU', 0):g}",
                        where="num_workers/use_gpu", fix="lower num_workers or add GPU nodes")
    if total.get("CPU", 0) < need_cpu:
        raise LtvlError(f"a trial needs {need_cpu:g} CPUs but the cluster has {total.get('CPU', 0):g}",
                        where="num_workers/cpus_per_worker", fix="lower num_workers or cpus_per_worker")


class BelowDenseStopper(tune.Stopper):
    """Early stop on rounds: drop a chain once a pruned round keeps less than ``p`` of its dense
    metric (the IMP curve only falls from there), after ``grace_rounds`` pruned rounds."""

    def __init__(self, p: float, grace_rounds: int = 1):
        if not 0 < p <= 1:
            raise LtvlError(f"early-stop fraction {p} outside (0, 1]", where="early_stop.p", fix="e.g. 0.9")
        self.p, self.grace = p, grace_rounds

    def __call__(self, trial_id: str, result: dict) -> bool:
        r = result.get("round", 0)
        return r >= self.grace and result.get("dense_ratio", 1.0) < self.p

    def stop_all(self) -> bool:
        return False


@dataclass(frozen=True)
class SweepOptions:
    """How chains are scheduled: resources per trial, failures, early stopping, search."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = DEFAULT_CPUS_PER_WORKER
    max_failures: int = 0
    max_concurrent_trials: int | None = None
    early_stop: str = "off"  # off | below_dense (BelowDenseStopper) | asha (ASHA on dense_ratio, time_attr=round)
    early_stop_p: float = 0.9
    search: str = "grid"  # grid | optuna: one Optuna study per grid point over the sampled params
    num_samples: int = 4  # trials per Optuna study
    search_metric: str = "metric"  # maximised; the last round's value is what Optuna sees
    # extra resources every trial driver asks for, e.g. {"trial_driver": 1}: a custom resource
    # only the head offers, so drivers never land on (and die with) spot workers
    driver_resources: tuple[tuple[str, float], ...] = ()
    baselines: tuple[str, ...] = ()  # ticket baselines on every IMP chain's masks (ltvl.core.baselines.Baseline)
    transfer_to: tuple[str, ...] = ()  # tasks every IMP chain's masks are transferred to
    seed: int = 0

    def validate(self) -> None:
        if self.early_stop not in ("off", "below_dense", "asha"):
            raise LtvlError(f"unknown early_stop {self.early_stop!r}", where="early_stop", fix="off, below_dense or asha")
        if self.search not in ("grid", "optuna"):
            raise LtvlError(f"unknown search {self.search!r}", where="search", fix="grid or optuna")
        if self.early_stop != "off":
            BelowDenseStopper(self.early_stop_p)


def run_chains(param_space: dict, root: str | Path, storage: str | Path, *, name: str = "ltvl-sweep",
               options: SweepOptions | None = None, resume: bool = False, extra_points: list[dict] = (),
               callbacks: list | None = None, **kw) -> tune.ResultGrid:
    """Fit (or restore) a sweep of chains. ``param_space`` values may be ``tune.grid_search`` (every
    combination runs) and, with ``search="optuna"``, sampled domains (``tune.loguniform``…).
    ``extra_points`` adds single chains (overrides of the fixed params, e.g. one RP chain).
    ``callbacks`` (Tune callbacks, e.g. the MLflow lineage) see every stage.
    Returns the chain stage's ResultGrid (merged over studies when searching)."""
    opts = options or SweepOptions(**kw)
    opts.validate()
    check_resources(opts.num_workers, opts.use_gpu, opts.cpus_per_worker, dict(opts.driver_resources))
    validate_space(param_space)
    domains = _search_domains(param_space)
    if domains and opts.search != "optuna":
        raise LtvlError(f"{sorted(domains)} are sampled, which needs search=optuna", where="search",
                        fix="set search: optuna, or give these keys fixed values / grid_search lists")
    storage = str(storage)  # a path or a URI (s3://, gs://): Tune and Train write there, never ltvl
    stages = [f"{name}-{s}" for s in ("dense", "chains", "tickets")] + [f"{name}-study{i}" for i in range(64)]
    if resume and not any(tune.Tuner.can_restore(stage_path(storage, s)) for s in stages):
        raise LtvlError(f"no sweep to resume at {stage_path(storage, name)}", where="--resume",
                        fix="check --storage/--name")
    base = {"root": str(root), "storage": str(storage), "num_workers": opts.num_workers, "use_gpu": opts.use_gpu,
            "cpus_per_worker": opts.cpus_per_worker, "max_failures": opts.max_failures,
            "env": {k: v for k, v in os.environ.items() if k.startswith("LTVL_")}}  # e.g. LTVL_HOME
    fixed_space = {k: v for k, v in param_space.items() if k not in domains}
    points = grid_points(fixed_space)
    if extra_points:
        if domains:
            raise LtvlError("extra chains cannot be combined with a search", where="chains", fix="use one or the other")
        plain = {k: v for k, v in fixed_space.items() if not (isinstance(v, dict) and "grid_search" in v)}
        points += [{**plain, **e} for e in extra_points]
        for p in points[-len(extra_points):]:
            build_job(chain_params(p), data_path="/unused")
    groups = _dense_groups(points, root) if not domains else {}
    if groups:
        dense_base = {**base, "cpus_per_worker": _dense_cpus(opts, len(groups))}
        _stage(f"{name}-dense", {**dense_base, "group": tune.grid_search(list(groups.values()))}, opts, resume,
               tune_config={}, callbacks=callbacks)
    base["dense_rewinds"] = {k: sorted({build_job(chain_params(p), "/unused").chain.rewind_step for p in g})
                             for k, g in groups.items()}
    if opts.search == "optuna":
        return _optuna_studies(name, {**base, **param_space}, domains, opts, resume, callbacks)
    space = {**base, **param_space} if not extra_points else \
        {**base, "job": tune.grid_search(longest_first([chain_params(p) for p in points]))}
    chains = _stage(f"{name}-chains", space, opts, resume, tune_config=_early_stop(opts), callbacks=callbacks)
    tickets = ticket_points(points, opts.baselines, opts.transfer_to)
    if tickets:
        _stage(f"{name}-tickets", {**base, "job": tune.grid_search(tickets)}, opts, resume, tune_config={},
               callbacks=callbacks)
    return chains


def longest_first(points: list[dict]) -> list[dict]:
    """Start the longest chains first (LPT order): a long chain started last would run alone at
    the end of the sweep while the rest of the cluster idles."""
    def cost(p: dict) -> int:
        spec = build_job(p, "/unused").chain
        return len(spec.schedule.sparsities()) * (spec.train.steps - spec.rewind_step)
    return sorted(points, key=cost, reverse=True)  # stable: equal costs keep their config order


def ticket_points(points: list[dict], baselines: tuple[str, ...], transfer_to: tuple[str, ...]) -> list[dict]:
    """The ticket stage: every baseline on each IMP chain's masks, and each IMP chain's masks
    transferred to every other task in ``transfer_to``."""
    out = []
    for p in points:
        params = chain_params(p)
        if {**DEFAULTS, **params}["method"] != "magnitude":
            continue
        out += [{**params, "ticket": b, "source": params} for b in baselines]
        task = {**DEFAULTS, **params}["task"]
        out += [{**params, "task": t, "ticket": "imp", "source": params} for t in transfer_to if t != task]
    for t in out:
        build_job(t, data_path="/unused")  # bad input fails before any trial
    return out


def _dense_cpus(opts: SweepOptions, n_groups: int) -> float:
    """Nothing else runs during the dense stage, so on CPU its few trials share the whole cluster
    (a lone dense run on a 2-core machine would otherwise train on one thread, one core idle)."""
    if opts.use_gpu:
        return opts.cpus_per_worker
    per_trial = ray.cluster_resources().get("CPU", 1) / min(n_groups, _concurrency(opts))
    largest_node = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
    per_worker = min((per_trial - DRIVER_CPU) / opts.num_workers, largest_node - DRIVER_CPU)  # must fit one node
    return max(opts.cpus_per_worker, per_worker)


def _dense_groups(points: list[dict], root: str | Path) -> dict[str, list[dict]]:
    """Chains that share a dense run (groups of one need no stage of their own), minus groups
    whose dense run and every θi are already on disk."""
    groups: dict[str, list[dict]] = {}
    for p in points:
        groups.setdefault(dense_key(chain_params(p)), []).append(chain_params(p))
    out = {}
    for key, group in groups.items():
        if len(group) < 2:
            continue
        store = DenseStore(root, DenseSpec.of(chain_spec(group[0])), writer=False)
        rewinds = {build_job(p, "/unused").chain.rewind_step for p in group}
        if store.record() is None or not all(store.has_theta(s) for s in rewinds):
            out[key] = group
    return out


def _early_stop(opts: SweepOptions) -> dict:
    if opts.early_stop == "below_dense":
        return {"stop": BelowDenseStopper(opts.early_stop_p)}
    if opts.early_stop == "asha":
        from ray.tune.schedulers import ASHAScheduler
        return {"scheduler": ASHAScheduler(time_attr="round", metric="dense_ratio", mode="max", max_t=64,
                                           grace_period=1)}
    return {}


def _concurrency(opts: SweepOptions) -> int:
    per_trial = opts.num_workers * opts.cpus_per_worker + DRIVER_CPU
    return opts.max_concurrent_trials or max(1, int(ray.cluster_resources().get("CPU", 1) // per_trial))


def _stage(name: str, space: dict, opts: SweepOptions, resume: bool, tune_config: dict,
           callbacks: list | None = None) -> tune.ResultGrid:
    # the trial's own driver only waits on its TorchTrainer, which reserves the workers itself
    trainable = tune.with_resources(chain_trainable, {"CPU": DRIVER_CPU, **dict(opts.driver_resources)})
    path = stage_path(space["storage"], name)
    if resume and tune.Tuner.can_restore(path):
        # Tune pickles the RunConfig with the Tuner; our callbacks pickle without their live
        # connections (LineageCallback.__getstate__), so hand the live ones back on restore.
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
        if callbacks:
            tuner._local_tuner.get_run_config().callbacks = list(callbacks)
        return tuner.fit()
    cfg = dict(tune_config)
    stop = cfg.pop("stop", None)
    tuner = tune.Tuner(trainable, param_space=space,
                       tune_config=tune.TuneConfig(max_concurrent_trials=_concurrency(opts), trial_name_creator=trial_name,
                                                   trial_dirname_creator=trial_name, **cfg),
                       run_config=tune.RunConfig(name=name, storage_path=space["storage"], stop=stop,
                                                 callbacks=list(callbacks or []), verbose=0 if callbacks else 1))
    return tuner.fit()


def _optuna_studies(name: str, space: dict, domains: dict, opts: SweepOptions, resume: bool,
                    callbacks: list | None = None) -> list:
    """OptunaSearch rejects grid_search, so each grid point gets its own study over the sampled
    params; studies run one after another, each with up to max_concurrent_trials in flight."""
    from ray.tune.search.optuna import OptunaSearch
    results = []
    for i, point in enumerate(grid_points({k: v for k, v in space.items() if k not in domains})):
        search = OptunaSearch(metric=opts.search_metric, mode="max", seed=opts.seed + i)
        grid = _stage(f"{name}-study{i}", {**point, **domains}, opts, resume,
                      tune_config={"search_alg": search, "num_samples": opts.num_samples, **_early_stop(opts)},
                      callbacks=callbacks)
        results.extend(grid)
    return results


def stage_path(storage: str, name: str) -> str:
    """``storage/name`` for local paths and URIs alike (pathlib would mangle ``s3://``)."""
    return f"{storage.rstrip('/')}/{name}"


def stage_results(storage: str | Path, name: str, stage: str) -> tune.ResultGrid:
    """Read a finished stage's results (``dense``, ``chains`` or ``tickets``) without running anything."""
    path = stage_path(str(storage), f"{name}-{stage}")
    if not tune.Tuner.can_restore(path):
        raise LtvlError(f"no {stage} stage at {path}", where="storage/name", fix="check the sweep's storage and name")
    return tune.Tuner.restore(path, tune.with_resources(chain_trainable, {"CPU": DRIVER_CPU})).get_results()
