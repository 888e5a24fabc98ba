"""Ray Tune over IMP chains: a function trainable per chain that fits one TorchTrainer (Train V2);
each round reaches Tune as one iteration (``training_iteration`` = round + 1)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from ltvl.chainjob import build_job
from ltvl.errors import LtvlError
from ltvl.ray.worker import train_chain

RESOURCE_KEYS = ("num_workers", "use_gpu", "cpus_per_worker", "max_failures")
NON_PARAM_KEYS = ("root", "storage", "env")  # trial plumbing, never part of a chain's identity
DRIVER_CPU = 0.1  # a trial's function driver: it only builds and waits on the TorchTrainer


def chain_trainable(config: dict[str, Any]) -> None:
    """Tune function trainable: everything except RESOURCE_KEYS/root/storage is a chain param."""
    params = {k: v for k, v in config.items() if k not in RESOURCE_KEYS + NON_PARAM_KEYS}
    job = build_job(params, data_path="/unused")  # validation only; the worker resolves the data
    trainer = TorchTrainer(
        train_chain,
        train_loop_config={"params": params, "root": config["root"]},
        scaling_config=ScalingConfig(num_workers=config.get("num_workers", 1), use_gpu=config.get("use_gpu", False),
                                     resources_per_worker={"CPU": config.get("cpus_per_worker", 1)}),
        run_config=RunConfig(name=f"chain-{job.chain.short_hash}", storage_path=config["storage"],
                             failure_config=FailureConfig(max_failures=config.get("max_failures", 0)),
                             callbacks=[TuneReportCallback()],
                             worker_runtime_env={"env_vars": dict(config.get("env", {}))}),
    )
    trainer.fit()


def grid_points(param_space: dict) -> list[dict]:
    """Every combination of the ``tune.grid_search`` axes (other values as they are)."""
    import itertools
    axes = {k: v["grid_search"] for k, v in param_space.items() if isinstance(v, dict) and "grid_search" in v}
    fixed = {k: v for k, v in param_space.items() if k not in axes}
    return [{**fixed, **dict(zip(axes, combo))} for combo in itertools.product(*axes.values())] or [fixed]


def validate_space(param_space: dict) -> int:
    """Build every grid point's chain spec now, so bad input fails before any trial starts."""
    points = grid_points(param_space)
    for point in points:
        build_job({k: v for k, v in point.items() if k not in RESOURCE_KEYS + NON_PARAM_KEYS}, data_path="/unused")
    return len(points)


def check_resources(num_workers: int, use_gpu: bool, cpus_per_worker: float) -> None:
    """Refuse, before any trial starts, a trial shape the cluster can never place."""
    total = ray.cluster_resources()
    need_cpu = num_workers * cpus_per_worker + DRIVER_CPU
    if use_gpu and total.get("GPU", 0) < num_workers:
        raise LtvlError(f"a trial needs {num_workers} GPUs but the cluster has {total.get('GPU', 0):g}",
                        where="num_workers/use_gpu", fix="lower num_workers or add GPU nodes")
    if total.get("CPU", 0) < need_cpu:
        raise LtvlError(f"a trial needs {need_cpu:g} CPUs but the cluster has {total.get('CPU', 0):g}",
                        where="num_workers/cpus_per_worker", fix="lower num_workers or cpus_per_worker")


def run_chains(param_space: dict, root: str | Path, storage: str | Path, *, name: str = "ltvl-sweep",
               num_workers: int = 1, use_gpu: bool = False, cpus_per_worker: float = 1, max_failures: int = 0,
               max_concurrent_trials: int | None = None, resume: bool = False) -> tune.ResultGrid:
    """Fit (or restore) a Tuner whose trials are chains. ``param_space`` values may be tune.grid_search."""
    check_resources(num_workers, use_gpu, cpus_per_worker)
    validate_space(param_space)
    space = {**param_space, "root": str(root), "storage": str(storage), "num_workers": num_workers,
             "use_gpu": use_gpu, "cpus_per_worker": cpus_per_worker, "max_failures": max_failures,
             "env": {k: v for k, v in os.environ.items() if k.startswith("LTVL_")}}  # e.g. LTVL_HOME
    # the trial's own driver only waits on its TorchTrainer, which reserves the workers itself
    trainable = tune.with_resources(chain_trainable, {"CPU": DRIVER_CPU})
    path = Path(storage) / name
    if resume:
        if not tune.Tuner.can_restore(str(path)):
            raise LtvlError(f"no sweep to resume at {path}", where="--resume", fix="check --storage/--name")
        return tune.Tuner.restore(str(path), trainable, resume_errored=True).fit()
    per_trial = num_workers * cpus_per_worker + DRIVER_CPU
    concurrency = max_concurrent_trials or max(1, int(ray.cluster_resources().get("CPU", 1) // per_trial))
    tuner = tune.Tuner(trainable, param_space=space,
                       tune_config=tune.TuneConfig(max_concurrent_trials=concurrency),
                       run_config=tune.RunConfig(name=name, storage_path=str(storage)))
    return tuner.fit()
