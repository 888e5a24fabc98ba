"""The Ray Train worker: one IMP chain, all its rounds, in one worker group (DDP when >1 worker).

Launching a TorchTrainer costs ~20 s on a small machine, so the worker group lives for the
whole chain; each round is reported once (metrics + a checkpoint holding the round's mask
and record). Chain state lives in the chain store on storage every worker can read: a
restarted worker group (FailureConfig.max_failures) replays finished rounds from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ray.train
import ray.train.torch
import torch

from ltvl.core.dense import DenseStore, ensure_dense
from ltvl.core.imp import ChainStore, RoundResult, run_chain
from ltvl.core.invariants import label
from ltvl.core.next_mask import dense_inputs, shared_first_mask
from ltvl.core.progress import PROGRESS_FILE, RoundProgress
from ltvl.core.ticket_chain import TicketRound, run_ticket_chain
from ltvl.core.train import Trainer
from ltvl.params.resolve import ChainJob, data_for, prime_for, resolve_chain, ticket_plan
from ltvl.params.schema import TICKET_KEYS
from ltvl.pruning.mask import Mask
from ltvl.util.atomic import atomic_write_text
from ltvl.vl.assemble import build_vl
from ltvl.vl.datasets import resolve_dataset


def _common_metrics(r: RoundResult | TicketRound) -> dict:
    """What every reported round carries, chain round or ticket round alike."""
    out = {"round": r.round, "sparsity": r.sparsity, "metric": r.metrics["metric"], "train_loss": r.train_loss,
           "wall_s": r.wall_s, "mask_sha256": r.mask_sha256, "mask_path": r.mask_path, "replayed": r.replayed}
    if "majority_metric" in r.metrics:  # the majority-answer control on the same questions, and how many
        out["majority_metric"] = r.metrics["majority_metric"]
        out["n"] = r.metrics.get("n", 0)
    if r.checks:  # flat text: Tune flattens nested results
        out["checks"] = label(r.checks)
    return out


def round_metrics(r: RoundResult) -> dict:
    out = {**_common_metrics(r), "parent_sha256": r.parent_sha256 or "", "chain_sha256": r.chain_sha256,
           "steps_trained": r.steps_trained, "train_flops": r.train_flops}
    if r.finetune_metrics:
        out["finetune_metric"] = r.finetune_metrics["metric"]
    if r.level is not None and r.round > 0:  # schedule: adaptive: which try this round was, and its verdict
        out.update(level=r.level, parent_level=r.parent_level, kept=bool(r.kept), next_level=r.next_level or 0)
    return out


def dense_ratio(metric: float, dense: float) -> float:
    """A round's metric as a fraction of its dense baseline (what 'keeps p% of dense' compares)."""
    return metric / dense if dense > 0 else float("nan")


def _fault_injected(train_fn):
    """Testing aids, read from the environment so they never enter a chain's hash:

    * ``LTVL_FAULT_AT_ROUND=R:FILE`` kills the worker process hard at the start of round R of a
      fresh chain, once (FILE marks that it happened, so the restarted group runs clean);
    * ``LTVL_HOLD_AT_ROUND=R:DIR`` holds the R-th training of a fresh chain process (round R when
      round 0 came from the dense stage) once it has started:
      it writes ``DIR/holding-<pid>`` (this node's Ray id) and waits for ``DIR/release``, so a
      test can take the node away while the round is in flight."""
    fault, hold = os.environ.get("LTVL_FAULT_AT_ROUND"), os.environ.get("LTVL_HOLD_AT_ROUND")
    if not fault and not hold:
        return train_fn
    calls = {"n": 0}

    def wrapped(*a, **kw):
        calls["n"] += 1
        if fault:
            at, marker = fault.split(":", 1)
            if calls["n"] - 1 == int(at) and not Path(marker).exists():
                Path(marker).write_text("killed")
                os._exit(1)
        if hold:
            at, gate = hold.split(":", 1)
            if calls["n"] == int(at) and not Path(gate, "release").exists():
                atomic_write_text(Path(gate, f"holding-{os.getpid()}"), ray.get_runtime_context().get_node_id())
                deadline = time.monotonic() + 600
                while not Path(gate, "release").exists() and time.monotonic() < deadline:
                    time.sleep(0.2)
        return train_fn(*a, **kw)

    return wrapped


def _with_progress(train_fn, progress: RoundProgress, steps: int):
    """Tell the progress file which training run starts (its steps), then train."""

    def wrapped(model, **kw):
        start, until, enforcer = kw.get("start"), kw.get("until"), kw.get("enforcer")
        target = getattr(enforcer, "target", None) if enforcer is not None else None  # a GMP ramp's end
        progress.begin(start.step if start is not None else 0, steps if until is None else until,
                       target if target is not None else enforcer.mask.sparsity if enforcer is not None else None)
        return train_fn(model, **kw)

    return wrapped


def _timings(r) -> dict:
    """When the round ran, by this worker's clock: MLflow shows it instead of when the driver wrote it."""
    if r.replayed:
        return {}
    end = time.time()
    return {"started_at": end - r.wall_s, "ended_at": end}


def _await_gate(r) -> None:
    """Testing aid: LTVL_ROUND_GATE=DIR holds a chain after it reported round R until ``DIR/R``
    exists, so a test can disturb the sweep (restart MLflow, say) between rounds, whatever the
    machine's speed. Read from the environment so it never enters a chain's hash."""
    if (gate := os.environ.get("LTVL_ROUND_GATE")) and not r.replayed:
        deadline = time.monotonic() + 600
        while not Path(gate, str(r.round)).exists() and time.monotonic() < deadline:
            time.sleep(0.2)


def _log_round(r) -> None:
    """Testing aid: LTVL_ROUND_LOG=FILE appends ``chain round`` for every round computed (not
    replayed), so a test can prove that no finished round ran twice across crashes and resumes."""
    if (log := os.environ.get("LTVL_ROUND_LOG")) and not r.replayed:
        with open(log, "a") as f:
            f.write(f"{getattr(r, 'chain_sha256', None) or r.ticket} {r.round}\n")


def check_same_mask_everywhere(sha: str, round_: int) -> None:
    """DDP keeps replicas identical, so every rank must have pruned to the same mask: verify it."""
    shas: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(shas, sha)
    if len(set(shas)) != 1:
        raise RuntimeError(f"round {round_}: ranks disagree on the mask ({[s[:12] for s in shas]})")


def rank0_view(world: int):
    """``agree`` for the core: every rank acts on rank 0's reading of shared files (another trial
    may be writing them), so all ranks train the same steps and DDP collectives stay matched."""

    def agree(value):
        if world == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    return agree


@dataclass
class WorkerSetup:
    job: ChainJob
    model_factory: object
    trainer: Trainer
    rank: int
    world: int
    nodes: str  # the Ray node ids of all ranks, sorted and comma-joined: where this trial ran
    data_sha256: str = ""  # the dataset's content hash: stores refuse to replay runs on other data

    @property
    def agree(self):
        return rank0_view(self.world)


def setup_worker(params: dict, cpus: float = 1) -> WorkerSetup:
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # Ray sets OMP_NUM_THREADS = floor(CPUs); a worker granted 1.9 CPUs should still use 2 threads.
    torch.set_num_threads(max(1, round(cpus)))
    job = resolve_chain(params)
    job = job.with_data(str(resolve_dataset(data_for(job.params))))
    setup = build_vl(job.vl)
    if setup.prunable != job.chain.prunable:  # the hash the driver named this chain by must be the one trained
        raise RuntimeError(f"preset {job.params.preset!r}: the model's prunable set differs from the resolved job's")
    trainer = Trainer(setup.data, job.chain.train, ray.train.torch.get_device(), rank=rank, world_size=world)
    return WorkerSetup(job, setup.model_factory, trainer, rank, world, _nodes_of_all_ranks(world),
                       setup.info.content_sha256)


def _nodes_of_all_ranks(world: int) -> str:
    node = ray.get_runtime_context().get_node_id()
    ids = [node] * world
    if world > 1:
        torch.distributed.all_gather_object(ids, node)
    return ",".join(sorted(set(ids)))


def train_dense(config: dict) -> None:
    """``train_loop_per_worker`` of a dense-prefix trial. config = {"group": {"dense_sha256": …,
    "chains": [<chain params>, ...]}, "root": ...}: the chains share one dense run, trained here
    once with θi for all their rewind steps and the first mask of each rate, reported as one iteration."""
    group = config["group"]["chains"]
    w = setup_worker(group[0], config.get("cpus", 1))
    specs = [resolve_chain(p).chain for p in group]
    store = DenseStore(config["root"], w.job.dense, writer=w.rank == 0)
    steps = w.job.chain.train.steps
    progress = RoundProgress(store.dir / PROGRESS_FILE if w.rank == 0 else None, [0.0], steps, 0)
    w.trainer.on_step = progress.step
    t0 = time.time()
    got = ensure_dense(
        store, {step for s in specs for step in s.dense_steps}, w.model_factory,
        _with_progress(w.trainer.train, progress, steps), w.trainer.evaluate, w.agree, w.data_sha256
    )
    dense_mask = Mask.dense_like(got.final_weights())
    for spec in specs:
        shared_first_mask(spec, got, dense_mask, dense_inputs(spec, got, w.model_factory, w.trainer.calibrate))
    load = getattr(w.model_factory().backbone, "load_report", None)  # what θ0's checkpoint load did, for MLflow
    ray.train.report(
        {
            "dense": store.sha256,
            "load": load.line() if load is not None else "",
            "dense_steps": got.steps_trained,
            "round": 0,
            "metric": got.record.metrics["metric"],
            **{k: v for k, v in got.record.metrics.items() if k in ("majority_metric", "n")},
            "nodes": w.nodes,
            "started_at": t0,
            "ended_at": time.time(),
        }
    )


def train_tickets(config: dict) -> None:
    """``train_loop_per_worker`` of a ticket trial: every pruned round of the source re-trained as
    the baseline ticket on this job's task, one Tune iteration per round."""
    params = config["params"]
    w = setup_worker({k: v for k, v in params.items() if k not in TICKET_KEYS}, config.get("cpus", 1))
    spec, sources = ticket_plan(params, config["root"])
    other = prime_for(params, w.job, w.model_factory, print)

    def report(r: TicketRound) -> None:
        metrics = {**_common_metrics(r), "source_mask_sha256": r.source_mask_sha256, "baseline": r.baseline,
                   "source_task": r.source_task, "ticket": r.ticket,
                   "steps_trained": 0 if r.replayed else r.steps_trained, "nodes": w.nodes, **_timings(r)}
        if w.rank == 0 and not r.replayed:
            _log_round(r)
        ray.train.report(metrics)

    run_ticket_chain(
        spec, sources, w.model_factory, w.trainer, config["root"], report, other, writer=w.rank == 0, agree=w.agree
    )


def train_chain(config: dict) -> None:
    """``train_loop_per_worker``: config = {"params": <flat chain params>, "root": <chain store>,
    "share_rewinds": <rewind steps of the chains sharing this one's dense run>}."""
    w = setup_worker(config["params"], config.get("cpus", 1))
    rank, world, job = w.rank, w.world, w.job
    finetune = None
    if job.chain.finetune_adversarial.active:
        finetune = Trainer(
            w.trainer.task,
            dataclasses.replace(job.chain.train, adversarial=job.chain.finetune_adversarial),
            w.trainer.device,
            rank=rank,
            world_size=world,
        ).train

    # After a worker-group restart, Train hands back the last reported checkpoint: rounds up to
    # it already reached Tune, so replaying them from the chain store must not report them again.
    # The trial driver passes what Tune already has from before a driver restart.
    last = ray.train.get_checkpoint()
    reported = config.get("reported_round", -1)
    if last is not None:
        with last.as_directory() as d:
            reported = max(reported, json.loads(Path(d, "round.json").read_text())["round"])
    dense_metric: list[float] = []
    steps = job.chain.train.steps
    progress = RoundProgress(ChainStore(config["root"], job.chain, writer=False).dir / PROGRESS_FILE
                             if rank == 0 else None, [0.0, *job.chain.sparsities()], steps,
                             job.chain.round_start_step)
    w.trainer.on_step = progress.step

    def report(r: RoundResult) -> None:
        progress.finished(r.round)
        if r.round == 0:
            dense_metric.append(r.metrics["metric"])
        if r.replayed and r.round <= reported:
            return
        metrics = {
            **round_metrics(r),
            "dense_ratio": dense_ratio(r.metrics["metric"], dense_metric[0]),
            "nodes": w.nodes,
            **_timings(r),
        }
        if world > 1:
            check_same_mask_everywhere(r.mask_sha256, r.round)
        if rank == 0:
            _log_round(r)
            with tempfile.TemporaryDirectory() as d:
                Path(d, "round.json").write_text(json.dumps(r.record(), sort_keys=True))
                Path(d, "mask.safetensors").write_bytes(Path(r.mask_path).read_bytes())
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
            _await_gate(r)
        else:
            ray.train.report(metrics)

    run_chain(
        job.chain,
        w.model_factory,
        _with_progress(_fault_injected(w.trainer.train), progress, steps),
        w.trainer.evaluate,
        config["root"],
        report,
        finetune,
        writer=rank == 0,
        share_rewinds=config.get("share_rewinds", ()),
        agree=w.agree,
        data_sha256=w.data_sha256,
        calibrate_fn=w.trainer.calibrate,
    )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
