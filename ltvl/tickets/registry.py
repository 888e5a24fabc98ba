"""Each chain's ticket in MLflow's Model Registry: after a sweep, the sparsest round of every pruned chain
that keeps ``keep`` of dense becomes a version of the registered model ``<sweep>.<task>.<arm>``, with
its card and mask (what ``write_ticket(None, …)`` writes) as artifacts of the chain's MLflow run and
tags for arm, sparsity, metric, dense run, chain and round, so the Models page lists the tickets.
``ltvl ticket export models:/NAME/VERSION`` trains the weights again from the chain store.

Registering is idempotent: a version whose chain and round are already registered is not added again,
so a resumed or replayed sweep never duplicates one. MLflow being unreachable is reported, not fatal
(the stores keep everything; the next run registers what is missing)."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from ltvl.util.errors import LtvlError

ARTIFACT = "ticket-round-{round}"


def model_name(sweep: str, task: str, arm: str) -> str:
    """``rewind-grid.vqa.IMP-thetai-at-30``: ASCII, no '/', so ``models:/NAME/VERSION`` parses."""
    readable = arm.replace("θ''0", "theta0-shuffled").replace("θ'0", "theta0-prime").replace("θ", "theta")
    readable = readable.replace("@", "-at-").replace("%", "pct").replace("+", "plus")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", readable).strip("-")
    return f"{sweep}.{task}.{slug}"


def _existing(client, name: str, chain: str, r: int):
    for mv in client.search_model_versions(f"name = '{name}'"):
        if mv.tags.get("ltvl.chain") == chain and mv.tags.get("ltvl.round") == str(r):
            return mv
    return None


def register_sweep(cfg, uri: str) -> list[str]:
    """Register every pruned chain's answer of the sweep ``cfg``; one line per model version (or why not)."""
    from mlflow import MlflowClient

    from ltvl.core.dense import DenseSpec, DenseStore
    from ltvl.core.imp import ChainStore
    from ltvl.params.resolve import ChainJob
    from ltvl.plan.plan import build_plan
    from ltvl.tickets.from_sweep import Chosen, answer_round, chain_root, facts_of, sweep_command
    from ltvl.tracking.records import arm
    from ltvl.vl.models.presets import get_preset

    root = chain_root(cfg)
    jobs = [j for j in build_plan(cfg).chains if isinstance(j.job, ChainJob)]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    lines = []
    for j in jobs:
        if arm(j.job) == "100%-sparse control":
            continue
        store = ChainStore(root, j.job.chain, writer=False)
        done = store.finished_rounds()
        r = answer_round(done, cfg.keep)
        if r is None:
            continue
        run_id = _chain_run(store.dir)
        if run_id is None:
            lines.append(f"{j.label}: not registered (its MLflow run is not known yet; the next run registers it)")
            continue
        name = model_name(cfg.name, j.job.params.task, arm(j.job))
        if _existing(client, name, j.job.chain.sha256, r) is not None:
            continue
        c = Chosen(j.job, j.point, j.label, root, r, [o for o in jobs if o is not j], cfg.keep)
        facts = facts_of(c, done[r], sweep_command(getattr(cfg, "origin", [cfg.kind])))
        dense = DenseStore(root, DenseSpec.of(j.job.chain), writer=False)
        mv = register(client, name, run_id, done[r], facts, store.find_mask(done[r]["mask_sha256"], dense),
                      get_preset(j.job.params.preset).kind)
        lines.append(f"registered {name} version {mv.version}: {j.label}, round {r} at {done[r]['sparsity']:.1%}, "
                     f"metric {done[r]['metrics']['metric']:.4f}")
    return lines


def _chain_run(directory: Path) -> str | None:
    try:
        return json.loads((directory / "mlflow.json").read_text()).get("run_id")
    except (OSError, ValueError):
        return None


def register(client, name: str, run_id: str, rec: dict, facts: dict[str, Any], mask_path: Path, kind: str):
    """Log the card of round ``rec`` under the run, and make it a version of ``name``."""
    from mlflow.exceptions import MlflowException

    from ltvl.pruning.maskfile import load_mask
    from ltvl.tickets.export import write_ticket

    artifact = ARTIFACT.format(round=rec["round"])
    with tempfile.TemporaryDirectory() as tmp:
        card = write_ticket(None, load_mask(mask_path), kind, facts, Path(tmp) / artifact)
        client.log_artifacts(run_id, str(card), artifact)
        description = (card / "README.md").read_text()
    try:
        client.create_registered_model(name, tags={"ltvl.sweep": name.split(".")[0]},
                                       description=f"ltvl tickets of arm {facts.get('arm')} on {facts.get('task')}")
    except MlflowException as e:
        if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
            raise
    # the run's own artifact location (a runs:/ URI would be resolved against the default tracking URI)
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact}"
    tags = {"ltvl.arm": str(facts.get("arm")), "ltvl.task": str(facts.get("task")),
            "ltvl.sparsity": f"{rec['sparsity']:.6f}", "ltvl.metric": f"{rec['metrics']['metric']:.6f}",
            "ltvl.dense": str(facts.get("dense_sha256")), "ltvl.chain": str(facts.get("chain_sha256")),
            "ltvl.round": str(rec["round"]), "ltvl.mask_sha256": rec["mask_sha256"],
            "ltvl.verdict": str(facts.get("verdict") or ""), "ltvl.evidence": str(facts.get("evidence") or "")}
    return client.create_model_version(name, source, run_id=run_id, tags=tags, description=description)


def fetch_card(uri: str, ref: str, dst: Path) -> tuple[Path, Any]:
    """``models:/NAME/VERSION``'s card, downloaded into ``dst`` and verified; (its directory, the version)."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    from ltvl.tickets.export import verify_ticket

    m = re.fullmatch(r"models:/([^/]+)/(\d+)", ref)
    if not m:
        raise LtvlError(f"{ref!r} is not models:/NAME/VERSION", where="TICKET",
                        fix="e.g. models:/rewind-grid.vqa.IMP/1")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        mv = client.get_model_version(m.group(1), m.group(2))
        local = Path(download_artifacts(artifact_uri=mv.source, dst_path=str(dst), tracking_uri=uri))
    except MlflowException as e:
        raise LtvlError(f"MLflow at {uri} has no {ref} ({e.message})", where="TICKET",
                        fix="check the name and version on the Models page, and --tracking-uri") from None
    breaches = verify_ticket(local)
    if breaches:
        raise LtvlError(f"the registered card of {ref} fails verification: {'; '.join(breaches[:3])}", where=ref,
                        fix="register it again (re-run the sweep; registration is idempotent per chain and round)")
    return local, mv


GENERATED = ("format", "kind", "weights", "mask_sha256", "state_sha256", "sparsity", "sparsity_by_group", "files")


def export_from_registry(uri: str, ref: str, out: Path, say=print) -> Path:
    """``models:/NAME/VERSION``: its card (verified), its chain resolved again from the card's parameters
    and held to the card's chain hash, the round trained again from the chain store the card names."""
    import json
    import tempfile

    from ltvl.params.resolve import resolve_chain
    from ltvl.tickets.export import MANIFEST
    from ltvl.tickets.from_sweep import export_round

    with tempfile.TemporaryDirectory() as tmp:
        card, _mv = fetch_card(uri, ref, Path(tmp))
        m = json.loads((card / MANIFEST).read_text())
    job = resolve_chain(m["params"], where=f"{ref} params")
    if job.chain.sha256 != m.get("chain_sha256"):
        raise LtvlError(f"{ref}'s parameters resolve to chain {job.chain.short_hash}, its card names "
                        f"{str(m.get('chain_sha256'))[:16]}: this ltvl computes another chain from them",
                        where=ref, fix="export with the ltvl version and commit the card names")
    facts = {k: v for k, v in m.items() if k not in GENERATED}
    say(f"{ref}: {m.get('name')} (chain store {m.get('store')})")
    return export_round(job, Path(m["store"]), int(m["round"]), facts, out, say)

