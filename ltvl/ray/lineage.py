"""The Tune side of lineage: a callback in the sweep driver that turns every reported round into
MLflow records (:mod:`ltvl.tracking`), progress events and a line on the console.

Tune calls callbacks on its event loop, and every trial that reports waits for that loop: the
callback therefore only queues what Tune hands it. A thread of its own resolves the job, builds
the records, appends them to the spool (the sender thread talks to MLflow) and prints. Each
stage's records are all spooled before its ``Tuner.fit()`` returns (``on_experiment_end``)."""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from ray import tune
from rich.console import Console

from ltvl.tracking.mlflow_lineage import LineageTracker
from ltvl.tracking.records import (
    DENSE_FLAG,
    LIVE_PREFIX,
    best_key,
    chain_name,
    chain_ops,
    chain_progress,
    dense_flag,
    dense_ops,
    is_control,
    round_op,
    verdict_tag,
)
from ltvl.tracking.sender import LineageSender
from ltvl.util.atomic import atomic_write_text

LIVE_METRICS_S = 30.0  # a running chain's train loss and steps/s reach MLflow at most this often


def row_key(config: dict) -> str:
    """A trial's key on the progress board: its MLflow record key where the driver knows it."""
    if "group" in config:
        return f"dense:{config['group']['dense_sha256']}"
    job = config.get("job") or {}
    if job.get("kind") == "chain":
        return f"chain:{job['sha256']}"
    params = job.get("params") or {k: v for k, v in config.items() if k not in ("root", "storage", "env")}
    return "job:" + hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


class LineageCallback(tune.Callback):
    def __init__(self, sender: LineageSender | None, root: str | Path, console: Console | None = None,
                 board=None, p: float = 0.99):
        self.sender, self.root, self.board, self.p = sender, Path(root), board, p
        self.console = console or Console(stderr=True, highlight=False)
        self._jobs: dict[str, tuple] = {}  # trial id -> (resolved job, dense sha): resolved once per trial
        self._open: set[str] = set()  # chain/ticket runs started and not yet ended
        self._history: dict[str, list[tuple[int, float, float]]] = {}  # chain key -> (round, sparsity, metric)
        self._round0: dict[str, dict] = {}  # chain key -> its round 0 (dense) result, for the controls
        self._live_keys: set[str] = set()  # MLflow runs that exist, so live metrics have somewhere to go
        self._events: queue.Queue | None = None
        self._thread: threading.Thread | None = None

    def __getstate__(self):
        """Tune pickles its RunConfig (callbacks included) with the Tuner: leave the sender, the
        console, the board and the thread out; a restored sweep passes live callbacks again."""
        return {**self.__dict__, "sender": None, "console": None, "board": None, "_jobs": {}, "_open": set(),
                "_history": {}, "_round0": {}, "_live_keys": set(), "_events": None, "_thread": None}

    # --- Tune's event loop: queue only ------------------------------------------------------------
    def _put(self, kind: str, trial, result: dict | None = None) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._events = queue.Queue()
            self._thread = threading.Thread(target=self._drain_forever, name="ltvl-lineage", daemon=True)
            self._thread.start()
        snapshot = dict(result) if result else dict(trial.last_result or {})
        self._events.put((kind, trial.trial_id, trial.config, snapshot))

    def plan_stage(self, stage: str, configs: list[dict]) -> None:
        """Called by :func:`ltvl.ray.stages.run_chains` before a stage: its trials, still waiting."""
        if self.board is not None:
            self.board.plan(plan_rows(stage, configs, self.root))

    def on_trial_start(self, iteration, trials, trial, **info):
        self._put("start", trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._put("result", trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._put("FINISHED", trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._put("FAILED", trial)

    def on_experiment_end(self, trials, **info):
        self.flush()

    def flush(self, timeout_s: float = 120.0) -> None:
        """Wait until every queued event is handled (its records are in the spool)."""
        if self._events is not None and self._thread is not None and self._thread.is_alive():
            done = threading.Event()
            self._events.put(("flush", "", {}, {"event": done}))
            done.wait(timeout_s)

    # --- the lineage thread ------------------------------------------------------------------------
    def _drain_forever(self) -> None:
        while True:
            kind, trial_id, config, result = self._events.get()
            if kind == "flush":
                result["event"].set()
                continue
            try:
                self._handle(kind, trial_id, config, result)
            except Exception as e:  # noqa: BLE001 - lineage must never take the sweep down
                self.console.print(f"[yellow]lineage: {kind} of trial {trial_id} not recorded: "
                                   f"{type(e).__name__}: {e}[/]")

    def _handle(self, kind: str, trial_id: str, config: dict, result: dict) -> None:
        if kind == "start":
            if self.board is not None:
                self.board.started_row(row_key(config))
            if "group" in config:  # the dense run exists from its start, so its live metrics have a run
                from ltvl.params.resolve import resolve_chain
                job = resolve_chain(config["group"]["chains"][0])
                ops = dense_ops(config["group"]["dense_sha256"], job, {})
                self._record(ops[:1])
                self._live_keys.add(ops[0]["key"])
        elif kind == "result":
            self._result(trial_id, config, result)
        else:
            self._end(config, result, kind)

    def _job(self, trial_id: str, config: dict) -> tuple:
        if trial_id not in self._jobs:
            from ltvl.core.dense import DenseStore
            from ltvl.params.resolve import ChainJob
            from ltvl.ray.space import trial_job
            job = trial_job(config)
            dense = None
            if isinstance(job, ChainJob):
                dense = (config["job"]["dense_sha256"] if "job" in config
                         else DenseStore(self.root, job.dense, writer=False).sha256)
            self._jobs[trial_id] = (job, dense)
        return self._jobs[trial_id]

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

    def _say(self, line: str) -> None:
        if self.board is not None:
            self.board.say(line)
        else:
            self.console.print(line)

    def close_open_runs(self, status: str = "KILLED") -> list[str]:
        """At the end of a sweep (interrupted, or a trial Tune never ended): no run stays RUNNING.
        A resumed sweep that finishes the chain marks it FINISHED again."""
        self.flush()
        keys = sorted(self._open)
        self._record([{"op": "end", "key": k, "status": status} for k in keys])
        return keys

    def _result(self, trial_id: str, config: dict, result: dict) -> None:
        if "dense_steps" in result:  # the dense stage: the dense-baseline run
            from ltvl.params.resolve import resolve_chain
            job = resolve_chain(config["group"]["chains"][0])
            self._record(dense_ops(result["dense"], job, {k: result[k] for k in ("metric", "majority_metric", "n")
                                                          if k in result}, load=result.get("load", "")))
            if self.board is not None:
                self.board.round_done(row_key(config), 0, result["metric"])
            self._say(f"[bold]dense[/] {job.params.task} seed {job.params.seed} ({result['dense'][:8]}): metric "
                      f"{result['metric']:.4f} ({result['dense_steps']} steps trained)")
            return
        job, dense = self._job(trial_id, config)
        chain_metrics, verdict = None, {}
        if result.get("ticket"):
            key = f"ticket:{result['ticket']}"
            ops = chain_ops(key, job, None, {"ltvl.source_task": result["source_task"],
                                             "ltvl.ticket": result["ticket"]})
        elif "chain_sha256" in result:
            key = f"chain:{result['chain_sha256']}"
            ops = []
            if int(result["round"]) == 0:
                ops += dense_ops(dense, job, {k: result[k] for k in ("metric", "majority_metric", "n") if k in result})
            ops += chain_ops(key, job, dense, {"ltvl.chain": result["chain_sha256"]})
            history = self._history.setdefault(key, [])
            history[:] = [h for h in history if h[0] != int(result["round"])]
            history.append((int(result["round"]), float(result["sparsity"]), float(result["metric"])))
            # a control has no ticket to rank: only its dense metric beside its own
            chain_metrics = chain_progress(sorted(history), self.p, result.get("n"))
            if is_control(job):
                chain_metrics = {"dense_metric": chain_metrics["dense_metric"]}
            else:
                verdict = verdict_tag(history, int(result["round"]), self.p, result.get("n"))
            if int(result["round"]) == 0:
                self._round0[key] = result
            elif is_control(job) and key in self._round0:
                ops += self._control_flag(dense, self._round0[key], float(result["metric"]))
        else:
            return
        ops.append(round_op(key, job, result, dense if "chain_sha256" in result else None, result.get("mask_path"),
                            chain_metrics))
        if verdict:
            ops[-1]["tags"].update(verdict)
        self._record(ops)
        self._live_keys.add(key)
        if self.board is not None:
            self.board.round_done(row_key(config), int(result["round"]), float(result["metric"]))
        ratio = result.get("dense_ratio")
        best = (f"  best ≥{self.p:.0%}: {chain_metrics[best_key(self.p)]:.1%}"
                if chain_metrics and best_key(self.p) in chain_metrics else "")
        self._say(f"{chain_name(job)}  round {int(result['round'])} at {float(result['sparsity']):.1%}: metric "
                  f"{float(result['metric']):.4f}"
                  + (f" ({ratio:.2f} of dense)" if ratio == ratio and ratio is not None else "") + best)

    @staticmethod
    def _control_flag(dense: str, round0: dict, sparse100: float) -> list[dict]:
        """The 100%-sparse control has finished: tag its dense run if the dense run does not beat
        it (a flag for the majority answer, set when the dense run finished, stays)."""
        dense_metric, n, majority = float(round0["metric"]), round0.get("n"), round0.get("majority_metric")
        if dense_flag(dense_metric, n, majority=majority) is not None:
            return []
        why = dense_flag(dense_metric, n, sparse100=sparse100)
        return [{"op": "tags", "key": f"dense:{dense}", "tags": {DENSE_FLAG: why}}] if why else []

    def _end(self, config: dict, result: dict, status: str) -> None:
        key = (f"ticket:{result['ticket']}" if result.get("ticket") else
               f"chain:{result['chain_sha256']}" if result.get("chain_sha256") else
               f"dense:{result['dense']}" if result.get("dense") else None)
        if key:
            self._record([{"op": "end", "key": key, "status": status}])
        if self.board is not None:
            from ltvl.ray.board import DONE
            self.board.finished(row_key(config), DONE if status == "FINISHED" else status)

    # --- live metrics (called from the progress view's thread) ------------------------------------
    def live_reading(self, row, snap) -> None:
        """A running chain's train loss and steps/s, to its MLflow run, at most every LIVE_METRICS_S."""
        if row.key not in self._live_keys or snap.steps_per_s <= 0 or snap.t - row.forwarded_t < LIVE_METRICS_S:
            return  # (a reading at a round's first step has no rate yet)
        row.forwarded_t = snap.t
        metrics = {f"{LIVE_PREFIX}steps_per_s": snap.steps_per_s}
        if snap.train_loss == snap.train_loss:
            metrics[f"{LIVE_PREFIX}train_loss"] = round(snap.train_loss, 4)
        self._record([{"op": "live", "key": row.key, "step": snap.chain_step, "metrics": metrics, "t": snap.t}])


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


def plan_rows(stage: str, configs: list[dict], root: str | Path) -> list:
    """The board's rows for one stage's trials, before any starts (so 'waiting' is known)."""
    from ltvl.core.dense import DenseStore
    from ltvl.core.imp import ChainStore
    from ltvl.core.progress import PROGRESS_FILE
    from ltvl.params.resolve import ChainJob, resolve_chain
    from ltvl.ray.board import Row
    from ltvl.ray.space import trial_job

    rows = []
    for config in configs:
        if "group" in config:
            job = resolve_chain(config["group"]["chains"][0])
            p = job.params
            rows.append(Row(row_key(config), f"dense · {p.task} · seed {p.seed} (shared by "
                            f"{len(config['group']['chains'])} chains)", stage, [0.0], [job.chain.train.steps],
                            DenseStore(root, job.dense, writer=False).dir / PROGRESS_FILE))
            continue
        job = trial_job(config)
        if not isinstance(job, ChainJob):
            rows.append(Row(row_key(config), chain_name(job), stage, [0.0], [0]))
            continue
        spec = job.chain
        t, per = spec.train.steps, spec.steps_per_round
        dense_cost = 0 if DenseStore(root, job.dense, writer=False).record() is not None else t
        sparsities = [0.0, *spec.sparsities()]
        rows.append(Row(row_key(config), chain_name(job), stage, sparsities,
                        [dense_cost] + [per] * (len(sparsities) - 1),
                        ChainStore(root, spec, writer=False).dir / PROGRESS_FILE, search=spec.schedule.adaptive))
    return rows
