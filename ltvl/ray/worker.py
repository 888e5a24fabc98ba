"""The Ray Train worker: one IMP chain, all its rounds, in one worker group (DDP when >1 worker).

Launching a TorchTrainer costs ~20 s on a small machine, so the worker group lives for the
whole chain; each round is reported once (metrics + a checkpoint holding the round's mask
and record). Chain state lives in the chain store on storage every worker can read: a
restarted worker group (FailureConfig.max_failures) replays finished rounds from it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import ray.train
import ray.train.torch
import torch

from ltvl.chainjob import build_job, data_for, with_prunable
from ltvl.imp import RoundResult, run_chain
from ltvl.paths import resolve_dataset
from ltvl.train import Trainer
from ltvl.vl import build_vl


def round_metrics(r: RoundResult) -> dict:
    out = {"round": r.round, "sparsity": r.sparsity, "metric": r.metrics["metric"], "train_loss": r.train_loss,
           "wall_s": r.wall_s, "mask_sha256": r.mask_sha256, "parent_sha256": r.parent_sha256 or "",
           "chain": r.chain, "replayed": r.replayed}
    if r.finetune_metrics:
        out["finetune_metric"] = r.finetune_metrics["metric"]
    return out


def _fault_injected(train_fn):
    """Testing aid: LTVL_FAULT_AT_ROUND=R:FILE kills the worker process hard at the start of round R
    of a fresh chain, once (FILE marks that it happened, so the restarted group runs clean). Read
    from the environment so it never enters a chain's hash."""
    spec = os.environ.get("LTVL_FAULT_AT_ROUND")
    if not spec:
        return train_fn
    at, marker = spec.split(":", 1)
    calls = {"n": 0}

    def wrapped(*a, **kw):
        calls["n"] += 1
        if calls["n"] - 1 == int(at) and not Path(marker).exists():
            Path(marker).write_text("killed")
            os._exit(1)
        return train_fn(*a, **kw)
    return wrapped


def check_same_mask_everywhere(sha: str, round_: int) -> None:
    """DDP keeps replicas identical, so every rank must have pruned to the same mask: verify it."""
    shas: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(shas, sha)
    if len(set(shas)) != 1:
        raise RuntimeError(f"round {round_}: ranks disagree on the mask ({[s[:12] for s in shas]})")


def train_chain(config: dict) -> None:
    """``train_loop_per_worker``: config = {"params": <flat chain params>, "root": <chain store>}."""
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    params = config["params"]
    job = build_job(params, str(resolve_dataset(data_for(params))))
    setup = build_vl(job.vl)
    job = with_prunable(job, setup.prunable)
    device = ray.train.torch.get_device()
    trainer = Trainer(setup.data, job.chain.train, device, rank=rank, world_size=world)
    finetune = None
    if job.chain.finetune_adversarial.active:
        import dataclasses
        finetune = Trainer(setup.data, dataclasses.replace(job.chain.train, adversarial=job.chain.finetune_adversarial),
                           device, rank=rank, world_size=world).train

    # After a worker-group restart, Train hands back the last reported checkpoint: rounds up to
    # it already reached Tune, so replaying them from the chain store must not report them again.
    last = ray.train.get_checkpoint()
    reported = -1
    if last is not None:
        with last.as_directory() as d:
            reported = json.loads(Path(d, "round.json").read_text())["round"]

    def report(r: RoundResult) -> None:
        if r.replayed and r.round <= reported:
            return
        metrics = round_metrics(r)
        if world > 1:
            check_same_mask_everywhere(r.mask_sha256, r.round)
        if rank == 0:
            with tempfile.TemporaryDirectory() as d:
                Path(d, "round.json").write_text(json.dumps(r.record(), sort_keys=True))
                Path(d, "mask.safetensors").write_bytes(Path(r.mask_path).read_bytes())
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)
    run_chain(job.chain, setup.model_factory, _fault_injected(trainer.train), trainer.evaluate, config["root"],
              report, finetune, writer=rank == 0)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
