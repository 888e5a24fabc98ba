"""A sweep's plan, built once before anything runs: every chain and ticket job resolved (so bad
input fails here), the dense runs the chains share, and what the sweep costs in training steps
per stage. ``ltvl sweep run --dry-run`` prints it; the Ray stages run its points."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ltvl.core.cost import gpu_hours, gpu_tflops, human_flops
from ltvl.core.dense import DenseStore
from ltvl.params.resolve import ChainJob, TicketJob, resolve
from ltvl.plan.config import SweepConfig
from ltvl.plan.controls import control_chains
from ltvl.plan.points import chain_points, fixed_space, ticket_points


@dataclass(frozen=True)
class PlannedJob:
    """One trial of the chains or tickets stage, with its training cost beyond the dense run."""

    stage: str  # "chains" | "tickets"
    point: dict
    job: ChainJob | TicketJob
    label: str  # the arm's name, as MLflow and the report show it
    rounds: int  # pruned rounds (tickets: masks re-trained); an adaptive chain's is an upper bound
    steps: int  # training steps: rounds x steps per round
    upper_bound: bool = False

    @property
    def short_hash(self) -> str:
        return self.job.chain.short_hash if isinstance(self.job, ChainJob) else self.job.target.chain.short_hash

    @property
    def short_hash_dense(self) -> str:
        return (self.job if isinstance(self.job, ChainJob) else self.job.target).dense.short_hash


@dataclass(frozen=True)
class DenseRun:
    """One dense training that several chains share (the shared dense prefix)."""

    short_hash: str
    steps: int
    chains: tuple[str, ...]  # the labels of the chains grown from it
    flops_per_step: float = 0.0  # counted on its first step when the store holds it, else the analytic estimate
    estimate: str = ""  # what the estimate counted (empty: counted on the stored run, or no estimate)


@dataclass(frozen=True)
class Plan:
    kind: str
    name: str
    dense: tuple[DenseRun, ...]
    chains: tuple[PlannedJob, ...]
    tickets: tuple[PlannedJob, ...]
    samples: int = 1  # an Optuna search runs every grid point this many times

    def stage_steps(self) -> dict[str, int]:
        """Training steps per stage (a search's samples included)."""
        return {"dense": self.samples * sum(d.steps for d in self.dense),
                "chains": self.samples * sum(j.steps for j in self.chains),
                "tickets": self.samples * sum(j.steps for j in self.tickets)}

    @property
    def total_steps(self) -> int:
        return sum(self.stage_steps().values())

    @property
    def bounded(self) -> bool:
        """Some chain's cost is an upper bound (an adaptive search may settle early)."""
        return any(j.upper_bound for j in self.chains)

    def flops(self) -> float | None:
        """The sweep's FLOPs, when every dense run's step is known: counted on a stored run, else estimated
        (ltvl.vl.flops); every chain of a dense run trains its model on its batches, so a step costs the
        same FLOPs."""
        per = {d.short_hash: d.flops_per_step for d in self.dense}
        if not per or not all(per.values()):
            return None
        total = sum(d.steps * d.flops_per_step for d in self.dense)
        for j in (*self.chains, *self.tickets):
            total += j.steps * per.get(j.short_hash_dense, 0.0)
        return self.samples * total

    def describe(self) -> list[str]:
        """The plan as lines of text: stages, each trial with its cost, and the totals."""
        le = "≤ " if self.bounded else ""
        steps = self.stage_steps()
        lines = [f"sweep {self.name!r} ({self.kind}): {len(self.dense)} dense run(s), {len(self.chains)} chain(s), "
                 f"{len(self.tickets)} ticket job(s)"
                 + (f", each grid point searched {self.samples} times (Optuna)" if self.samples > 1 else "")]
        lines.append(f"dense runs: {steps['dense']:,} training steps (one shared by several chains trains in the "
                     "dense stage, one of a single chain in that chain's trial)")
        lines += [f"  dense {d.short_hash}  {d.steps:,} steps, for {len(d.chains)} chain(s)" for d in self.dense]
        lines.append(f"stage chains: {le if any(j.upper_bound for j in self.chains) else ''}{steps['chains']:,} "
                     "training steps")
        lines += [f"  chain {j.short_hash}  {j.label}  {'≤ ' if j.upper_bound else ''}{j.rounds} round(s), "
                  f"{j.steps:,} steps" for j in self.chains]
        if self.tickets:
            lines.append(f"stage tickets: {steps['tickets']:,} training steps")
            lines += [f"  ticket on chain {j.short_hash}  {j.label}  {j.rounds} mask(s), {j.steps:,} steps"
                      for j in self.tickets]
        lines.append(f"in all: {le}{self.total_steps:,} training steps; work already in the stores is replayed, "
                     "not trained again")
        lines.append(self.cost_line())
        return lines

    def cost_line(self) -> str:
        flops, le = self.flops(), "≤ " if self.bounded else ""
        if not flops:
            return ("cost: FLOPs are counted on each dense run's first step (none stored yet, and no estimate: "
                    "a dataset not on this machine yet, adversarial training, or pre-training's varying passes)")
        estimated = [d for d in self.dense if d.estimate]
        basis = ("a step counted on the stored dense run" if not estimated else
                 "; ".join(f"dense {d.short_hash}: {human_flops(d.flops_per_step)}/step, {d.estimate}"
                           for d in estimated))
        return (f"cost: {le}{'≈ ' if estimated else ''}{human_flops(flops)}, {le}{gpu_hours(flops):.3g} GPU-hours at "
                f"{gpu_tflops():g} TFLOP/s sustained (LTVL_GPU_TFLOPS), from {basis}")


def plan_chain(point: dict) -> PlannedJob:
    from ltvl.tracking.records import chain_name

    job = resolve(point)
    if not isinstance(job, ChainJob):
        return plan_ticket(point)
    spec = job.chain
    rounds = len(spec.sparsities())
    per_round = spec.steps_per_round  # m ⊙ θi from step i to t, or a fine-tune's whole t
    return PlannedJob("chains", point, job, chain_name(job), rounds, rounds * per_round, spec.schedule.adaptive)


def plan_ticket(point: dict) -> PlannedJob:
    from ltvl.tracking.records import chain_name

    job = resolve(point)
    assert isinstance(job, TicketJob)
    masks = len(job.masks) if job.source is None else len(job.source.chain.sparsities())
    return PlannedJob("tickets", point, job, chain_name(job), masks, masks * job.target.chain.train.steps)


def build_plan(cfg: SweepConfig, root: str | Path | None = None) -> Plan:
    """The plan of a validated config: the same points the stages run, each resolved once. ``root``
    (the chain stores') lets it read the FLOPs a stored dense run counted."""
    fixed = {k: v for k, v in fixed_space(cfg.params, cfg.grid).items() if k not in cfg.search.space}
    extra = list(cfg.chains)
    if cfg.controls and not cfg.search.space:  # as the driver adds them (ltvl.sweep.main.sweep_points)
        extra += control_chains(chain_points(fixed, extra))
    chains = tuple(plan_chain(p) for p in chain_points(fixed, extra))
    opts = cfg.options()
    tickets = tuple(plan_ticket(t) for t in ticket_points([j.point for j in chains], opts.baselines, opts.transfer_to))
    dense: dict[str, list[PlannedJob]] = {}
    for j in chains:
        if isinstance(j.job, ChainJob):
            dense.setdefault(j.job.dense.short_hash, []).append(j)
    world = cfg.resources.num_workers
    runs = tuple(DenseRun(h, js[0].job.chain.train.steps, tuple(j.label for j in js),
                          *_flops_per_step(root, js[0].job, world)) for h, js in dense.items())
    samples = cfg.search.num_samples if cfg.search.space else 1
    return Plan(cfg.kind, cfg.name, runs, chains, tickets, samples)


def _flops_per_step(root: str | Path | None, job: ChainJob, world_size: int) -> tuple[float, str]:
    """A stored dense run's counted FLOPs per step, else the analytic estimate and what it counted."""
    rec = DenseStore(root, job.dense, writer=False).record() if root is not None else None
    if rec is not None and rec.flops_per_step:
        return rec.flops_per_step, ""
    from ltvl.vl.flops import estimate_for

    est = estimate_for(job.vl, job.chain.train, world_size)
    return (est.flops, est.line()) if est is not None else (0.0, "")
