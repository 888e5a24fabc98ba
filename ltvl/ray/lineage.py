"""The Tune side of lineage: a callback in the sweep driver that turns every reported round into
MLflow records (:mod:`ltvl.tracking`) and prints a progress line. Workers never talk to MLflow,
so a tracking outage cannot touch training."""

from __future__ import annotations

import json
from pathlib import Path

from ray import tune
from rich.console import Console

from ltvl.tracking.mlflow_lineage import LineageTracker
from ltvl.tracking.records import chain_name, chain_ops, dense_ops, round_op
from ltvl.util.atomic import atomic_write_text


class LineageCallback(tune.Callback):
    def __init__(self, tracker: LineageTracker | None, root: str | Path, console: Console | None = None):
        self.tracker, self.root = tracker, Path(root)
        self.console = console or Console(stderr=True, highlight=False)
        self._jobs: dict[str, tuple] = {}  # trial id -> (resolved job, dense sha): resolved once per trial

    def __getstate__(self):
        """Tune pickles its RunConfig (callbacks included) with the Tuner: leave the MLflow client
        and the console out; a restored sweep passes live callbacks again."""
        return {**self.__dict__, "tracker": None, "console": None, "_jobs": {}}

    def _job(self, trial) -> tuple:
        if trial.trial_id not in self._jobs:
            from ltvl.core.dense import DenseStore
            from ltvl.params.resolve import ChainJob
            from ltvl.ray.space import trial_job
            job = trial_job(trial.config)
            dense = None
            if isinstance(job, ChainJob):
                dense = (trial.config["job"]["dense_sha256"] if "job" in trial.config
                         else DenseStore(self.root, job.dense, writer=False).sha256)
            self._jobs[trial.trial_id] = (job, dense)
        return self._jobs[trial.trial_id]

    def _record(self, ops: list[dict]) -> None:
        if self.tracker is None:
            return
        for op in ops:
            try:
                self.tracker.record(op)  # retries, then spools: never blocks training for long
            except Exception as e:  # noqa: BLE001 - lineage must never take the sweep down
                self.console.print(f"[yellow]lineage record {op.get('key')} failed: {e}[/]")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "dense_steps" in result:  # the dense stage: the dense-baseline run
            from ltvl.params.resolve import resolve_chain
            job = resolve_chain(trial.config["group"]["chains"][0])
            self._record(dense_ops(result["dense"], job, {"metric": result["metric"]}))
            self.console.print(f"[bold]dense[/] {job.params.task} {result['dense'][:8]}: "
                               f"metric {result['metric']:.4f} ({result['dense_steps']} steps trained)")
            return
        job, dense = self._job(trial)
        if result.get("ticket"):
            key = f"ticket:{result['ticket']}"
            ops = chain_ops(key, job, None, {"ltvl.source_task": result["source_task"],
                                             "ltvl.ticket": result["ticket"]})
        elif "chain_sha256" in result:
            key = f"chain:{result['chain_sha256']}"
            ops = []
            if int(result["round"]) == 0:
                ops += dense_ops(dense, job, {"metric": result["metric"]})
            ops += chain_ops(key, job, dense, {"ltvl.chain": result["chain_sha256"]})
        else:
            return
        ops.append(round_op(key, job, result, dense if "chain_sha256" in result else None, result.get("mask_path")))
        self._record(ops)
        if "chain_sha256" in result and int(result["round"]) == 0:
            self._hint(result["chain_sha256"], key)
        ratio = result.get("dense_ratio")
        self.console.print(f"{chain_name(job):<34} round {int(result['round'])}  sparsity "
                           f"{float(result['sparsity']):6.1%}  metric {float(result['metric']):.4f}"
                           + (f"  ({ratio:.2f} of dense)" if ratio == ratio and ratio is not None else ""))

    def _hint(self, chain_sha: str, key: str) -> None:
        """The chain's run id beside its state (``root/<chain>/mlflow.json``), for humans and tools."""
        if self.tracker is None or (run_id := self.tracker.run_id(key)) is None:
            return
        d = self.root / chain_sha[:16]  # the store's directory (an older-format store keeps its old hash)
        if d.exists():
            atomic_write_text(d / "mlflow.json", json.dumps({"tracking_uri": self.tracker.uri, "run_id": run_id,
                                                            "experiment": self.tracker.experiment_name}))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "FAILED")

    def _end(self, trial, status: str) -> None:
        result = trial.last_result or {}
        key = (f"ticket:{result['ticket']}" if result.get("ticket") else
               f"chain:{result['chain_sha256']}" if result.get("chain_sha256") else
               f"dense:{result['dense']}" if result.get("dense") else None)
        if key:
            self._record([{"op": "end", "key": key, "status": status}])
