"""A sweep's ticket, found by its config and chain, trained again and exported (``ltvl ticket export``).

The chain stores keep masks and records, not every round's weights (for a base model that would be
hundreds of MB per round); the trained ticket is a function of what they keep (θi or the state a
fine-tune continues from, the mask, the recipe), so the export trains the round again with the same
routine the chain ran and holds the result to the round's record (:func:`ltvl.core.imp.retrain_round`).
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltvl.util.errors import LtvlError


@dataclass
class Chosen:
    job: Any  # ltvl.params.resolve.ChainJob
    point: dict  # its flat parameters, as the sweep resolved them
    label: str
    root: Path
    round: int
    siblings: list[Any]  # the plan's other chains (RP and controls judge the ticket)
    keep: float  # the sweep's p: a ticket "keeps p of dense"


def load_sweep(config: str, sets: list[str]):
    from ltvl.plan.config import config_kind, find_config, load_config

    path = find_config(config)
    return load_config(config_kind(path), path, sets)


def chain_root(cfg) -> Path:
    from ltvl.util.home import home

    return Path(cfg.root or home() / "sweeps" / cfg.name / "chains")


def answer_round(done: list[dict], keep: float) -> int | None:
    """The sparsest finished pruned round keeping ``keep`` of its dense run (None: none does)."""
    dense = done[0]["metrics"]["metric"] if done else float("nan")
    keeps = [d["round"] for d in done[1:] if d["metrics"]["metric"] >= keep * dense]
    return max(keeps, key=lambda r: done[r]["sparsity"]) if keeps else None


def choose(config: str, sets: list[str], chain: str, round_: int | None, keep: float | None) -> Chosen:
    """The chain of ``config`` whose hash starts with ``chain``, and its round (given, or the sparsest
    keeping ``keep`` of dense)."""
    from ltvl.core.imp import ChainStore
    from ltvl.params.resolve import ChainJob
    from ltvl.plan.plan import build_plan

    cfg = load_sweep(config, sets)
    plan = build_plan(cfg)
    jobs = [j for j in plan.chains if isinstance(j.job, ChainJob)]
    hits = [j for j in jobs if j.job.chain.sha256.startswith(chain.lower())]
    if len(hits) != 1:
        known = ", ".join(f"{j.job.chain.short_hash} ({j.label})" for j in jobs)
        raise LtvlError(f"{len(hits)} chains of sweep {cfg.name!r} start with {chain!r}", where="--chain",
                        fix=f"give more of a chain hash: {known}")
    hit = hits[0]
    root = chain_root(cfg)
    done = ChainStore(root, hit.job.chain, writer=False).finished_rounds()
    if round_ is None:
        if keep is None:
            raise LtvlError("say which round: --round R, or --keep P for the sparsest round keeping P of dense",
                            where="--round/--keep", fix="e.g. --keep 0.99")
        round_ = answer_round(done, keep)
        if round_ is None:
            raise LtvlError(f"no finished round of chain {hit.job.chain.short_hash} keeps {keep:g} of dense",
                            where="--keep", fix="lower --keep, or name a --round")
    return Chosen(hit.job, hit.point, hit.label, root, round_, [j for j in jobs if j is not hit], cfg.keep)


def sweep_command(origin: list[str]) -> str:
    return "ltvl sweep run " + shlex.join(origin)


def _commit() -> str | None:
    """ltvl's git commit, where it runs from a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def facts_of(c: Chosen, rec: dict, command: str) -> dict[str, Any]:
    """What the card says: the result against dense and the controls, the verdict, and the lineage."""
    import ltvl
    from ltvl.core.dense import DenseSpec, DenseStore
    from ltvl.core.imp import ChainStore
    from ltvl.core.verdict import Estimate, verdict
    from ltvl.tracking.records import arm, dense_flag

    done = ChainStore(c.root, c.job.chain, writer=False).finished_rounds()
    dense_rec = DenseStore(c.root, DenseSpec.of(c.job.chain), writer=False).record()
    m0 = done[0]["metrics"]
    n = m0.get("n")
    s = rec["sparsity"]

    def sibling_at(arm_name: str, sparsity: float) -> float | None:
        for j in c.siblings:
            if arm(j.job) != arm_name or j.job.dense.sha256 != c.job.dense.sha256:
                continue
            for d in ChainStore(c.root, j.job.chain, writer=False).finished_rounds()[1:]:
                if abs(d["sparsity"] - sparsity) < 1e-6:
                    return d["metrics"]["metric"]
        return None

    random = sibling_at("RP", s)
    sparse100 = sibling_at("100%-sparse control", 1.0)
    controls = [Estimate.of([v], n) for v in (m0.get("majority_metric"), sparse100) if v is not None]
    v = verdict(s, Estimate.of([rec["metrics"]["metric"]], n), Estimate.of([m0["metric"]], n), c.keep,
                None if random is None else Estimate.of([random], n), controls)
    p = c.job.params
    why = dense_flag(m0["metric"], n, majority=m0.get("majority_metric"), sparse100=sparse100)
    return {
        # a dense run that does not beat a control learned nothing: its rounds are no evidence of a ticket
        "evidence": f"none: its dense run ({m0['metric']:.4f}) is {why}" if why else "its dense run beats the controls",
        "name": f"{c.label} — round {c.round}", "arm": arm(c.job), "task": p.task, "preset": p.preset,
        "params": c.point, "round": c.round, "metric": rec["metrics"]["metric"], "metrics": rec["metrics"],
        "dense_metric": m0["metric"], "majority_metric": m0.get("majority_metric"), "random_metric": random,
        "sparse100_metric": sparse100, "eval_n": n, "verdict": v.label(),
        "rewind_step": c.job.chain.rewind_step, "retrain": c.job.chain.retrain, "seed": p.seed,
        "chain_sha256": c.job.chain.sha256, "dense_sha256": c.job.dense.sha256,
        "data_sha256": dense_rec.data_sha256 if dense_rec is not None else None,
        "parent_sha256": rec.get("parent_sha256"), "ltvl_version": ltvl.__version__, "commit": _commit(),
        "command": command, "store": str(c.root),
    }


def export_from_sweep(config: str, sets: list[str], chain: str, out: Path, round_: int | None = None,
                      keep: float | None = None, say=print) -> Path:
    from ltvl.core.imp import ChainStore

    c = choose(config, sets, chain, round_, keep)
    origin = getattr(load_sweep(config, sets), "origin", [config])
    done = ChainStore(c.root, c.job.chain, writer=False).finished_rounds()
    rec = done[c.round] if 1 <= c.round < len(done) else {}  # else retrain_round names what is finished
    return export_round(c.job, c.root, c.round, facts_of(c, rec, sweep_command(origin)) if rec else {}, out, say)


def export_round(job, root: Path, r: int, facts: dict[str, Any], out: Path, say=print) -> Path:
    """Train round ``r`` of ``job``'s stored chain again (held to its record) and write it with ``facts``."""
    from ltvl.core.imp import retrain_round
    from ltvl.core.train import Trainer
    from ltvl.params.resolve import data_for
    from ltvl.tickets.export import write_ticket
    from ltvl.vl.assemble import build_vl
    from ltvl.vl.datasets import resolve_dataset
    from ltvl.vl.models.presets import get_preset

    if Path(out).exists():
        raise LtvlError(f"{out} already exists", where="--out", fix="choose a new directory (an export never "
                                                                      "overwrites)")
    job = job.with_data(str(resolve_dataset(data_for(job.params))))
    setup = build_vl(job.vl)
    trainer = Trainer(setup.data, job.chain.train)
    say(f"training round {r} of chain {job.chain.short_hash} again ({job.chain.train.steps} steps) to export its "
        "weights")
    model, mask, rec = retrain_round(job.chain, root, r, setup.model_factory, trainer.train, trainer.evaluate,
                                     trainer.calibrate)
    say(f"round {r} reproduced its record: metric {rec['metrics']['metric']:.4f} at {mask.sparsity:.2%}, mask "
        f"{mask.sha256[:12]}")
    return write_ticket(model, mask, get_preset(job.params.preset).kind, facts, out, setup.data.tokenizer,
                        setup.info.answers or None)


def eval_ticket(directory: str | Path, data: str | None = None) -> tuple[dict, dict, bool]:
    """Evaluate an exported ticket from its own files (weights.sparse.safetensors, checked against its
    hashes) on ``data`` (default: the dataset it was trained on). Returns (metrics now, metrics recorded,
    whether the data is the recorded dataset by content)."""
    import json

    from ltvl.core.train import Trainer
    from ltvl.params.resolve import data_for, resolve_chain
    from ltvl.tickets.export import MANIFEST
    from ltvl.tickets.sparse import load_sparse
    from ltvl.util.weights import state_sha256
    from ltvl.vl.assemble import build_vl
    from ltvl.vl.datasets import resolve_dataset

    d = Path(directory)
    try:
        m = json.loads((d / MANIFEST).read_text())
        params = dict(m["params"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LtvlError(f"{d / MANIFEST} is not an ltvl ticket manifest ({type(e).__name__}: {e})", where=str(d),
                        fix="pass a directory written by `ltvl ticket export`") from None
    if data:
        params["data"] = data
    job = resolve_chain(params, where=f"{MANIFEST} params")
    job = job.with_data(str(resolve_dataset(data_for(job.params))))
    setup = build_vl(job.vl)
    state, mask = load_sparse(d / "weights.sparse.safetensors")
    if mask.sha256 != m.get("mask_sha256") or state_sha256(state) != m.get("state_sha256"):
        raise LtvlError("weights.sparse.safetensors is not the ticket ticket.json names", where=str(d),
                        fix="run `ltvl ticket verify` on it; export it again")
    model = setup.model_factory()
    model.load_state_dict(state, strict=True)
    metrics = Trainer(setup.data, job.chain.train).evaluate(model)
    return metrics, m.get("metrics") or {"metric": m.get("metric")}, setup.info.content_sha256 == m.get("data_sha256")


def run_ref(uri: str, run_id: str) -> tuple[str, int | None]:
    """(chain hash, round) an MLflow run of a sweep names: a round's run its round, a chain's run none
    (then --round or --keep says which)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        run = MlflowClient(uri).get_run(run_id)
    except MlflowException as e:
        raise LtvlError(f"MLflow at {uri} has no run {run_id} ({e.message})", where="--run",
                        fix="copy the run id from the MLflow UI, and pass --tracking-uri for a server") from None
    tags = run.data.tags
    key = tags.get("ltvl.chain_key") or tags.get("ltvl.key", "")
    if not key.startswith("chain:"):
        raise LtvlError(f"run {run_id} is not a chain's or a round's run of an ltvl sweep (ltvl.kind: "
                        f"{tags.get('ltvl.kind')!r})", where="--run", fix="pick an IMP, RP, … chain run or one of "
                                                                         "its round runs")
    r = tags.get("ltvl.round")
    return key.removeprefix("chain:"), int(r) if r is not None and tags.get("ltvl.kind") == "round" else None
