"""The Tune function trainable: one trial fits one TorchTrainer (Train V2) for a whole chain, a
shared dense run or a ticket chain; each round reaches Tune as one iteration."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.torch.config import _TorchBackend
from ray.tune.integration.ray_train import TuneReportCallback

from ltvl.params.resolve import TicketJob
from ltvl.ray.space import trial_job, trial_params
from ltvl.ray.worker import train_chain, train_dense, train_tickets


class _ProcessGroupWhenShared(_TorchBackend):
    """Ray Train's torch backend, except that a chain trained by one worker gets no process group:
    it has nothing to synchronise, and the group's store (torch's TCPStore) listens on every
    network interface, with no way to bind it to loopback. Chains with several workers (DDP) get
    the group as usual. Numerically the same: ltvl's code takes the one-worker path either way."""

    def on_start(self, worker_group, backend_config):
        if len(worker_group) > 1:
            super().on_start(worker_group, backend_config)


class ChainTorchConfig(TorchConfig):
    @property
    def backend_cls(self):
        return _ProcessGroupWhenShared


def _fit_train(loop: Callable[[dict], None], loop_config: dict, config: dict, run_name: str) -> None:
    res = config["resources"]
    cpus = res["cpus_per_worker"]
    # One Train run per trial *attempt*: a worker-group restart inside this fit() resumes from the
    # run's checkpoint, but a restarted sweep driver must not inherit a run whose reports Tune lost.
    run_name = f"{run_name}-{tune.get_context().get_trial_id()}-{uuid.uuid4().hex[:6]}"
    TorchTrainer(
        loop,
        torch_config=ChainTorchConfig(),
        train_loop_config={**loop_config, "cpus": cpus},
        scaling_config=ScalingConfig(num_workers=res["num_workers"], use_gpu=res["use_gpu"],
                                     resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=run_name, storage_path=config["storage"],
                             failure_config=FailureConfig(max_failures=res["max_failures"]),
                             callbacks=[TuneReportCallback()],
                             worker_runtime_env={"env_vars": dict(config.get("env", {}))}),
    ).fit()


def chain_trainable(config: dict[str, Any]) -> None:
    """One trial: a dense group (``group``), a ticket chain, or an IMP chain."""
    if "group" in config:
        group = config["group"]
        _fit_train(train_dense, {"group": group, "root": config["root"]}, config,
                   f"dense-{group['dense_sha256'][:16]}")
        return
    params = trial_params(config)
    job = trial_job(config)
    if isinstance(job, TicketJob):
        _fit_train(train_tickets, {"params": params, "root": config["root"]}, config, config["job"]["name"]
                   if "job" in config else f"ticket-{job.baseline.value}")
        return
    sha = job.store_sha256(config["root"])
    if "job" in config and config["job"]["sha256"] != sha:
        raise RuntimeError(f"the driver resolved chain {config['job']['sha256'][:16]} but this trial resolves "
                           f"{sha[:16]}: driver and workers run different ltvl versions")
    reported = -1  # after a driver restart, Tune's last checkpoint says which rounds it already has
    if (ckpt := tune.get_checkpoint()) is not None:
        with ckpt.as_directory() as d:
            reported = json.loads(Path(d, "round.json").read_text())["round"]
    share = config.get("dense_rewinds", {}).get(config["job"]["dense_sha256"] if "job" in config else "", [])
    _fit_train(train_chain, {"params": params, "root": config["root"], "share_rewinds": share,
                             "reported_round": reported, "chain_sha256": sha}, config, f"chain-{sha[:16]}")
