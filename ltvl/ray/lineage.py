"""The Tune side of lineage: a callback in the sweep driver that turns every reported round into
MLflow records (:mod:`ltvl.tracking`) and prints a progress line. Workers never talk to MLflow,
and the callback only hands records to the driver's sender thread (a local append), so a slow
or absent tracking server cannot hold up Tune's event loop or the trials waiting on it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ray import tune
from rich.console import Console

from ltvl.tracking.mlflow_lineage import LineageTracker
from ltvl.tracking.records import chain_name, chain_ops, dense_ops, round_op
from ltvl.tracking.sender import LineageSender
from ltvl.util.atomic import atomic_write_text


class LineageCallback(tune.Callback):
    def __init__(self, sender: LineageSender | None, root: str | Path, console: Console | None = None):
        self.sender, self.root = sender, Path(root)
        self.console = console or Console(stderr=True, highlight=False)
        self._jobs: dict[str, tuple] = {}  # trial id -> (resolved job, dense sha): resolved once per trial
        self._open: set[str] = set()  # chain/ticket runs started and not yet ended

    def __getstate__(self):
        """Tune pickles its RunConfig (callbacks included) with the Tuner: leave the sender and the
        console out; a restored sweep passes live callbacks again."""
        return {**self.__dict__, "sender": None, "console": None, "_jobs": {}, "_open": set()}

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
        for op in ops:
            if op["op"] == "run" and op["key"].startswith(("chain:", "ticket:")):
                self._open.add(op["key"])
            elif op["op"] == "end":
                self._open.discard(op["key"])
        if self.sender is None:
            return
        try:
            self.sender.submit(ops)  # a local append: the sender thread talks to MLflow
        except Exception as e:  # noqa: BLE001 - lineage must never take the sweep down
            self.console.print(f"[yellow]lineage records {[op.get('key') for op in ops]} not spooled: {e}[/]")

    def close_open_runs(self, status: str = "KILLED") -> list[str]:
        """At the end of a sweep (interrupted, or a trial Tune never ended): no run stays RUNNING.
        A resumed sweep that finishes the chain marks it FINISHED again."""
        keys = sorted(self._open)
        self._record([{"op": "end", "key": k, "status": status} for k in keys])
        return keys

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
        ratio = result.get("dense_ratio")
        self.console.print(f"{chain_name(job):<34} round {int(result['round'])}  sparsity "
                           f"{float(result['sparsity']):6.1%}  metric {float(result['metric']):.4f}"
                           + (f"  ({ratio:.2f} of dense)" if ratio == ratio and ratio is not None else ""))

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


def run_hint_writer(root: str | Path, tracker: LineageTracker) -> Callable[[dict], None]:
    """After a chain's round 0 reaches MLflow, the chain run's id goes beside the chain's state
    (``root/<chain>/mlflow.json``), for humans and tools. Called in the sender thread."""

    def on_sent(op: dict) -> None:
        if op["op"] != "round" or op.get("round") != 0 or not op["chain_key"].startswith("chain:"):
            return
        d = Path(root) / op["chain_key"].removeprefix("chain:")[:16]  # older-format stores keep their old hash
        if d.exists() and (run_id := tracker.run_id(op["chain_key"])):
            atomic_write_text(d / "mlflow.json", json.dumps({"tracking_uri": tracker.uri, "run_id": run_id,
                                                            "experiment": tracker.experiment_name}))
    return on_sent
