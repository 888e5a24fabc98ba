"""The end-of-sweep table, read from the chain stores (the source of truth), never from MLflow.

Each trial the sweep ran (or meant to run) becomes a row: its dense metric and the sparsest
round that still keeps p of it, its status (done / stopped early / FAILED / incomplete), and how
many of its rounds MLflow holds. MLflow can lag behind the stores (an outage, a killed driver);
the table says so per chain instead of showing old records as if they were the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ltvl.core.cost import cost_line, human_flops
from ltvl.ray.failures import TrialOutcome
from ltvl.tracking.arms import SPARSE_CONTROL
from ltvl.tracking.records import CONTROL_MARGIN, dense_flag

DONE, STOPPED, FAILED, INCOMPLETE = "done", "stopped early", "FAILED", "incomplete"


@dataclass
class ChainSummary:
    key: str  # its MLflow record key: chain:<sha> / ticket:<sha>
    name: str
    task: str
    arm: str  # IMP, RP, θ''0, … (:mod:`ltvl.tracking.arms`)
    status: str
    planned: int  # rounds the schedule (or the source chain) gives it
    rounds: list[tuple[int, float, float]] = field(default_factory=list)  # (round, sparsity, metric) on disk
    dense: float = float("nan")
    majority: float | None = None  # the majority-answer control on the same questions (round 0's record)
    eval_n: float | None = None  # how many questions both were scored on
    dense_sha: str = ""  # the dense run it shares with its siblings (and its 100%-sparse control)
    sparse100: float | None = None  # that dense run's 100%-sparse control, where the sweep ran one
    mlflow_rounds: int | None = None  # rounds MLflow holds (None: not asked, or did not answer)
    # what this run computed: rounds whose records it wrote (a replayed round costs nothing now); the
    # shared dense run counts once, in the round 0 of the chain that trained it
    steps_trained: int = 0  # optimizer steps
    wall_s: float = 0.0  # seconds they took where they ran
    train_flops: float = 0.0  # FLOPs they counted (ltvl.core.cost)
    stored_steps: int = 0  # every stored round's, whichever run computed it
    stored_flops: float = 0.0
    checked: int = 0  # rounds whose ticket invariants were measured (ltvl.core.invariants)
    breaches: list[str] = field(default_factory=list)  # "round r: …" for each round where one failed

    def best(self, p: float) -> tuple[float, float] | None:
        """(sparsity, metric) of the sparsest pruned round keeping ``p`` of dense (a control has none)."""
        if self.is_control:
            return None
        keeps = [(s, m) for r, s, m in self.rounds if r > 0 and self.dense == self.dense and m >= p * self.dense]
        return max(keeps) if keeps else None

    def dense_flag(self, margin: float = CONTROL_MARGIN) -> str | None:
        """Why the dense run is no evidence (it does not beat a control by ``margin``), or None."""
        return dense_flag(self.dense, self.eval_n, majority=self.majority, sparse100=self.sparse100, margin=margin)

    def dense_learned(self, margin: float = CONTROL_MARGIN) -> bool:
        """Whether the dense run beats both controls: if not, nothing its chains show is evidence
        of a ticket (SPEC §7)."""
        return self.dense_flag(margin) is None

    @property
    def is_control(self) -> bool:
        return self.arm == SPARSE_CONTROL

    @property
    def unfinished(self) -> bool:
        return self.status in (FAILED, INCOMPLETE)


def chain_summaries(outcomes: list[TrialOutcome], root: str | Path, *, early_stop: bool,
                    interrupted: bool, since: float | None = None) -> list[ChainSummary]:
    """One row per chain or ticket trial of the sweep, its rounds read from its store. ``since``: when
    this run started (a round whose record is older was replayed: it cost this run nothing)."""
    rows = []
    for t in outcomes:
        if t.stage == "dense" or not t.config:
            continue
        ticket = t.config.get("ticket") or _params(t.config).get("ticket")
        row = _ticket_row(t, root, since) if ticket else _chain_row(t, root, since)
        if t.failure is not None:
            row.status = FAILED
        elif len(row.rounds) >= row.planned:
            row.status = DONE
        else:  # an early stopper ends chains short; an interrupted sweep leaves them short
            row.status = STOPPED if early_stop and not interrupted else INCOMPLETE
        rows.append(row)
    with_controls(rows)
    return sorted(rows, key=lambda c: (c.task, c.arm, c.name))


def with_controls(rows: list[ChainSummary]) -> None:
    """Give every row its dense run's 100%-sparse control metric (the control chain's one pruned
    round), so a dense run is judged against both controls."""
    control = {c.dense_sha: c.rounds[-1][2] for c in rows if c.is_control and c.dense_sha and len(c.rounds) > 1}
    for c in rows:
        c.sparse100 = control.get(c.dense_sha)


def _params(config: dict) -> dict:
    from ltvl.ray.space import trial_params
    return trial_params(config)


def _chain_row(t: TrialOutcome, root: str | Path, since: float | None = None) -> ChainSummary:
    from ltvl.core.imp import ChainStore
    from ltvl.ray.space import trial_job
    from ltvl.tracking.records import arm, chain_name

    job = trial_job(t.config)
    store = ChainStore(root, job.chain, writer=False)
    records = store.finished_rounds()
    rounds = [_round(rec) for rec in records]
    dense = rounds[0][2] if rounds and rounds[0][0] == 0 else float("nan")
    first = records[0] if records and records[0]["round"] == 0 else {"metrics": {}}
    planned = 1 + len(job.chain.sparsities())  # adaptive: at most one try per level …
    if job.chain.schedule.adaptive and len(records) > 1 and records[-1].get("next_mask_sha256") is None:
        planned = len(records)  # … and done once its search has settled the answer
    return ChainSummary(f"chain:{store.sha256}", chain_name(job), job.params.task, arm(job), "",
                        planned, rounds, dense, first["metrics"].get("majority_metric"),
                        first["metrics"].get("n"), first.get("dense_sha256") or "",
                        **_cost(records, [store.round_path(rec["round"]) for rec in records], since),
                        **_checks(records))


def _ticket_row(t: TrialOutcome, root: str | Path, since: float | None = None) -> ChainSummary:
    from ltvl.core.store import read_record
    from ltvl.core.ticket_chain import TicketStore
    from ltvl.params.resolve import ticket_plan
    from ltvl.ray.space import trial_job
    from ltvl.tracking.records import arm, chain_name
    from ltvl.util.errors import LtvlError

    job = trial_job(t.config)
    row = ChainSummary("", chain_name(job), job.target.params.task, arm(job), "", 0)
    try:
        spec, sources = ticket_plan(_params(t.config), root)
    except LtvlError:  # its source chain has no pruned round: nothing to read
        return row
    store = TicketStore(root, spec, writer=False)
    row.key, row.planned = f"ticket:{store.sha256}", len(sources)
    paths = [store.round_path(s.round) for s in sources if store.round_path(s.round).exists()]
    records = [read_record(p) for p in paths]
    row.rounds = [_round(rec) for rec in records]
    for k, v in {**_cost(records, paths, since), **_checks(records)}.items():
        setattr(row, k, v)
    return row


def _cost(records: list[dict], paths: list[Path] | None = None, since: float | None = None) -> dict:
    """What a chain's rounds cost where they were computed: optimizer steps, wall seconds and FLOPs
    (the shared dense run counts once, in the round 0 of the chain that trained it), of the rounds
    this run wrote (record files from ``since`` on; all of them without ``since``), and of all."""
    def fresh(i: int) -> bool:
        return since is None or paths is None or paths[i].stat().st_mtime >= since

    now = [r for i, r in enumerate(records) if fresh(i)]
    return {"steps_trained": sum(int(r.get("steps_trained") or 0) for r in now),
            "wall_s": sum(float(r.get("wall_s") or 0.0) for r in now),
            "train_flops": sum(float(r.get("train_flops") or 0.0) for r in now),
            "stored_steps": sum(int(r.get("steps_trained") or 0) for r in records),
            "stored_flops": sum(float(r.get("train_flops") or 0.0) for r in records)}


def _checks(records: list[dict]) -> dict:
    """How many rounds carry measured invariants, and each round where one failed."""
    from ltvl.core.invariants import describe

    measured = [r for r in records if r.get("checks")]
    return {"checked": len(measured),
            "breaches": [f"round {r['round']}: {describe(r['checks'])}" for r in measured if not r["checks"].get("ok")]}


def invariant_lines(rows: list[ChainSummary]) -> list[str]:
    """One line when every measured ticket holds its invariants; a red line per breach otherwise."""
    checked = sum(c.checked for c in rows)
    if not checked:
        return []
    bad = [f"[bold red]⚠ BREACH {c.name}, {b}[/]" for c in rows for b in c.breaches]
    if bad:
        return bad
    return [f"Invariants hold on all {checked} tickets measured: pruned weights exactly zero after training, "
            "sparsity = nominal, optimizer moments zero where pruned (each round's record and MLflow's ltvl.checks)."]


def _round(rec: dict) -> tuple[int, float, float]:
    return rec["round"], float(rec["sparsity"]), float(rec["metrics"]["metric"])


def add_mlflow_counts(rows: list[ChainSummary], uri: str, experiment: str) -> str | None:
    """How many rounds MLflow holds for each row; returns why not, where it cannot say."""
    from ltvl.tracking.mlflow_lineage import KEY
    from ltvl.tracking.reach import tracking_client
    from ltvl.util.errors import LtvlError

    try:
        client = tracking_client(uri)
        exp = client.get_experiment_by_name(experiment)
        runs = {} if exp is None else {
            r.data.tags.get(KEY): r.info.run_id
            for kind in ("chain", "ticket")  # the REST store has no IN for tags
            for r in client.search_runs([exp.experiment_id], filter_string=f"tags.`ltvl.kind` = '{kind}'",
                                        max_results=5000)}
        for row in rows:
            run_id = runs.get(row.key)
            row.mlflow_rounds = len({m.step for m in client.get_metric_history(run_id, "metric")}) if run_id else 0
    except LtvlError as e:
        return e.what
    except Exception as e:  # noqa: BLE001 - the table stands without MLflow
        return f"{type(e).__name__}: {str(e)[:200]}"
    return None


def print_summary(rows: list[ChainSummary], experiment: str, p: float, console: Console,
                  mlflow_note: str | None = None) -> None:
    table = Table(title=f"{experiment}: sparsest round keeping {p:.0%} of dense (from the chain stores)")
    for col in ("chain", "status", "dense", f"best sparsity ≥{p:.0%}", "metric there",
                "last sparsity", "last metric", "rounds", "steps trained", "FLOPs", "in MLflow"):
        table.add_column(col)

    def pct(x):
        return "—" if x is None or x != x else f"{x:.1%}"

    def num(x):
        return "—" if x is None or x != x else f"{x:.4f}"

    lagging = 0
    for c in rows:
        best = c.best(p)
        last = c.rounds[-1] if c.rounds else None
        if c.mlflow_rounds is None:
            in_mlflow = "?"
        elif c.mlflow_rounds == len(c.rounds):
            in_mlflow = "all"
        else:
            lagging += 1
            in_mlflow = f"{c.mlflow_rounds} of {len(c.rounds)}"
        status = c.status if not c.unfinished else f"[bold red]{c.status}[/]"
        dense = num(c.dense) if c.dense_learned() else f"[bold red]{num(c.dense)} ⚠[/]"
        table.add_row(c.name, status, dense, pct(best[0] if best else None),
                      num(best[1] if best else None), pct(last[1] if last else None), num(last[2] if last else None),
                      f"{len(c.rounds)}/{c.planned}", f"{c.steps_trained:,}", human_flops(c.train_flops), in_mlflow)
    console.print(table)
    console.print("cost of this run: " + cost_line(sum(c.steps_trained for c in rows),
                                                     sum(c.train_flops for c in rows), sum(c.wall_s for c in rows)),
                  highlight=False)
    stored = sum(c.stored_steps for c in rows)
    if stored != sum(c.steps_trained for c in rows):  # some rounds were replayed from an earlier run
        console.print(f"all rounds of these chains, whichever run computed them: {stored:,} optimizer steps, "
                      f"{human_flops(sum(c.stored_flops for c in rows))} (this run replayed the rest)",
                      highlight=False)
    for line in uncertainty_lines(rows, p):
        console.print(line, highlight=False)
    for line in invariant_lines(rows):
        console.print(line, highlight=False)
    for c in rows:
        if (why := c.dense_flag()) and not c.is_control:
            console.print(f"[bold red]⚠ {c.name}: its dense run ({c.dense:.4f}) is {why}: it learned nothing "
                          "the controls do not, so its rounds are no evidence of a ticket. Re-run it with "
                          "another seed or more steps.[/]")
    if mlflow_note:
        console.print(f"[yellow]MLflow could not be compared with the chain stores: {mlflow_note}[/]")
    elif lagging:
        console.print(f"[yellow]MLflow lags the chain stores for {lagging} chain(s) (column 'in MLflow'). Rounds "
                      "that never reached the driver are recorded when the sweep is resumed (--resume); records "
                      "waiting in the spool go out on the next run or with `ltvl lineage --sync`.[/]")


def uncertainty_lines(rows: list[ChainSummary], p: float) -> list[str]:
    """For each pruned chain: where its answer could lie within noise, and the verdict on the ticket
    at its answer (or at its last round when no round keeps p of dense). See ltvl.core.verdict."""
    from ltvl.core.verdict import Estimate, Z, plausible_answers, verdict

    def at(row: ChainSummary, sparsity: float) -> float | None:
        return next((m for r, s, m in row.rounds if r > 0 and abs(s - sparsity) < 1e-6), None)

    out = []
    for c in rows:
        pruned = [(s, m) for r, s, m in c.rounds if r > 0]
        if c.is_control or not pruned or c.dense != c.dense or not c.dense_learned():
            continue  # a control is no ticket; a dense run that learned nothing is flagged instead
        n = c.eval_n
        dense = Estimate.of([c.dense], n)
        best = c.best(p)
        s = best[0] if best else pruned[-1][0]
        rp = next((at(o, s) for o in rows if o.arm == "RP" and o is not c and o.dense_sha == c.dense_sha
                   and o.task == c.task and at(o, s) is not None), None)
        controls = [Estimate.of([v], n) for v in (c.majority, c.sparse100) if v is not None]
        v = verdict(s, Estimate.of([at(c, s)], n), dense, p, None if rp is None else Estimate.of([rp], n), controls)
        low, high = plausible_answers([(x, Estimate.of([m], n)) for x, m in pruned], dense, p)
        answer = f"keeps {p:.0%} of dense up to {best[0]:.1%}" if best else f"no round keeps {p:.0%} of dense"
        span = f"exactly {low:.1%}" if low == high else f"anywhere from {low:.1%} to {high:.1%}"
        out.append(f"{c.name}: {answer}; within noise the answer could be {span}. At {s:.1%}: {v.label()}")
    if out:
        ns = sorted({int(c.eval_n) for c in rows if c.eval_n and c.eval_n == c.eval_n})
        se = ", ".join(f"{100 * ((0.25 / k) ** 0.5):.1f} pts on {k:,} examples" for k in ns)
        out.insert(0, f"Uncertainty: a difference counts beyond {Z:g} standard errors; one accuracy's binomial "
                      f"standard error is at most {se or 'unknown (no example count recorded)'}.")
    return out


def sparsity_plot(rows: list[ChainSummary], experiment: str, p: float, path: Path) -> Path | None:
    """The sweep's picture: every chain's metric against sparsity, coloured by arm, with the p-of-
    dense line; None when no chain has a pruned round yet."""
    from ltvl.report.figures import chain_curves

    series = [(c.name, c.arm, [(s, m) for _r, s, m in c.rounds]) for c in rows
              if len(c.rounds) > 1 and not c.is_control]  # a control has no curve: it is a line
    if not series:
        return None

    def mean(values: list[float]) -> float | None:
        values = [v for v in values if v is not None and v == v]
        return sum(values) / len(values) if values else None

    dense = mean([c.dense for c in rows])
    controls = {"majority answer": mean([c.majority for c in rows]),
                SPARSE_CONTROL: mean([c.rounds[-1][2] for c in rows if c.is_control and len(c.rounds) > 1])}
    return chain_curves(series, p * dense if dense is not None else None, p, f"{experiment}: metric vs sparsity",
                        path, {k: v for k, v in controls.items() if v is not None})
