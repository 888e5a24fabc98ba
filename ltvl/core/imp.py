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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from torch import nn

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
from ltvl.core.invariants import ticket_checks
from ltvl.core.next_mask import Calibrate, dense_inputs, prune_seed, require_calibrate, strategy_for
from ltvl.core.store import DAMAGED_FIX
from ltvl.core.train import RewindPoint, Trainer, TrainOutcome
from ltvl.pruning.calibration import calibrated_inputs
from ltvl.pruning.enforce import MaskEnforcer
from ltvl.pruning.gradual import GradualEnforcer
from ltvl.pruning.mask import Mask
from ltvl.pruning.maskfile import load_mask
from ltvl.pruning.methods import get_method
from ltvl.pruning.prune import prune_to_sparsity
from ltvl.pruning.schedule import gradual_prunes
from ltvl.util.errors import LtvlError, require


def run_chain(spec: ChainSpec, model_factory: Callable[[], nn.Module], train_fn: TrainFn, eval_fn: EvalFn,
              root: str | Path, reporter: Reporter | None = None, finetune_fn: TrainFn | None = None,
              writer: bool = True, share_rewinds: Iterable[int] = (),
              agree: Callable[[Any], Any] = lambda v: v, data_sha256: str = "",
              calibrate_fn: Calibrate | None = None) -> ChainResult:
    """Run (or resume) one IMP chain. ``model_factory()`` must return θ0 deterministically.

    Round 0 comes from the shared dense run (:mod:`ltvl.core.dense`), trained now only if no sibling
    chain has trained it yet; ``share_rewinds`` lists the siblings' rewind steps so that one
    training captures θi for all of them. Each later round trains its mask from θi, and a strategy
    (:mod:`ltvl.core.next_mask`) chooses the next mask. ``finetune_fn`` (needed when
    ``spec.finetune_adversarial`` is enabled) trains a copy of each round's ticket adversarially
    from θi; its evaluation becomes ``finetune_metrics``. ``writer=False`` (DDP ranks other than
    0) computes everything but writes nothing; ``agree`` gives every rank rank 0's view of shared
    files, so ranks never diverge on what to train. ``data_sha256``, the dataset's content hash,
    is recorded with the dense run; a chain refuses to resume on a dense run trained on other data.
    ``calibrate_fn(model, examples)`` runs the task forward for a method that reads activations (Wanda).
    """
    spec.validate()
    if spec.finetune_adversarial.active and finetune_fn is None:
        raise LtvlError("finetune_adversarial is enabled but no finetune_fn was given", where="run_chain",
                        fix="use run_chain_with_trainer, which builds it")
    store = ChainStore(root, spec, writer)
    store.open()
    dense = DenseStore(root, DenseSpec.of(spec), writer)
    if (known := dense.record()) is not None:  # a chain's rounds were trained on its dense run's data
        known.check_data(data_sha256, str(dense.dir))
    result = ChainResult(spec, store.dir)
    report = reporter or (lambda _r: None)
    done = agree(store.finished_rounds())
    replay(done, store, dense, result, report)
    strategy = strategy_for(spec, done, store, root)
    if strategy.finished(done):
        return result
    got: DenseOutcome | None = None
    if done:
        if agree(not dense.has_theta(spec.start_step)):  # deleted (e.g. after a hash mismatch): replay the dense
            ensure_dense(dense, set(spec.dense_steps), model_factory, train_fn, eval_fn, agree,  # run, bit-identically
                         data_sha256)
        theta_i = store.get_theta_i(dense)
        mask = load_mask(store.find_mask(done[-1]["next_mask_sha256"], dense))
    else:
        got, theta_i, mask = round_zero(spec, store, dense, strategy, model_factory, train_fn, eval_fn, agree,
                                        share_rewinds, data_sha256, result, report, calibrate_fn)
    strategy.start(result.rounds, lambda: got.final_weights() if got is not None
                   else dense.final_weights(dense.record()))
    r = max(len(done), 1)
    start = round_start(spec, store, theta_i, done)
    start_sha = start_hash(spec, store, dense, done)
    while mask is not None:
        t0 = time.perf_counter()
        model, mask, out, enforcer = train_round(spec, store.sha256, r, mask, start, model_factory, train_fn,
                                                 calibrate_fn)
        metrics = eval_fn(model)
        checks = ticket_checks(model, mask, spec.sparsities()[(decided_level(strategy, r)) - 1], spec.scope,
                               out.optimizer_state_masked, start_sha)
        mask_path = store.put_mask(mask)
        params = dict(model.named_parameters())
        inputs = trained_inputs(spec, model, mask, calibrate_fn)
        next_mask, decided = strategy.next(r, mask, {n: params[n].detach() for n in mask.names}, metrics, inputs)
        if next_mask is not None:
            store.put_mask(next_mask)  # before the record names it
        enforcer.remove()
        round_start_point = start
        if spec.finetunes and next_mask is not None:  # the next round fine-tunes these weights, on resume too
            decided["weights_sha256"] = start_sha = store.put_state(model)
            start = RewindPoint.fine_tune_from({k: v.detach().to("cpu", copy=True)
                                                for k, v in model.state_dict().items()})
        steps, flops, finetuned = out.steps_run, out.flops, None
        if spec.finetune_adversarial.active:  # AT on the ticket: a step after the round, not part of its choice
            ft, finetuned = finetune_ticket(mask, round_start_point, model_factory, finetune_fn, eval_fn)
            steps, flops = steps + ft.steps_run, flops + ft.flops
        res = RoundResult(chain_sha256=store.sha256, round=r, sparsity=mask.sparsity, mask_sha256=mask.sha256,
                          parent_sha256=mask.parent, metrics=metrics, train_loss=out.mean_loss,
                          wall_s=time.perf_counter() - t0,
                          next_mask_sha256=next_mask.sha256 if next_mask else None, mask_path=str(mask_path),
                          steps_trained=steps, train_flops=flops, finetune_metrics=finetuned, checks=checks,
                          fully_pruned=[n for n, t in mask.tensors.items() if not t.any()], **decided)
        store.put_round(res)
        result.rounds.append(res)
        report(res)
        mask = next_mask
        r += 1
    return result


def replay(done: list[dict], store: ChainStore, dense: DenseStore, result: ChainResult, report: Reporter) -> None:
    """Finished rounds, read back from the store (each mask verified) and reported again."""
    for i, rec in enumerate(done):
        res = RoundResult.from_record(rec, store.round_path(i))
        if res.round != i:
            raise LtvlError(f"the record of round {i} says it is round {res.round}", where=str(store.round_path(i)),
                            fix=DAMAGED_FIX)
        res.mask_path = str(store.find_mask(res.mask_sha256, dense))
        load_mask(res.mask_path)  # verify: a finished round's mask must be intact
        result.rounds.append(res)
        report(res)


def round_zero(spec: ChainSpec, store: ChainStore, dense: DenseStore, strategy: Any,
               model_factory: Callable[[], nn.Module], train_fn: TrainFn, eval_fn: EvalFn,
               agree: Callable[[Any], Any], share_rewinds: Iterable[int], data_sha256: str, result: ChainResult,
               report: Reporter, calibrate_fn: Calibrate | None = None) -> tuple[DenseOutcome, Any, Mask | None]:
    """Round 0: the shared dense run (trained now only if no sibling has), θi, and the first mask."""
    t0 = time.perf_counter()
    got = ensure_dense(dense, {*spec.dense_steps, *share_rewinds}, model_factory, train_fn, eval_fn, agree, data_sha256)
    theta_i = got.theta(spec.start_step)
    store.put_theta_ref(dense, spec.start_step)
    mask = Mask.dense_like(got.final_weights(), metadata={"round": 0, "dense": dense.sha256})
    mask_path = store.put_mask(mask)
    next_mask, decided = strategy.first(got, mask, dense_inputs(spec, got, model_factory, calibrate_fn))
    res = RoundResult(chain_sha256=store.sha256, round=0, sparsity=0.0, mask_sha256=mask.sha256, parent_sha256=None,
                      metrics=got.record.metrics, train_loss=got.record.train_loss,
                      wall_s=time.perf_counter() - t0, next_mask_sha256=next_mask.sha256 if next_mask else None,
                      mask_path=str(mask_path), steps_trained=got.steps_trained,
                      train_flops=got.steps_trained * got.record.flops_per_step, dense_sha256=dense.sha256, **decided)
    store.put_round(res)
    result.rounds.append(res)
    report(res)
    return got, theta_i, next_mask


def train_round(spec: ChainSpec, chain_sha: str, r: int, mask: Mask, start: RewindPoint,
                model_factory: Callable[[], nn.Module], train_fn: TrainFn, calibrate_fn: Calibrate | None = None,
                ) -> tuple[nn.Module, Mask, TrainOutcome, MaskEnforcer]:
    """Round ``r``'s training: θ0's model under its mask (or ramp) from ``start`` (a method that corrects
    the kept weights corrects it first). Returns the trained model, the mask it ended under, the outcome
    and the enforcer (still attached). The one routine a chain and a re-trained export both run."""
    model = model_factory()
    enforcer = round_enforcer(spec, chain_sha, r, model, mask)
    out = train_fn(model, enforcer=enforcer, start=reconstructed_start(spec, start, mask, model_factory, calibrate_fn),
                   capture_at=[])
    if isinstance(enforcer, GradualEnforcer):  # the round's ticket is the mask its ramp ended at
        mask = enforcer.final_mask()
    return model, mask, out, enforcer


def retrain_round(spec: ChainSpec, root: str | Path, r: int, model_factory: Callable[[], nn.Module],
                  train_fn: TrainFn, eval_fn: EvalFn, calibrate_fn: Calibrate | None = None,
                  ) -> tuple[nn.Module, Mask, dict]:
    """The trained ticket of a finished round ``r`` of a stored chain, trained again from what the store
    holds (θi, or the state a fine-tune continues from) and held to its record: the same mask and the
    same metrics, else an error (on another machine or library the bits may differ, and then it is not
    the recorded ticket). Returns (model, mask, the round's record)."""
    store = ChainStore(root, spec, writer=False)
    dense = DenseStore(root, DenseSpec.of(spec), writer=False)
    done = store.finished_rounds()
    if not 1 <= r < len(done):
        raise LtvlError(f"chain {store.dir.name} has no finished pruned round {r} (finished: "
                        f"{', '.join(str(d['round']) for d in done[1:]) or 'none'})", where="--round",
                        fix="choose one of its finished pruned rounds")
    rec = done[r]
    entering = load_mask(store.find_mask(done[r - 1]["next_mask_sha256"], dense))
    start = round_start(spec, store, store.get_theta_i(dense), done[:r])
    model, mask, _out, enforcer = train_round(spec, store.sha256, r, entering, start, model_factory, train_fn,
                                              calibrate_fn)
    enforcer.remove()
    metrics = eval_fn(model)
    if mask.sha256 != rec["mask_sha256"] or metrics != rec["metrics"]:
        raise LtvlError(f"round {r} trained again scored {metrics.get('metric')} under mask {mask.sha256[:12]}…; its "
                        f"record says {rec['metrics'].get('metric')} under {rec['mask_sha256'][:12]}…: this machine "
                        "does not reproduce the recorded ticket", where=str(store.round_path(r)),
                        fix="export on the machine (same torch, same CPU/GPU kind) that ran the chain")
    return model, mask, rec


def round_enforcer(spec: ChainSpec, chain_sha: str, r: int, model: nn.Module, mask: Mask) -> MaskEnforcer:
    """The mask a round trains under: fixed, or (``schedule: gradual``) ramped to the target while it trains."""
    if not spec.schedule.gradual:
        return MaskEnforcer(model, mask)
    meta = {"round": r, "chain": chain_sha}

    def prune(weights, current: Mask, sparsity: float) -> Mask:
        return prune_to_sparsity(weights, current, sparsity, method=spec.method, scope=spec.scope,
                                 seed=prune_seed(spec, 0), metadata=meta)

    return GradualEnforcer(model, mask, gradual_prunes(spec.steps_per_round, spec.sparsities()[0]), prune)


def trained_inputs(spec: ChainSpec, model: nn.Module, mask: Mask, calibrate_fn: Calibrate | None):
    """A round's trained model calibrated on demand (when the next prune reads activations)."""
    if not spec.reads_inputs:
        return None
    calibrate = require_calibrate(spec, calibrate_fn)
    return lambda: calibrated_inputs(spec.method, model, mask.names, lambda m: calibrate(m, spec.calibration_examples))


def reconstructed_start(spec: ChainSpec, start: RewindPoint, mask: Mask, model_factory: Callable[[], nn.Module],
                        calibrate_fn: Calibrate | None) -> RewindPoint:
    """A fine-tuning round of a method that corrects the kept weights (SparseGPT) starts from the weights
    it pruned, so corrected: calibrated on those weights, the same statistics its mask was chosen by.
    A function of (start, mask, calibration data): a resumed chain recomputes the same start."""
    fix = get_method(spec.method).reconstruct
    if fix is None or not spec.finetunes:
        return start
    model = model_factory()
    model.load_state_dict(start.model)
    calibrate = require_calibrate(spec, calibrate_fn)
    inputs = calibrated_inputs(spec.method, model, mask.names, lambda m: calibrate(m, spec.calibration_examples))
    params = dict(model.named_parameters())
    corrected = fix({n: params[n].detach() for n in mask.names}, mask, inputs)
    return RewindPoint.fine_tune_from({**start.model, **corrected})


def start_hash(spec: ChainSpec, store: ChainStore, dense: DenseStore, done: list[dict]) -> str:
    """The sha256 of what the next pruned round starts from: θi's (or θT's) file, verified when
    loaded, or a fine-tuning chain's last stored state."""
    if spec.finetunes and len(done) > 1:
        return str(done[-1].get("weights_sha256"))
    return dense.theta_sha(spec.start_step) if dense.has_theta(spec.start_step) else ""


def decided_level(strategy: Any, r: int) -> int:
    """The schedule level round r trains (an adaptive try's own level; else r itself)."""
    return getattr(strategy, "level", None) or r


def round_start(spec: ChainSpec, store: ChainStore, theta_i: RewindPoint, done: list[dict]) -> RewindPoint:
    """Where the next pruned round starts: θi when rewinding; when fine-tuning, the weights that
    were pruned (θT after round 0, else the last round's stored state) with a fresh optimizer."""
    if not spec.finetunes:
        return theta_i
    if len(done) <= 1:
        return RewindPoint.fine_tune_from(theta_i.model)
    sha = done[-1].get("weights_sha256")
    if not isinstance(sha, str):
        raise LtvlError(f"round {len(done) - 1} of a fine-tuning chain names no trained state to continue from",
                        where=str(store.round_path(len(done) - 1)), fix=DAMAGED_FIX)
    return RewindPoint.fine_tune_from(store.get_state(sha))


def finetune_ticket(mask: Mask, theta_i: Any, model_factory: Callable[[], nn.Module], finetune_fn: TrainFn,
                    eval_fn: EvalFn) -> tuple[TrainOutcome, dict]:
    """AT on a round's ticket (SPEC §4): a copy of ``m ⊙ θi`` (or of the round's fine-tuning start)
    trained adversarially, then evaluated."""
    ticket = model_factory()
    enforcer = MaskEnforcer(ticket, mask)
    out = finetune_fn(ticket, enforcer=enforcer, start=theta_i, capture_at=[])
    metrics = eval_fn(ticket)
    enforcer.remove()
    return out, metrics


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
                     share_rewinds=share_rewinds, data_sha256=data_sha256, calibrate_fn=trainer.calibrate)
