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
it owns is written, so replaying a record is harmless. Every record passes through a local spool
(:mod:`ltvl.tracking.spool`) and is sent from its front, in order; while the server is
unreachable records wait there and go out when it answers again. Nothing the training produced
depends on MLflow being up.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ltvl.tracking.records import BY_SPARSITY, CHAIN_METRICS
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


def deep_link(uri: str, experiment_id: str, p: float = 0.99) -> str:
    """The MLflow UI page that answers "which chain keeps p of dense at the highest sparsity":
    the experiment's training runs (not the GenAI view), chain runs only, best ticket first, in
    chart view. Only documented query parameters of the runs page are used; a local store is
    shown by ``mlflow ui`` on its default address (:func:`ui_command`)."""
    from urllib.parse import quote, urlencode

    from ltvl.tracking.records import best_key
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    query = urlencode({"searchFilter": "tags.`ltvl.kind` = 'chain'", "orderByKey": f"metrics.`{best_key(p)}`",
                       "orderByAsc": "false", "compareRunsMode": "CHART", "workflowType": "machine_learning"},
                      quote_via=quote)
    return f"{base}/#/experiments/{experiment_id}/runs?{query}"


class TrackingUnavailable(Exception):
    """MLflow did not take a record (down, refusing, timing out): try again later."""


class UnknownOp(ValueError):
    """A spooled record of a kind this version does not know (written by another ltvl version)."""


class LineageTracker:
    """Idempotent writes of lineage records to one experiment, through a :class:`Spool`.

    ``record`` is the synchronous path (CLI, tests); a sweep driver sends through
    :class:`ltvl.tracking.sender.LineageSender` instead, so that no MLflow call ever runs on
    Tune's event loop."""

    def __init__(self, uri: str, experiment: str, sweep_kind: str, spool: str | Path):
        # MLflow's own HTTP retries would stall a caller for minutes per request while a server
        # is down; a record that does not go through waits in the spool and is tried again later.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        # MLflow prints "View run … at: <url>" for every run it ends on a server: hundreds of
        # lines in a sweep log; the summary prints where to look once
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        from ltvl.tracking.reach import open_client
        from ltvl.tracking.spool import Spool
        self.uri, self.experiment_name, self.sweep_kind = uri, experiment, sweep_kind
        self.client = open_client(uri)  # a fresh sqlite store is migrated by the first client that opens it
        self.spool = Spool(spool, experiment)
        self.experiment_id: str | None = None
        self._ids: dict[str, str] = {}

    # --- connection --------------------------------------------------------------------------
    def connect(self) -> str:
        """Reach the server and find or create the experiment, before any trial starts; then send
        what an earlier run left in the spool."""
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
            for k, v in experiment_tags(self.sweep_kind).items():  # also on experiments made by older versions
                if exp is None or exp.tags.get(k) != v:
                    self.client.set_experiment_tag(self.experiment_id, k, v)
        self.flush()
        return self.experiment_id

    # --- records (idempotent) ----------------------------------------------------------------------
    def record(self, op: dict[str, Any]) -> None:
        """Spool one record and send everything waiting, in order, as far as MLflow takes it."""
        self.spool.append([op])
        self.flush()

    def pending(self) -> int:
        return len(self.spool)

    def flush(self) -> int:
        """Send spooled records in order until one does not go through; returns how many wait."""
        while True:
            try:
                op, rejected = self.send_next()
            except TrackingUnavailable:
                break
            if op is None:
                break
            if rejected is not None:
                print(rejected, file=sys.stderr)
        return len(self.spool)

    def send_next(self) -> tuple[dict[str, Any] | None, str | None]:
        """Send the spool's oldest record: (the record or None when the spool is empty, a message
        if MLflow can never take it and it was set aside). :class:`TrackingUnavailable` leaves it
        at the head, to be tried again."""
        op = self.spool.head()
        if op is None:
            return None, None
        message = None
        try:
            self.send(op)
        except (LtvlError, UnknownOp) as e:  # never accepted, however often tried: out of the way
            path = self.spool.reject(op, e)
            message = f"MLflow refused record {op.get('key')} ({type(e).__name__}: {str(e)[:200]}); kept in {path}"
        self.spool.mark_sent()
        return op, message

    def send(self, op: dict[str, Any]) -> None:
        """Apply one record, once: a transport or server error becomes :class:`TrackingUnavailable`
        (the record stays at the spool's head); a record MLflow can never take raises as itself."""
        try:
            self._apply(op)
        except (LtvlError, UnknownOp):
            raise
        except Exception as e:  # noqa: BLE001 - network and server errors alike
            raise TrackingUnavailable(f"{type(e).__name__}: {str(e)[:300]}") from e

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
                now = _stamp(op)
                self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, int(op.get("step", 0)))
                                                       for k, v in op["metrics"].items()])
        elif kind == "live":  # a running chain's reading: dropped where its run does not exist yet
            run_id = self._find(op["key"])
            if run_id:
                from mlflow.entities import Metric
                self.client.log_batch(run_id, metrics=[Metric(k, float(v), _stamp(op), int(op["step"]))
                                                       for k, v in op["metrics"].items()])
        elif kind == "tags":  # tags learnt after the run was made (e.g. a flag on its result)
            run_id = self._find(op["key"])
            if run_id:
                from mlflow.entities import RunTag
                self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in op["tags"].items()])
        elif kind == "end":
            run_id = self._find(op["key"])
            if run_id:
                self.client.set_terminated(run_id, op["status"])
        else:
            raise UnknownOp(f"unknown tracking op {kind!r}")

    def _find(self, key: str) -> str | None:
        if key in self._ids:
            return self._ids[key]
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{KEY}` = '{key}'", max_results=2)
        if runs:
            self._ids[key] = runs[0].info.run_id
        return self._ids.get(key)

    def _run(self, key: str, name: str, params: dict, tags: dict, parent_key: str | None = None,
             start_time: float | None = None) -> str:
        run_id = self._find(key)
        if run_id is None:
            all_tags = {KEY: key, **{k: self._resolve(str(v)) for k, v in tags.items()}}
            if parent_key:
                all_tags["mlflow.parentRunId"] = self._find(parent_key) or ""
            run_id = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name,
                                            start_time=int(start_time * 1000) if start_time else None).info.run_id
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
        now, step = _stamp(op), int(op["round"])
        metrics = {k: float(v) for k, v in op["metrics"].items() if v is not None}
        logged = existing and any(m.step == step for m in self.client.get_metric_history(chain_id, "metric"))
        if not logged:  # a half-written round (crash mid-record) already put its points on the chain
            chain_points = [Metric(k, v, now, step) for k, v in metrics.items() if k in CHAIN_METRICS]
            chain_points += [Metric(k, float(v), now, int(op["sparsity_bp"]) if k == BY_SPARSITY else step)
                             for k, v in (op.get("chain_metrics") or {}).items() if v == v]
            self.client.log_batch(chain_id, metrics=chain_points)
        tags = {**op["tags"], "mlflow.parentRunId": chain_id}
        run_id = self._run(key, op["name"], {}, tags, start_time=op.get("started_at"))
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
        if op.get("mask_path") and Path(op["mask_path"]).exists():
            self.client.log_artifact(run_id, op["mask_path"], artifact_path="mask")
            self.client.log_text(run_id, json.dumps(mask_summary(op["mask_path"], op), indent=2),
                                 "mask/summary.json")
        self.client.log_batch(run_id, tags=[RunTag(COMPLETE, "1")])
        ended = op.get("ended_at")
        self.client.set_terminated(run_id, "FINISHED", end_time=int(ended * 1000) if ended else None)

    def run_id(self, key: str) -> str | None:
        """The run of a record key, or None where it is not there yet or MLflow does not answer."""
        try:
            return self._find(key)
        except Exception:  # noqa: BLE001 - a hint only; never worth failing for
            return None


def experiment_tags(sweep_kind: str) -> dict[str, str]:
    """Open on the training runs, not MLflow 3's GenAI overview, and say what the experiment holds."""
    return {"mlflow.experimentKind": "custom_model_development",
            "mlflow.note.content": (
                f"ltvl {sweep_kind} sweep. Chain runs (ltvl.kind = chain) are IMP/RP/… chains: sort by "
                f"best_sparsity_p99 for the sparsest ticket keeping 99% of dense; the chart of "
                f"{BY_SPARSITY} is metric against sparsity (step = basis points, 7500 = 75%). Each chain's "
                f"rounds are nested runs holding the mask, mask/summary.json and the lineage tags; dense runs "
                f"(ltvl.kind = dense) are the baselines; ltvl.arm names the arm as in the paper and `ltvl report`.")}


def mask_summary(mask_path: str, op: dict) -> dict:
    """What a reader wants from a mask without loading it: sparsity per tensor and its lineage."""
    from ltvl.pruning.maskfile import load_mask
    mask = load_mask(mask_path)
    tensors = {n: {"kept": int(t.sum()), "total": t.numel(), "sparsity": round(1 - int(t.sum()) / t.numel(), 4)}
               for n, t in mask.tensors.items()}
    return {"sha256": mask.sha256, "parent_sha256": op["tags"].get("ltvl.parent_sha256") or None,
            "round": op["round"], "chain": op["chain_key"], "run": op["name"],
            "sparsity": round(mask.sparsity, 6), "kept": sum(v["kept"] for v in tensors.values()),
            "total": sum(v["total"] for v in tensors.values()),
            "empty_tensors": [n for n, v in tensors.items() if v["kept"] == 0], "tensors": tensors}


def _stamp(op: dict) -> int:
    """A metric's timestamp (ms): when the record was made, not when an outage let it through."""
    return int(float(op.get("t") or time.time()) * 1000)


def _param(v: Any) -> str:
    s = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list, tuple)) else str(v)
    return s[:6000]
