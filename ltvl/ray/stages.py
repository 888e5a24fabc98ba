"""A sweep as Tune stages, each a Tuner under ``storage/<name>-<stage>``:

1. ``dense``: one trial per group of chains that share a dense run (same recipe and context,
   different rewind step / rate / method). It trains the dense model once, captures θi for
   every rewind step of the group and the first mask of every rate.
   A dense run below the majority answer can be re-seeded (``retry_unlearned``): a
   ``dense-retry<k>`` stage trains the group again with the next unused seed.
2. ``chains``: one trial per chain; round 0 comes from the dense store at no training cost.
   With ``seed_informed``, adaptive chains that differ only in seed hold back all but the
   first seed, which then run in ``chains-informed``, starting at its answer (:mod:`ltvl.ray.informed`);
   with ``share_masks`` they take the first seed's masks too.
3. ``tickets``: baselines and transfers on the finished chains' masks.

Every stage is idempotent (the stores replay what is on disk), so ``resume`` restores each
stage's Tuner and finishes only what is unfinished.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ray import tune

from ltvl.core.dense import DenseStore
from ltvl.params.resolve import resolve_chain
from ltvl.params.schema import DEFAULTS
from ltvl.plan.options import DRIVER_CPU, SweepOptions
from ltvl.plan.points import chain_points, grid_points, ticket_points
from ltvl.ray.capacity import cluster_capacity
from ltvl.ray.informed import informed_entries, split_by_seed
from ltvl.ray.resources import check_resources, concurrency, dense_cpus, driver_cpu
from ltvl.ray.space import job_entry, longest_first, search_domains, validate_space
from ltvl.ray.stopping import check_early_stop, early_stop_config
from ltvl.ray.trainable import chain_trainable
from ltvl.ray.trust import RecordState, set_aside, verify
from ltvl.util.errors import LtvlError
from ltvl.util.home import home


def state_manifest(sweep_base: str | Path) -> Path:
    """The driver's record of the Tune state it wrote (ltvl.ray.trust): beside the sweep's lock."""
    return Path(sweep_base) / "tune-state.sha256.json"


def run_chains(param_space: dict, root: str | Path, storage: str | Path, *, name: str = "ltvl-sweep",
               options: SweepOptions | None = None, resume: bool = False, extra_points: list[dict] = (),
               callbacks: list | None = None, outcomes: list | None = None,
               stop: Callable[[], bool] = lambda: False, verbose: bool = False, notes: list[str] | None = None,
               sweep_base: str | Path | None = None, **kw) -> tune.ResultGrid | None:
    """Fit (or restore) a sweep of chains. ``param_space`` values may be ``tune.grid_search`` (every
    combination runs) and sampled domains (``tune.loguniform``…), which run one Optuna study per
    grid point. ``extra_points`` adds single chains (overrides of the fixed params, e.g. one RP
    chain). ``callbacks`` (Tune callbacks, e.g. the MLflow lineage) see every stage. Options come
    as ``options`` or as keywords (``num_workers=2, max_failures=1, baselines=(…)``).
    ``outcomes``, when given, collects every stage's trials (:class:`ltvl.ray.failures.TrialOutcome`).
    ``stop()`` is asked after each stage: true (the driver was interrupted) ends the sweep there.
    ``verbose`` keeps Tune's own progress output next to the callbacks' (else they speak alone).
    ``notes``, when given, collects what the sweep decided on its own (a dense run re-seeded).
    Returns the chain stage's ResultGrid (merged over studies when searching), None if stopped
    before it."""
    opts = options or SweepOptions.from_flat(**kw)
    opts.validate()
    cap = cluster_capacity()
    check_resources(opts.resources, cap)
    validate_space(param_space)
    domains = search_domains(param_space)
    if domains and opts.search.algorithm != "optuna":
        raise LtvlError(f"{sorted(domains)} are sampled, which needs search=optuna", where="search",
                        fix="set search: optuna, or give these keys fixed values / grid_search lists")
    storage = str(storage)  # a path or a URI (s3://, gs://): Tune and Train write there, never ltvl
    stages = ([f"{name}-{s}" for s in ("dense", "chains", "chains-informed", "tickets")]
              + [f"{name}-study{i}" for i in range(64)])
    if resume and not any(tune.Tuner.can_restore(stage_path(storage, s)) for s in stages):
        raise LtvlError(f"no sweep to resume at {stage_path(storage, name)}", where="--resume",
                        fix="check --storage/--name")
    base = {"root": str(root), "storage": storage, "resources": dataclasses.asdict(opts.resources),
            "env": {k: v for k, v in os.environ.items() if k.startswith("LTVL_")},  # e.g. LTVL_HOME
            "sweep_base": str(sweep_base or home() / "sweeps" / name)}  # where the driver keeps its own records
    fixed_space = {k: v for k, v in param_space.items() if k not in domains}
    if extra_points and domains:
        raise LtvlError("extra chains cannot be combined with a search", where="chains", fix="use one or the other")
    points = chain_points(fixed_space, extra_points or [])
    if extra_points:
        for i, p in enumerate(points[-len(extra_points):]):
            resolve_chain(p, where=f"chains[{i}]")
    entries = [job_entry(p, root) for p in points] if not domains else []
    check_early_stop(opts.early_stop, points)
    if opts.retry_unlearned:
        check_retry(entries, bool(domains))
    groups = _dense_groups(entries, root)
    if groups:
        _dense_stage(f"{name}-dense", groups, base, opts, cap, resume, callbacks, outcomes, verbose)
        if stop():
            return None
    used = {_seed(e["params"]) for e in entries}  # abandoned seeds stay used: never tried twice
    for attempt in range(1, opts.retry_unlearned + 1):
        retry = reseed_unlearned(entries, root, used, notes)  # read from the dense stores: resumes alike
        if not retry:
            break
        moved = [e for g in retry.values() for e in g]
        entries = [e for e in entries if e["dense_sha256"] not in retry] + moved
        points = [e["params"] for e in entries]  # the ticket stage follows the re-seeded chains
        groups = _dense_groups(moved, root)
        if groups:
            _dense_stage(f"{name}-dense-retry{attempt}", groups, base, opts, cap, resume, callbacks, outcomes, verbose)
            if stop():
                return None
    base["dense_rewinds"] = _rewinds_by_dense(entries)
    if domains:
        return _optuna_studies(name, {**base, **param_space}, domains, opts, resume, callbacks, outcomes, stop,
                               verbose)
    first, held = split_by_seed(entries) if opts.seed_informed else (entries, [])
    ordered = longest_first(first)
    _plan(callbacks, "chains", [{"job": e} for e in ordered])
    chains = _stage(f"{name}-chains", {**base, "job": tune.grid_search(ordered)}, opts, resume,
                    tune_config=early_stop_config(opts.early_stop), callbacks=callbacks, verbose=verbose)
    _collect(outcomes, "chains", chains)
    if held and not stop():
        informed = informed_entries(held, root, notes, opts.share_masks)  # read from the first seeds' stores
        points = [e["params"] for e in first + informed]  # the ticket stage follows the informed chains
        _plan(callbacks, "chains", [{"job": e} for e in informed])
        grid = _stage(f"{name}-chains-informed", {**base, "job": tune.grid_search(longest_first(informed))}, opts,
                      resume, tune_config=early_stop_config(opts.early_stop), callbacks=callbacks, verbose=verbose)
        _collect(outcomes, "chains", grid)
    tickets = ticket_points(points, opts.baselines, opts.transfer_to)
    if tickets and not stop():
        ticket_jobs = [job_entry(t, root) for t in tickets]
        _plan(callbacks, "tickets", [{"job": e} for e in ticket_jobs])
        grid = _stage(f"{name}-tickets", {**base, "job": tune.grid_search(ticket_jobs)},
                      opts, resume, tune_config={}, callbacks=callbacks, verbose=verbose)
        _collect(outcomes, "tickets", grid)
    return chains


def _plan(callbacks: list | None, stage: str, configs: list[dict]) -> None:
    """Tell progress-aware callbacks which trials a stage is about to run."""
    for cb in callbacks or []:
        if hasattr(cb, "plan_stage"):
            cb.plan_stage(stage, configs)


def _collect(outcomes: list | None, stage: str, grid) -> None:
    if outcomes is not None:
        from ltvl.ray.failures import collect
        outcomes.extend(collect(stage, grid))


def _rewinds_by_dense(entries: list[dict]) -> dict[str, list[int]]:
    out: dict[str, set[int]] = {}
    for e in entries:
        out.setdefault(e["dense_sha256"], set()).update(e.get("dense_steps", [e["rewind_step"]]))
    return {k: sorted(v) for k, v in out.items()}


def _dense_stage(stage: str, groups: list[dict], base: dict, opts: SweepOptions, cap, resume: bool,
                 callbacks: list | None, outcomes: list | None, verbose: bool) -> None:
    """One dense stage: a trial per group, each trained once for all its chains."""
    res = dataclasses.replace(opts.resources, cpus_per_worker=dense_cpus(opts.resources, len(groups), cap))
    check_resources(res, cap, stage="dense")
    _plan(callbacks, "dense", [{"group": g} for g in groups])
    grid = _stage(stage, {**base, "resources": dataclasses.asdict(res), "group": tune.grid_search(groups)}, opts,
                  resume, tune_config={}, callbacks=callbacks, verbose=verbose)
    _collect(outcomes, "dense", grid)


def _seed(params: dict) -> int:
    return int(params.get("seed", DEFAULTS["seed"]))


def check_retry(entries: list[dict], searching: bool) -> None:
    """``retry_unlearned`` judges a dense run after the dense stage, so every dense run must have
    one: shared by two chains or more (a sweep with controls gives each its control chain)."""
    if searching:
        raise LtvlError("retry_unlearned cannot be combined with a search (Optuna samples each trial's params)",
                        where="retry_unlearned", fix="set retry_unlearned: 0, or sweep a grid")
    sizes: dict[str, int] = {}
    for e in entries:
        sizes[e["dense_sha256"]] = sizes.get(e["dense_sha256"], 0) + 1
    alone = [e for e in entries if sizes[e["dense_sha256"]] == 1]
    if alone:
        first = alone[0]["params"]
        raise LtvlError(f"retry_unlearned needs a dense stage, but {len(alone)} chain(s) train their dense run "
                        f"alone (e.g. seed {_seed(first)}, method {first.get('method', 'magnitude')})",
                        where="retry_unlearned",
                        fix="keep controls: true (each dense run gets its control chain), or set retry_unlearned: 0")


def reseed_unlearned(entries: list[dict], root: str | Path, used: set[int],
                     notes: list[str] | None) -> dict[str, list[dict]]:
    """The chain groups whose dense run (read from its store) did not beat the majority answer,
    each moved to the next seed not in ``used``: {old dense sha: the group's new entries}. The
    old dense run stays recorded (and flagged); its chains never run."""
    from ltvl.tracking.records import dense_flag
    groups: dict[str, list[dict]] = {}
    for e in entries:
        groups.setdefault(e["dense_sha256"], []).append(e)
    out = {}
    for sha, group in groups.items():
        rec = DenseStore(root, resolve_chain(group[0]["params"]).dense, writer=False).record()
        if rec is None or "metric" not in rec.metrics:
            continue
        m = rec.metrics
        why = dense_flag(float(m["metric"]), m.get("n"), majority=m.get("majority_metric"))
        if why is None:
            continue
        old = _seed(group[0]["params"])
        seed = next(s for s in itertools.count(old + 1) if s not in used)
        used.add(seed)
        out[sha] = [job_entry({**e["params"], "seed": seed}, root) for e in group]
        if notes is not None:
            notes.append(f"the dense run of seed {old} ({sha[:8]}) is {why}: its {len(group)} chain(s) run with seed "
                         f"{seed} instead (retry_unlearned)")
    return out


def _dense_groups(entries: list[dict], root: str | Path) -> list[dict]:
    """Chains that share a dense run (groups of one need no stage of their own), minus groups
    whose dense run and every θi are already on disk."""
    groups: dict[str, list[dict]] = {}
    for e in entries:
        groups.setdefault(e["dense_sha256"], []).append(e)
    out = []
    for sha, group in groups.items():
        if len(group) < 2:
            continue
        store = DenseStore(root, resolve_chain(group[0]["params"]).dense, writer=False)
        if store.record() is None or not all(store.has_theta(s) for e in group
                                             for s in e.get("dense_steps", [e["rewind_step"]])):
            out.append({"dense_sha256": sha, "chains": [e["params"] for e in group]})
    return out


def _stage(name: str, space: dict, opts: SweepOptions, resume: bool, tune_config: dict,
           callbacks: list | None = None, verbose: bool = False) -> tune.ResultGrid:
    # the trial's own driver only waits on its TorchTrainer, which reserves the workers itself
    res = opts.resources
    trainable = tune.with_resources(chain_trainable, {"CPU": driver_cpu(res), **res.driver_resources})
    path = stage_path(space["storage"], name)
    recorder = RecordState(state_manifest(space["sweep_base"]), path)
    callbacks = [*(callbacks or []), recorder]
    if resume and tune.Tuner.can_restore(path):
        try:
            verify(recorder.manifest.path, path)  # Tune unpickles these files: only as this driver left them
        except LtvlError as e:  # never unpickled: set aside, and the stage runs again from the stores
            aside = set_aside(recorder.manifest.path, path)
            print(f"ltvl: Tune's saved state of stage {name} is not the one this driver recorded ({e.what}); it "
                  f"was not read, and is set aside at {aside}. The stage runs again: its finished rounds replay "
                  "from the chain stores.", file=sys.stderr, flush=True)
        else:
            # Tune pickles the RunConfig with the Tuner; our callbacks pickle without their live
            # connections (LineageCallback.__getstate__), so hand the live ones back on restore.
            tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
            tuner._local_tuner.get_run_config().callbacks = list(callbacks)
            return tuner.fit()
    cfg = dict(tune_config)
    stop = cfg.pop("stop", None)
    from ltvl.ray.space import trial_name
    tuner = tune.Tuner(trainable, param_space=space,
                       tune_config=tune.TuneConfig(max_concurrent_trials=concurrency(opts.resources),
                                                   trial_name_creator=trial_name, trial_dirname_creator=trial_name,
                                                   **cfg),
                       run_config=tune.RunConfig(name=name, storage_path=space["storage"], stop=stop,
                                                 callbacks=callbacks,
                                                 verbose=1 if verbose or len(callbacks) == 1 else 0))
    return tuner.fit()


def _optuna_studies(name: str, space: dict, domains: dict, opts: SweepOptions, resume: bool,
                    callbacks: list | None = None, outcomes: list | None = None,
                    stop: Callable[[], bool] = lambda: False, verbose: bool = False) -> list:
    """OptunaSearch rejects grid_search, so each grid point gets its own study over the sampled
    params; studies run one after another, each with up to max_concurrent_trials in flight."""
    from ray.tune.search.optuna import OptunaSearch
    results = []
    for i, point in enumerate(grid_points({k: v for k, v in space.items() if k not in domains})):
        search = OptunaSearch(metric=opts.search.metric, mode="max", seed=opts.seed + i)
        grid = _stage(f"{name}-study{i}", {**point, **domains}, opts, resume,
                      tune_config={"search_alg": search, "num_samples": opts.search.num_samples,
                                   **early_stop_config(opts.early_stop)},
                      callbacks=callbacks, verbose=verbose)
        _collect(outcomes, f"study{i}", grid)
        results.extend(grid)
        if stop():
            break
    return results


def stage_path(storage: str, name: str) -> str:
    """``storage/name`` for local paths and URIs alike (pathlib would mangle ``s3://``)."""
    return f"{storage.rstrip('/')}/{name}"


def stage_results(storage: str | Path, name: str, stage: str, sweep_base: str | Path | None = None
                  ) -> tune.ResultGrid:
    """Read a finished stage's results (``dense``, ``chains`` or ``tickets``) without running anything
    (its Tune state verified against the driver's record first, as for a resume)."""
    path = stage_path(str(storage), f"{name}-{stage}")
    if not tune.Tuner.can_restore(path):
        raise LtvlError(f"no {stage} stage at {path}", where="storage/name", fix="check the sweep's storage and name")
    verify(state_manifest(sweep_base or home() / "sweeps" / name), path)
    return tune.Tuner.restore(path, tune.with_resources(chain_trainable, {"CPU": DRIVER_CPU})).get_results()
