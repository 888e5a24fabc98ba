"""The Tune side of lineage: a callback in the sweep driver that turns every reported round into
MLflow records (:mod:`ltvl.tracking`) and prints a progress line. Workers never talk to MLflow,
so a tracking outage cannot touch training."""

from __future__ import annotations

import json
from pathlib import Path

from ray import tune
from rich.console import Console

from ltvl.util.atomic import atomic_write_text
from ltvl.tracking.mlflow_lineage import LineageTracker
from ltvl.tracking.records import chain_name, chain_ops, dense_ops, round_op


class LineageCallback(tune.Callback):
    def __init__(self, tracker: LineageTracker | None, root: str | Path, console: Console | None = None):
        self.tracker, self.root = tracker, Path(root)
        self.console = console or Console(stderr=True, highlight=False)

    def __getstate__(self):
        """Tune pickles its RunConfig (callbacks included) with the Tuner: leave the MLflow client
        and the console out; a restored sweep passes live callbacks again."""
        return {**self.__dict__, "tracker": None, "console": None}

    def _record(self, ops: list[dict]) -> None:
        if self.tracker is None:
            return
        for op in ops:
            try:
                self.tracker.record(op)  # retries, then spools: never blocks training for long
            except Exception as e:  # noqa: BLE001 - lineage must never take the sweep down
                self.console.print(f"[yellow]lineage record {op.get('key')} failed: {e}[/]")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from ltvl.ray.tune_chain import chain_params, dense_key, flatten_config
        config = flatten_config(trial.config)
        if "dense_steps" in result:  # the dense stage: the dense-baseline run
            params = config["group"][0]
            self._record(dense_ops(result["dense"], params, {"metric": result["metric"]}))
            self.console.print(f"[bold]dense[/] {params.get('task', 'vqa')} {result['dense'][:8]}: "
                               f"metric {result['metric']:.4f} ({result['dense_steps']} steps trained)")
            return
        params = chain_params(config)
        if result.get("ticket"):
            key, dense = f"ticket:{result['ticket']}", None
            ops = chain_ops(key, params, None, {"ltvl.source_task": result["source_task"],
                                                "ltvl.core.baselines": result["ticket"]})
        elif "chain" in result:
            key, dense = f"chain:{result['chain']}", dense_key(params)
            ops = []
            if int(result["round"]) == 0:
                ops += dense_ops(dense, params, {"metric": result["metric"]})
            ops += chain_ops(key, params, dense, {"ltvl.chain": result["chain"]})
        else:
            return
        ops.append(round_op(key, params, result, dense, result.get("mask_path")))
        self._record(ops)
        if "chain" in result and int(result["round"]) == 0:
            self._hint(result["chain"], key)
        ratio = result.get("dense_ratio")
        self.console.print(f"{chain_name(params):<34} round {int(result['round'])}  sparsity "
                           f"{float(result['sparsity']):6.1%}  metric {float(result['metric']):.4f}"
                           + (f"  ({ratio:.2f} of dense)" if ratio == ratio and ratio is not None else ""))

    def _hint(self, chain_sha: str, key: str) -> None:
        """The chain's run id beside its state (``root/<chain>/mlflow.json``), for humans and tools."""
        if self.tracker is None or (run_id := self.tracker.run_id(key)) is None:
            return
        d = self.root / chain_sha[:16]
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
               f"chain:{result['chain']}" if result.get("chain") else
               f"dense:{result['dense']}" if result.get("dense") else None)
        if key:
            self._record([{"op": "end", "key": key, "status": status}])
