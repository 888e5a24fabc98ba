"""One IMP chain (SPEC §2, Algorithm 1) as a plain, resumable loop.

Round 0 is the dense model trained from θ0 to step t, capturing θi on the way; chains that
differ only in rewind step, rate or method share that run (:mod:`ltvl.core.dense`).
Every later round r trains ``m_r ⊙ θi`` from step i to t (optimizer and LR schedule
restored as at step i), evaluates, and prunes to the schedule's next sparsity.

State lives in ``root/<spec hash16>/`` (open_lth-style, :mod:`ltvl.core.store`): ``spec.json``, a
reference to θi by sha256 (``theta_i.json``; the weights live once, in the dense store),
content-addressed masks, and one JSON record per finished round, each written atomically
*after* the files it references. Files are found by hash inside the root, never by a recorded
absolute path, so a root can be moved or mounted elsewhere.
Re-running the same spec replays finished rounds and recomputes only the rest;
because every step is a pure function of (seed, step), the result is bit-identical.
This module imports neither Ray nor MLflow: they observe via ``reporter``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ltvl.core.adaptive import AdaptiveSearch
from ltvl.core.chain import (  # noqa: F401 (ChainSpec, ChainStore, RoundResult: the chain API's names)
    ChainResult,
    ChainSpec,
    ChainStore,
    EvalFn,
    Reporter,
    RoundResult,
    TrainFn,
)
from ltvl.core.dense import DenseOutcome, DenseSpec, DenseStore, ensure_dense
from ltvl.core.lead_masks import LeadMasks
from ltvl.core.store import DAMAGED_FIX
from ltvl.core.train import Trainer, derive_seed
from ltvl.pruning.enforce import MaskEnforcer
from ltvl.pruning.mask import Mask
from ltvl.pruning.maskfile import load_mask
from ltvl.pruning.prune import prune_to_sparsity
from ltvl.util.errors import LtvlError, require


def run_chain(spec: ChainSpec, model_factory: Callable[[], nn.Module], train_fn: TrainFn, eval_fn: EvalFn,
              root: str | Path, reporter: Reporter | None = None, finetune_fn: TrainFn | None = None,
              writer: bool = True, share_rewinds: Iterable[int] = (),
              agree: Callable[[Any], Any] = lambda v: v, data_sha256: str = "") -> ChainResult:
    """Run (or resume) one IMP chain. ``model_factory()`` must return θ0 deterministically.

    Round 0 comes from the shared dense run (:mod:`ltvl.core.dense`), trained now only if no sibling
    chain has trained it yet; ``share_rewinds`` lists the siblings' rewind steps so that one
    training captures θi for all of them. ``finetune_fn`` (needed when
    ``spec.finetune_adversarial`` is enabled) trains a copy of each round's ticket adversarially
    from θi; its evaluation becomes ``finetune_metrics``. ``writer=False`` (DDP ranks other than
    0) computes everything but writes nothing; ``agree`` gives every rank rank 0's view of shared
    files, so ranks never diverge on what to train. ``data_sha256``, the dataset's content hash,
    is recorded with the dense run; a chain refuses to resume on a dense run trained on other data.
    """
    spec.validate()
    if spec.finetune_adversarial.active and finetune_fn is None:
        raise LtvlError("finetune_adversarial is enabled but no finetune_fn was given", where="run_chain",
                        fix="use run_chain_with_trainer, which builds it")
    sparsities = [0.0] + spec.sparsities()
    store = ChainStore(root, spec, writer)
    store.open()
    dense = DenseStore(root, DenseSpec.of(spec), writer)
    if (known := dense.record()) is not None:  # a chain's rounds were trained on its dense run's data
        known.check_data(data_sha256, str(dense.dir))
    chain_sha = store.sha256
    result = ChainResult(spec, store.dir)
    report = reporter or (lambda _r: None)

    done = agree(store.finished_rounds())
    for i, rec in enumerate(done):
        res = RoundResult.from_record(rec, store.round_path(i))
        if res.round != i:
            raise LtvlError(f"the record of round {i} says it is round {res.round}", where=str(store.round_path(i)),
                            fix=DAMAGED_FIX)
        res.mask_path = str(store.find_mask(res.mask_sha256, dense))
        load_mask(res.mask_path)  # verify: a finished round's mask must be intact
        result.rounds.append(res)
        report(res)
    search = AdaptiveSearch.of(spec.schedule, done) if spec.schedule.adaptive else None
    if search is None and len(done) == len(sparsities):
        return result
    if search is not None and len(done) > 1 and done[-1]["next_mask_sha256"] is None:
        return result  # the search has settled its answer
    lead = LeadMasks(root, spec) if spec.schedule.masks_of_seed is not None else None  # another seed's masks

    def prune_seed(r: int) -> int:
        return derive_seed(spec.train.seed, "prune", r)

    got: DenseOutcome | None = None
    if done:
        if agree(not dense.has_theta(spec.rewind_step)):  # deleted (e.g. after a hash mismatch): replay the dense
            ensure_dense(dense, {spec.rewind_step}, model_factory, train_fn, eval_fn, agree,  # run, bit-identically
                         data_sha256)
        theta_i = store.get_theta_i(dense)
        mask = load_mask(store.find_mask(done[-1]["next_mask_sha256"], dense))
    else:  # round 0: the shared dense run
        t0 = time.perf_counter()
        got = ensure_dense(dense, {spec.rewind_step, *share_rewinds}, model_factory, train_fn, eval_fn, agree,
                           data_sha256)
        theta_i = got.theta(spec.rewind_step)
        store.put_theta_ref(dense, spec.rewind_step)
        mask = Mask.dense_like(got.final_weights(), metadata={"round": 0, "dense": dense.sha256})
        mask_path = store.put_mask(mask)
        if lead is not None:
            next_mask = lead.mask_at(search.first())
            store.put_mask(next_mask)  # before the record names it
        else:
            next_mask = shared_first_mask(spec, got, mask)[0] if len(sparsities) > 1 else None
        res = RoundResult(chain_sha256=chain_sha, round=0, sparsity=0.0, mask_sha256=mask.sha256, parent_sha256=None,
                          metrics=got.record.metrics, train_loss=got.record.train_loss,
                          wall_s=time.perf_counter() - t0, next_mask_sha256=next_mask.sha256 if next_mask else None,
                          mask_path=str(mask_path), steps_trained=got.steps_trained, dense_sha256=dense.sha256,
                          **({"level": 0, "next_level": search.first()} if search else {}))
        store.put_round(res)
        result.rounds.append(res)
        report(res)
        mask = next_mask
    dense_metric = result.rounds[0].metrics["metric"]
    level = result.rounds[-1].next_level  # adaptive: the level this round tries
    kept_weights: dict[int, dict[str, torch.Tensor]] = {}  # adaptive: kept tries' weights computed here, by round

    def weights_of_round(r: int) -> tuple[Mask, Mapping[str, torch.Tensor]]:
        """Adaptive: the mask and trained weights of round ``r`` (0 = the dense run), to prune from again."""
        rec = result.rounds[r]
        rmask = load_mask(rec.mask_path)
        if r in kept_weights:
            return rmask, kept_weights[r]
        if r == 0:
            return rmask, (got.final_weights() if got is not None else dense.final_weights(dense.record()))
        return rmask, store.get_weights(rec.weights_sha256, rmask.names)

    r = max(len(done), 1)
    while mask is not None:
        t0 = time.perf_counter()
        model = model_factory()
        enforcer = MaskEnforcer(model, mask)
        out = train_fn(model, enforcer=enforcer, start=theta_i, capture_at=[])
        metrics = eval_fn(model)
        mask_path = store.put_mask(mask)
        params = dict(model.named_parameters())
        weights = {n: params[n].detach() for n in mask.names}
        next_mask, tried = None, {}
        if search is None and r + 1 < len(sparsities):
            next_mask = prune_to_sparsity(weights, mask, sparsities[r + 1], method=spec.method, scope=spec.scope,
                                          seed=prune_seed(r), metadata={"round": r + 1, "chain": chain_sha})
        elif search is not None:
            parent_level, kept = search.good, search.kept(metrics["metric"], dense_metric)
            if lead is not None:  # the lead's mask: its parent is on the lead's path
                parent_level = lead.source_level(level)
            search.add(level, kept, r)
            nxt = search.next()
            weights_sha = None
            if lead is None and kept and nxt is not None:  # a later failed try prunes from this level again
                kept_weights = {r: {n: w.clone() for n, w in weights.items()}}
                weights_sha = store.put_weights(weights)
            if nxt is not None and lead is not None:
                next_mask = lead.mask_at(nxt)
            elif nxt is not None:
                pmask, pweights = (mask, weights) if kept else weights_of_round(search.good_round)
                next_mask = prune_to_sparsity(pweights, pmask, sparsities[nxt], method=spec.method, scope=spec.scope,
                                              seed=prune_seed(nxt - 1), metadata={"round": r + 1, "chain": chain_sha,
                                                                                  "level": nxt,
                                                                                  "parent_level": search.good})
            tried = {"level": level, "parent_level": parent_level, "kept": kept, "next_level": nxt,
                     "weights_sha256": weights_sha}
            level = nxt
        if next_mask is not None:
            store.put_mask(next_mask)
        enforcer.remove()
        steps = out.steps_run
        finetuned = None
        if spec.finetune_adversarial.active:
            ticket = model_factory()
            ticket_enforcer = MaskEnforcer(ticket, mask)
            steps += finetune_fn(ticket, enforcer=ticket_enforcer, start=theta_i, capture_at=[]).steps_run
            finetuned = eval_fn(ticket)
            ticket_enforcer.remove()
        res = RoundResult(chain_sha256=chain_sha, round=r, sparsity=mask.sparsity, mask_sha256=mask.sha256,
                          parent_sha256=mask.parent, metrics=metrics, train_loss=out.mean_loss,
                          wall_s=time.perf_counter() - t0,
                          next_mask_sha256=next_mask.sha256 if next_mask else None, mask_path=str(mask_path),
                          steps_trained=steps, finetune_metrics=finetuned,
                          fully_pruned=[n for n, t in mask.tensors.items() if not t.any()], **tried)
        store.put_round(res)
        result.rounds.append(res)
        report(res)
        mask = next_mask
        r += 1
    return result


def shared_first_mask(spec: ChainSpec, got: DenseOutcome, dense_mask: Mask) -> tuple[Mask, Path]:
    """The mask after round 0: shared by every chain with this dense run, first sparsity, method and
    scope (an adaptive chain's first try is its first jump's level)."""
    level = AdaptiveSearch.of(spec.schedule).first() if spec.schedule.adaptive else 1
    return got.store.first_mask(got.final_weights, dense_mask, spec.sparsities()[level - 1], spec.method,
                                spec.scope, derive_seed(spec.train.seed, "prune", level - 1))


def run_chain_with_trainer(spec: ChainSpec, model_factory: Callable[[], nn.Module], trainer: Trainer,
                           root: str | Path, reporter: Reporter | None = None,
                           share_rewinds: Iterable[int] = (), data_sha256: str = "") -> ChainResult:
    """Convenience: the chain driven by an :class:`ltvl.core.train.Trainer` (train + evaluate)."""
    require(trainer.cfg == spec.train, "the trainer's TrainConfig differs from the chain spec's",
            where="trainer", fix="build the Trainer from spec.train")
    finetune = None
    if spec.finetune_adversarial.active:
        finetune = Trainer(trainer.task, dataclasses.replace(spec.train, adversarial=spec.finetune_adversarial),
                           trainer.device).train
    return run_chain(spec, model_factory, trainer.train, trainer.evaluate, root, reporter, finetune,
                     share_rewinds=share_rewinds, data_sha256=data_sha256)
