"""MLflow as the lineage record of a sweep: every chain, round, mask and ticket, keyed so that a
crash, a resume or a replay never creates a duplicate.

Layout in the MLflow UI (one experiment per sweep):

- a **dense run** per shared dense training (``ltvl.kind=dense``): the dense baseline;
- a **chain run** per IMP/RP chain or ticket chain (``ltvl.kind=chain|ticket``): every chain
  param as a param, and the per-round metrics logged with ``step = round`` so the UI's charts
  show metric vs round and runs compare side by side;
- a nested **round run** per round (``ltvl.kind=round``, ``mlflow.parentRunId`` = the chain run):
  the round's metrics, the mask as an artifact (``mask/<sha>.mask.safetensors``) and the lineage
  tags (mask and parent sha256, rewind step, rate, ε, task, source task, init, dense run id).

Every record has a key (``ltvl.key``): ``dense:<sha>``, ``chain:<sha>``, ``round:<chain sha>:<r>``.
Writes look the key up first, and a round run is marked ``ltvl.complete`` only after everything
it owns is written, so replaying a record is harmless. If the tracking server is unreachable,
records wait in a local spool (JSON lines) and are replayed when it answers again; nothing the
training produced depends on MLflow being up.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ltvl.util.errors import LtvlError

KEY, KIND, COMPLETE = "ltvl.key", "ltvl.kind", "ltvl.complete"
SWEEP_KIND = "ltvl.sweep_kind"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` where set (``ltvl cluster up`` sets it for its jobs), else sqlite
    under LTVL_HOME: ``ray job submit`` runs in a temporary copy of the working directory, so a
    relative ``sqlite:///mlflow.db`` would vanish with it."""
    import os
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    from ltvl.util.home import home
    return f"sqlite:///{home() / 'mlflow.db'}"


def ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser (port-forward it if the server is remote)"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"


class TrackingUnavailable(Exception):
    """MLflow did not answer after the retries."""


class LineageTracker:
    def __init__(self, uri: str, experiment: str, sweep_kind: str, spool: str | Path, *, retries: int = 3,
                 backoff_s: float = 0.5, sleep: Callable[[float], None] = time.sleep):
        # MLflow's own HTTP retries would stall a sweep for minutes per call while a server is
        # down; this class retries with a short backoff and then spools instead.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow import MlflowClient

        from ltvl.tracking.reach import store_init_lock
        self.uri, self.experiment_name, self.sweep_kind = uri, experiment, sweep_kind
        with store_init_lock(uri):  # a fresh sqlite store is migrated by the first client that opens it
            self.client = MlflowClient(tracking_uri=uri)
        self.spool = Path(spool)
        self.retries, self.backoff_s, self.sleep = retries, backoff_s, sleep
        self.experiment_id: str | None = None
        self._ids: dict[str, str] = {}
        self.spooled_total = 0

    # --- connection --------------------------------------------------------------------------
    def connect(self) -> str:
        """Reach the server and find or create the experiment, before any trial starts."""
        from ltvl.tracking.reach import check_reachable, store_init_lock

        check_reachable(self.uri)  # bounded: a dead server fails here within LTVL_TRACKING_TIMEOUT
        with store_init_lock(self.uri):  # two new experiments at once on one sqlite file: one at a time
            try:
                exp = self.client.get_experiment_by_name(self.experiment_name)
            except Exception as e:  # noqa: BLE001 - any transport or store error means unreachable
                raise LtvlError(f"cannot reach MLflow at {self.uri} ({type(e).__name__}: {str(e)[:200]})",
                                where="tracking_uri", fix="start the server, fix the URI, or leave tracking_uri unset "
                                "for the local sqlite store") from e
            if exp is None:
                artifact_location = None
                if self.uri.startswith("sqlite:"):
                    artifact_location = (Path(self.uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
                self.experiment_id = self.client.create_experiment(self.experiment_name, artifact_location,
                                                                   tags={SWEEP_KIND: self.sweep_kind})
            else:
                kind = exp.tags.get(SWEEP_KIND)
                if kind != self.sweep_kind:
                    raise LtvlError(f"MLflow experiment {self.experiment_name!r} holds a {kind!r} sweep, this is a "
                                    f"{self.sweep_kind!r} sweep", where="name",
                                    fix="choose another sweep name (name=...) so the runs stay comparable")
                self.experiment_id = exp.experiment_id
        self.flush()
        return self.experiment_id

    # --- records (idempotent) ----------------------------------------------------------------------
    def record(self, op: dict[str, Any]) -> None:
        """Apply one record now, or spool it if MLflow does not answer."""
        if self.pending():
            self.flush()
        if self.pending():  # still down: keep order, do not wait again for every record
            self._spool(op)
            return
        try:
            self._with_retries(lambda: self._apply(op))
        except TrackingUnavailable:
            self._spool(op)

    def pending(self) -> int:
        return sum(1 for _ in self.spool.open()) if self.spool.exists() else 0

    def flush(self) -> int:
        """Replay spooled records in order; returns how many are still waiting."""
        if not self.spool.exists():
            return 0
        ops = [json.loads(line) for line in self.spool.read_text().splitlines() if line.strip()]
        done = 0
        try:
            for op in ops:
                self._with_retries(lambda op=op: self._apply(op), retries=0)
                done += 1
        except TrackingUnavailable:
            pass
        rest = ops[done:]
        tmp = self.spool.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(o) + "\n" for o in rest))
        os.replace(tmp, self.spool)
        if not rest:
            self.spool.unlink()
        return len(rest)

    def _spool(self, op: dict) -> None:
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        with self.spool.open("a") as f:
            f.write(json.dumps(op) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.spooled_total += 1

    def _with_retries(self, fn: Callable[[], Any], retries: int | None = None) -> Any:
        n = self.retries if retries is None else retries
        for attempt in range(n + 1):
            try:
                return fn()
            except LtvlError:
                raise
            except Exception as e:  # noqa: BLE001 - network and server errors alike
                if attempt == n:
                    raise TrackingUnavailable(str(e)) from e
                self.sleep(self.backoff_s * 2 ** attempt)

    # --- the writes ----------------------------------------------------------------------------
    def _apply(self, op: dict) -> None:
        if self.experiment_id is None:
            self.connect()
        kind = op["op"]
        if kind == "run":
            self._run(op["key"], op["name"], op.get("params", {}), op.get("tags", {}), op.get("parent"))
        elif kind == "round":
            self._round(op)
        elif kind == "metrics":
            run_id = self._find(op["key"])
            have = self.client.get_run(run_id).data.metrics
            if any(k not in have for k in op["metrics"]):  # idempotent: logged once
                from mlflow.entities import Metric
                now = int(time.time() * 1000)
                self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, int(op.get("step", 0)))
                                                       for k, v in op["metrics"].items()])
        elif kind == "end":
            run_id = self._find(op["key"])
            if run_id:
                self.client.set_terminated(run_id, op["status"])
        else:
            raise ValueError(f"unknown tracking op {kind!r}")

    def _find(self, key: str) -> str | None:
        if key in self._ids:
            return self._ids[key]
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{KEY}` = '{key}'", max_results=2)
        if runs:
            self._ids[key] = runs[0].info.run_id
        return self._ids.get(key)

    def _run(self, key: str, name: str, params: dict, tags: dict, parent_key: str | None = None) -> str:
        run_id = self._find(key)
        if run_id is None:
            all_tags = {KEY: key, **{k: self._resolve(str(v)) for k, v in tags.items()}}
            if parent_key:
                all_tags["mlflow.parentRunId"] = self._find(parent_key) or ""
            run_id = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name).info.run_id
            self._ids[key] = run_id
            from mlflow.entities import Param
            items = [Param(k, _param(v)) for k, v in sorted(params.items())]
            for i in range(0, len(items), 100):
                self.client.log_batch(run_id, params=items[i:i + 100])
        return run_id

    def _resolve(self, value: str) -> str:
        """Tag values ``@key:<key>`` name another record: store that record's run id."""
        return (self._find(value[5:]) or "") if value.startswith("@key:") else value

    def _round(self, op: dict) -> None:
        from mlflow.entities import Metric, RunTag
        key = op["key"]
        existing = self._find(key)
        if existing and self.client.get_run(existing).data.tags.get(COMPLETE) == "1":
            return  # replayed record: everything it owns is already there
        chain_id = self._find(op["chain_key"])
        if chain_id is None:
            raise ValueError(f"round {key} arrived before its chain run")
        now, step = int(time.time() * 1000), int(op["round"])
        metrics = {k: float(v) for k, v in op["metrics"].items() if v is not None}
        logged = existing and any(m.step == step for m in self.client.get_metric_history(chain_id, "metric"))
        if not logged:  # a half-written round (crash mid-record) already put its point on the chain
            self.client.log_batch(chain_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])
        tags = {**op["tags"], "mlflow.parentRunId": chain_id}
        run_id = self._run(key, op["name"], {}, tags)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
        if op.get("mask_path") and Path(op["mask_path"]).exists():
            self.client.log_artifact(run_id, op["mask_path"], artifact_path="mask")
        self.client.log_batch(run_id, tags=[RunTag(COMPLETE, "1")])
        self.client.set_terminated(run_id, "FINISHED")

    def run_id(self, key: str) -> str | None:
        try:
            return self._with_retries(lambda: self._find(key), retries=0)
        except TrackingUnavailable:
            return None


def _param(v: Any) -> str:
    s = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list, tuple)) else str(v)
    return s[:6000]
