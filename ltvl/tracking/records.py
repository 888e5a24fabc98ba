"""What a chain, round, dense run or ticket looks like in MLflow: pure functions from a resolved
job and a reported result to tracking ops (see :mod:`ltvl.tracking.mlflow_lineage`). Everything
comes from the resolved job, never from the raw config, so a tag says what actually ran.

Shaped for the UI's questions: run names and the ``ltvl.arm`` tag use the paper's vocabulary
(:mod:`ltvl.tracking.arms`); params are only the active ones, numbers rounded; chain runs carry
their best ticket so far (sort by ``best_sparsity_p99``) and a sparsity-indexed metric
(``metric_vs_sparsity_bp``: step = sparsity in basis points, 7500 = 75%), so the metric page
plots metric against sparsity with no setup; every run has a description."""

from __future__ import annotations

import math
from typing import Any

from ltvl.core.baselines import BASELINES
from ltvl.core.identity import FORMAT
from ltvl.params.resolve import ChainJob, TicketJob
from ltvl.params.schema import DEFAULTS, DENSE, INFO, TICKET_KEYS, ChainParams
from ltvl.pruning.methods import get_method
from ltvl.tracking.arms import SPARSE_CONTROL, arm_label, short_sparsity

LINEAGE_METRICS = ("metric", "sparsity", "train_loss", "wall_s", "dense_ratio", "steps_trained", "finetune_metric",
                   "majority_metric", "train_flops")
BY_SPARSITY = "metric_vs_sparsity_bp"  # step = sparsity in basis points
# per-round metrics a chain run keeps as well (step = round); the rest live on its round runs, so
# the chain's chart view holds only what compares chains
CHAIN_METRICS = ("metric", "sparsity", "finetune_metric")
LIVE_PREFIX = "live/"  # a running chain's train loss and steps/s: a chart section of their own
NOTE = "mlflow.note.content"  # MLflow's description field
CONTROL_MARGIN = 0.01  # a dense run must beat the majority-answer control by this much (absolute metric)
DENSE_FLAG = "ltvl.dense_flag"  # on a dense run that did not: its chains are no evidence of a ticket
MAJORITY = "majority answer"


def beats(dense: float, control: float | None, n: float | None = None, margin: float = CONTROL_MARGIN) -> bool:
    """Whether a dense run beats one control by a margin (SPEC §7): ``margin``, or two standard
    errors of the control's accuracy on ``n`` evaluation examples where that is larger (an
    untrained model can land a little above the majority answer by chance). Unknown (no such
    control for the task, or no dense metric) counts as beaten: nothing to flag it by."""
    if control is None or control != control or dense != dense:
        return True
    if n and n == n:  # a count; NaN where the record has none
        margin = max(margin, 2 * math.sqrt(max(control * (1 - control), 0.0) / n))
    return dense >= control + margin


def dense_flag(dense: float, n: float | None = None, *, majority: float | None = None,
               sparse100: float | None = None, margin: float = CONTROL_MARGIN) -> str | None:
    """Why a dense run is no evidence of anything (it does not beat a control), or None. Both
    controls are computed from the same data: the majority answer, and the 100%-sparse chain
    (every prunable weight pruned, the rest trained), which shows what embeddings and head alone
    learn."""
    for name, value in ((MAJORITY, majority), (SPARSE_CONTROL, sparse100)):
        if not beats(dense, value, n, margin):
            return f"no better than the {name} ({float(value):.4f})"
    return None


def dense_learned(dense: float, majority: float | None, n: float | None = None,
                  margin: float = CONTROL_MARGIN, sparse100: float | None = None) -> bool:
    """Whether a dense run beats every control it has (:func:`dense_flag` is None)."""
    return dense_flag(dense, n, majority=majority, sparse100=sparse100, margin=margin) is None


Job = ChainJob | TicketJob


def best_key(p: float) -> str:
    return f"best_sparsity_p{p * 100:g}"


def chain_of(job: Job) -> ChainJob:
    """The chain a job trains: a ticket's target chain, or the job itself."""
    return job.target if isinstance(job, TicketJob) else job


def init_label(job: Job) -> str:
    """The legacy ``ltvl.init`` tag (θ0 / θi for IMP, RP, high_magnitude; a ticket's baseline),
    kept because older stores are read by it; :func:`arm` is what people read."""
    if isinstance(job, TicketJob):
        return BASELINES[job.baseline].init_label
    label = get_method(job.params.method).init_label
    return "theta_i" if label == "theta0" and job.rewind_step else label


SCHEDULE_KEYS = ("schedule", "rate", "target_sparsity", "rounds", "scope")


def is_control(job: Job) -> bool:
    """The 100%-sparse control chain (method ``all``)."""
    return isinstance(job, ChainJob) and job.params.method == "all"


def epsilon(p: ChainParams) -> float:
    return float(p.adv_epsilon) if p.adv_use != "off" else 0.0


def arm(job: Job) -> str:
    """IMP, IMP θi@20, RP, θ''0, transfer from vqa, AT-IMP ε=0.01, …"""
    p = chain_of(job).params
    return arm_label(ticket=isinstance(job, TicketJob), init=init_label(job), rewind_step=chain_of(job).rewind_step,
                     source_task=job.source_task if isinstance(job, TicketJob) else p.task, adv_use=p.adv_use,
                     epsilon=epsilon(p), adaptive=chain_of(job).chain.schedule.adaptive,
                     one_shot=chain_of(job).chain.schedule.one_shot, finetune=chain_of(job).chain.finetunes,
                     gradual=chain_of(job).chain.schedule.gradual)


def rounded(v: Any, digits: int = 4) -> Any:
    """Floats to ``digits`` significant digits, as the UI shows them; everything else as is."""
    if isinstance(v, bool) or not isinstance(v, float) or not math.isfinite(v) or v == 0:
        return v
    return float(f"{v:.{digits}g}")


def active_params(job: Job) -> dict[str, Any]:
    """The params that mean something for this job: no nulls, no AT settings when AT is off, no
    ticket keys on a chain, the rewind step actually used; numbers stay numbers, rounded."""
    p = job.params
    out = {}
    for k, v in p.to_dict().items():
        if v is None or k == "rewind_fraction":
            continue
        if k.startswith("adv_") and k != "adv_use" and p.adv_use == "off":
            continue
        if k in TICKET_KEYS and isinstance(job, ChainJob):
            continue
        if k in SCHEDULE_KEYS and is_control(job):  # one round at 100% whatever the schedule says
            continue
        if k in ("jump", "keep") and p.schedule != "adaptive":  # inert elsewhere: never shown as if they acted
            continue
        if k == "rate" and p.schedule in ("one_shot", "gradual"):  # one round to the target: no rate acts
            continue
        if k == "calibration_examples" and not get_method(p.method).needs_inputs:  # read by Wanda only
            continue
        if k == "retrain" and v == "rewind":  # the default every store before it had: shown only when it acts
            continue
        if k == "source" and isinstance(v, dict):  # the source chain: its arm is what a reader needs
            v = {kk: vv for kk, vv in v.items() if vv is not None}
        out[k] = rounded(v, 6) if isinstance(v, float) else v
    out["rewind_step"] = chain_of(job).rewind_step  # the step actually rewound to (rewind_fraction resolved)
    return out


def lineage_tags(job: Job) -> dict[str, Any]:
    chain = chain_of(job)
    p = chain.params
    return {"ltvl.arm": arm(job), "ltvl.task": p.task, "ltvl.rewind_step": chain.rewind_step, "ltvl.rate": p.rate,
            "ltvl.epsilon": epsilon(p), "ltvl.init": init_label(job), "ltvl.method": p.method,
            "ltvl.preset": p.preset, "ltvl.seed": p.seed, "ltvl.adv_use": p.adv_use, "ltvl.format": FORMAT,
            **({"ltvl.schedule": p.schedule} if p.schedule in ("one_shot", "gradual") else {}),
            **({"ltvl.retrain": p.retrain} if p.retrain != "rewind" else {})}


def dense_ops(dense_sha: str, job: ChainJob, metrics: dict, load: str = "") -> list[dict]:
    """The dense run's records; ``load`` is what loading θ0's checkpoint did (counts, dropped heads)."""
    p = job.params
    recipe = {k: rounded(getattr(p, k), 6) for k, info in INFO.items()
              if info.role == DENSE and getattr(p, k) is not None and not (k.startswith("adv_") and k != "adv_use"
                                                                          and p.adv_use == "off")}
    key = f"dense:{dense_sha}"
    why = dense_flag(float(metrics["metric"]), metrics.get("n"), majority=metrics.get("majority_metric")) \
        if "metric" in metrics else None
    flag = {DENSE_FLAG: why} if why else {}
    by_content = {f"ltvl.{k}_sha256": v.removeprefix("sha256:") for k, v in job.chain.context
                  if k in ("checkpoint", "tokenizer")}
    if load:
        by_content["ltvl.load"] = load[:5000]  # MLflow's tag limit
    note = (f"The dense run every chain of this recipe starts from: {p.preset} on {p.task}, {p.steps} steps at lr "
            f"{p.lr:g}, seed {p.seed}. Its `metric` is the dense baseline that 'keeps p of dense' compares with.")
    return [{"op": "run", "key": key, "name": f"dense · {p.task} · seed {p.seed} · {dense_sha[:8]}", "params": recipe,
             "tags": {"ltvl.kind": "dense", "ltvl.arm": "dense", "ltvl.dense": dense_sha, "ltvl.task": p.task,
                      "ltvl.seed": p.seed, "ltvl.init": "theta0", "ltvl.epsilon": epsilon(p), "ltvl.format": FORMAT,
                      NOTE: note, **by_content}},
            {"op": "metrics", "key": key, "step": 0,
             "metrics": {k: rounded(float(v), 6) for k, v in metrics.items()
                         if k in ("metric", "majority_metric", "n")}},
            *([{"op": "tags", "key": key, "tags": flag}] if flag else []),
            {"op": "end", "key": key, "status": "FINISHED"}]  # a dense run is whole once its metric is in


def chain_name(job: Job) -> str:
    """``IMP θi@20 · vqa · rate 0.5 · seed 0``: the arm first, in the report's words."""
    chain = chain_of(job)
    p = chain.params
    one_shot = chain.chain.schedule.single_round
    parts = [arm(job), p.task] + ([] if is_control(job) else
                                  [f"to {short_sparsity(p.target_sparsity)}" if one_shot else f"rate {p.rate:g}"])
    if p.adv_use in ("finetune", "both") and epsilon(p):
        parts.append(f"AT fine-tune ε={epsilon(p):g}")
    elif is_control(job) and epsilon(p):  # the control of an adversarially trained dense run
        parts.append(f"AT ε={epsilon(p):g}")
    if p.lr != DEFAULTS["lr"]:  # searches vary it
        parts.append(f"lr {p.lr:.3g}")
    return " · ".join(parts + [f"seed {p.seed}"])


def _chain_note(job: Job) -> str:
    chain = chain_of(job)
    p = chain.params
    levels = " → ".join(short_sparsity(s) for s in chain.chain.sparsities())
    if isinstance(job, TicketJob):
        return (f"{arm(job)} tickets on {p.task}: every pruned mask of the {job.source_task} source chain, "
                f"re-trained as the {job.baseline.value} baseline. One nested run per round, with its mask.")
    rewind = f"θi (step {chain.rewind_step})" if chain.rewind_step else "θ0"
    if is_control(job):
        return (f"{SPARSE_CONTROL} on {p.task}: every prunable weight pruned, the rest (embeddings, norms, head) "
                f"re-trained {p.steps - chain.rewind_step} steps from {rewind}. A dense run that does not beat its "
                f"metric by a margin is tagged {DENSE_FLAG}, and the report leaves its chains out.")
    if chain.chain.schedule.adaptive:
        sched = chain.chain.schedule
        return (f"{arm(job)} chain on {p.task}, adaptive schedule: searches the levels {levels} ({p.method}, "
                f"{p.scope}) for the sparsest ticket keeping {sched.keep:g} of dense, in jumps of {sched.jump} "
                f"levels, then bisection"
                + (f", jumps capped at level {sched.start}" if sched.start else "")
                + f". Each round is one try (its tags ltvl.level, ltvl.parent_level, ltvl.kept), rewound to "
                f"{rewind}, re-trained {p.steps - chain.rewind_step} steps. best_sparsity_p* is the sparsest "
                f"try keeping that share of dense.")
    prune = (f"prune the trained dense model to {short_sparsity(p.target_sparsity)} in one step"
             if chain.chain.schedule.one_shot else
             f"ramp the sparsity from 0 to {short_sparsity(p.target_sparsity)} while one round trains (GMP)"
             if chain.chain.schedule.gradual else f"prune {p.rate:.0%} of the remaining weights per round")
    retrain = (f"fine-tune the weights it pruned {p.steps} steps (fresh optimizer, the whole LR schedule)"
               if chain.chain.finetunes else f"rewind to {rewind}, re-train {p.steps - chain.rewind_step} steps")
    return (f"{arm(job)} chain on {p.task}: {prune} ({p.method}, {p.scope}), {retrain}. Levels {levels}. "
            f"best_sparsity_p* is the sparsest round so far keeping that share of dense; metric_at_best its metric; "
            f"{BY_SPARSITY} plots metric against sparsity (step = basis points).")


def chain_ops(chain_key: str, job: Job, dense_sha: str | None, extra_tags: dict | None = None) -> list[dict]:
    tags = {"ltvl.kind": "ticket" if isinstance(job, TicketJob) else "chain", **lineage_tags(job), **(extra_tags or {}),
            NOTE: _chain_note(job)}
    if dense_sha:
        tags["ltvl.dense_run_id"] = f"@key:dense:{dense_sha}"
    return [{"op": "run", "key": chain_key, "name": chain_name(job), "params": active_params(job), "tags": tags}]


def chain_progress(history: list[tuple[int, float, float]], p: float, n: float | None = None) -> dict[str, float]:
    """The chain's best ticket after the rounds in ``history`` ((round, sparsity, metric), round 0
    dense): the sparsest pruned round keeping ``p`` of dense (0 and the dense metric if none yet),
    and the range that answer could take within noise on ``n`` evaluated examples
    (``<best>_low``/``<best>_high``, :func:`ltvl.core.verdict.plausible_answers`)."""
    from ltvl.core.verdict import Estimate, plausible_answers

    dense = next((m for r, _s, m in history if r == 0), float("nan"))
    keeps = [(s, m) for r, s, m in history if r > 0 and dense == dense and m >= p * dense]
    s, m = max(keeps) if keeps else (0.0, dense)
    low, high = plausible_answers([(s_, Estimate.of([m_], n)) for r, s_, m_ in history if r > 0],
                                  Estimate.of([dense], n), p) if dense == dense else (0.0, 0.0)
    return {best_key(p): rounded(s, 6), "metric_at_best": rounded(m, 6), "dense_metric": rounded(dense, 6),
            f"{best_key(p)}_low": rounded(low, 6), f"{best_key(p)}_high": rounded(high, 6)}


def verdict_tag(history: list[tuple[int, float, float]], r: int, p: float, n: float | None) -> dict[str, str]:
    """``ltvl.verdict`` of round ``r``: what its ticket is against dense and the p line, with noise."""
    from ltvl.core.verdict import Estimate, verdict

    dense = next((m for r_, _s, m in history if r_ == 0), None)
    this = next(((s, m) for r_, s, m in history if r_ == r), None)
    if r == 0 or dense is None or this is None:
        return {}
    return {"ltvl.verdict": verdict(this[0], Estimate.of([this[1]], n), Estimate.of([dense], n), p).label()}


def round_op(chain_key: str, job: Job, result: dict, dense_sha: str | None, mask_path: str | None,
             chain_metrics: dict | None = None) -> dict:
    r = int(result["round"])
    sparsity = float(result["sparsity"])
    tags = {"ltvl.kind": "round", "ltvl.chain_key": chain_key, "ltvl.round": r, **lineage_tags(job),
            "ltvl.mask_sha256": result["mask_sha256"],
            "ltvl.parent_sha256": result.get("parent_sha256") or result.get("source_mask_sha256") or ""}
    if dense_sha:
        tags["ltvl.dense_run_id"] = f"@key:dense:{dense_sha}"
        tags["ltvl.dense"] = dense_sha  # the report judges a round by its own dense run's controls
    if result.get("nodes"):  # the Ray nodes that trained this round
        tags["ltvl.nodes"] = result["nodes"]
    if result.get("level") is not None and r > 0:  # schedule: adaptive: the search's path, as lineage
        tags.update({"ltvl.level": int(result["level"]), "ltvl.parent_level": int(result["parent_level"]),
                     "ltvl.kept": "yes" if result["kept"] else "no"})
    if result.get("checks"):  # the invariants measured on this ticket (a worker sends them as the tag's text)
        from ltvl.core.invariants import label
        checks = result["checks"]
        tags["ltvl.checks"] = checks if isinstance(checks, str) else label(checks)
    if result.get("source_task"):
        tags["ltvl.source_task"] = result["source_task"]
        tags["ltvl.source_mask_sha256"] = result.get("source_mask_sha256", "")
    name = chain_name(job)
    tags[NOTE] = (f"Round {r} of {name}: the mask at {short_sparsity(sparsity)} sparsity (mask/, with "
                  f"mask/summary.json), trained and evaluated. Its parent mask is ltvl.parent_sha256."
                  if r else f"Round 0 of {name}: the dense model (no weights pruned).")
    if "ltvl.level" in tags:
        tags[NOTE] += (f" A try of the adaptive schedule: level {tags['ltvl.level']}, pruned from level "
                       f"{tags['ltvl.parent_level']}'s trained weights; it {'kept' if result['kept'] else 'fell below'}"
                       f" p of dense (ltvl.kept).")
    metrics = {k: int(result[k]) if k == "steps_trained" else rounded(float(result[k]), 6 if k in CHAIN_METRICS else 4)
               for k in LINEAGE_METRICS if k in result and result[k] is not None}  # what the report reads: 6 digits
    op = {"op": "round", "key": f"round:{chain_key}:{r}", "chain_key": chain_key, "round": r,
          "name": f"{name}/r{r} ({short_sparsity(sparsity)})", "tags": tags, "mask_path": mask_path,
          "metrics": metrics, "chain_metrics": {**(chain_metrics or {}),
                                                BY_SPARSITY: metrics.get("metric", float("nan"))},
          "sparsity_bp": int(round(sparsity * 10000))}
    if result.get("started_at") and result.get("ended_at"):  # the worker's own timings, not the driver's
        op["started_at"], op["ended_at"] = float(result["started_at"]), float(result["ended_at"])
    return op
