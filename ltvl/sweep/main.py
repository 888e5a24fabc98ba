"""The sweep entry points (``sweeps/<kind>.py``): config → checks → Ray Tune stages with MLflow
lineage → a summary table and the command that opens the comparison in MLflow.

Runs the same whether started as ``python sweeps/rewind_grid.py`` (a local Ray is started if
none is running) or as ``ray job submit --working-dir . -- python sweeps/rewind_grid.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

from rich.console import Console

from ltvl.plan.config import SweepConfig, load_config
from ltvl.ray.failures import write_log
from ltvl.util.errors import LtvlError


def parse_args(kind: str, argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=f"sweeps/{kind}.py", description=f"ltvl {kind} sweep")
    ap.add_argument("--config", help=f"YAML config (default: sweeps/configs/{kind}.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set params.steps=50 --set grid.rate=[0.5,0.8]")
    ap.add_argument("--scale", help="a named scale of the config: smoke (minutes on CPU), real-cpu (easy-VQA, "
                    "minilm) or paper (published step counts, for GPU clusters)")
    ap.add_argument("--resume", action="store_true", help="finish an interrupted sweep of the same name")
    ap.add_argument("--dry-run", action="store_true", help="validate the config and print the chains, run nothing")
    ap.add_argument("--verbose", action="store_true", help="keep Ray's, Tune's and MLflow's own output (start-up "
                    "lines, configuration boxes, warnings); by default only ltvl's progress and results are shown")
    return ap.parse_args(argv)


def sweep_console() -> Console:
    """Job logs and CI are not terminals: rich would wrap at 80 columns and split the table, and
    a path cut in two by a line break can be neither found with grep nor pasted."""
    c = Console(stderr=True, highlight=False)
    return c if c.is_terminal else Console(stderr=True, highlight=False, width=200, soft_wrap=True)


def main(kind: str, argv: list[str] | None = None, config_dir: Path | None = None) -> int:
    """``config_dir`` holds ``<kind>.yaml``, the default config (the repo's ``sweeps/configs``)."""
    console = sweep_console()
    args = parse_args(kind, argv)
    try:
        default = (config_dir or Path("sweeps/configs")) / f"{kind}.yaml"
        cfg = load_config(kind, args.config or (default if default.exists() else None), args.set, args.scale)
        return run_sweep(cfg, resume=args.resume, dry_run=args.dry_run, console=console, verbose=args.verbose)
    except LtvlError as e:
        console.print(f"[bold red]error:[/] {e}")
        return 2
    except OSError as e:  # an unwritable LTVL_HOME or root, a full disk: one line, and what to do
        from ltvl.util.errors import os_error

        console.print(f"[bold red]error:[/] {os_error(e)}")
        return 2
    except KeyboardInterrupt:  # before (or after) the stages, where graceful_interrupt is not listening
        console.print("[bold yellow]Interrupted[/]: finished work is kept; run the same command (with --resume "
                      "once a stage has started) to go on.")
        return 130


def space_of(cfg: SweepConfig) -> dict:
    from ray import tune
    space: dict = dict(cfg.params)
    for axis, values in cfg.grid.items():
        space[axis] = tune.grid_search(list(values))
    for key, spec in cfg.search.space.items():
        space[key] = _domain(key, spec)
    return space


def _domain(key: str, spec: dict):
    from ray import tune

    from ltvl.params.schema import DEFAULTS, check_value, unknown_key

    where = f"search.space.{key}"
    shapes = "{loguniform: [lo, hi]}, {uniform: [lo, hi]} or {choice: [a, b, …]}"
    if key not in DEFAULTS:
        raise unknown_key(key, where)
    if not isinstance(spec, dict) or len(spec) != 1:
        raise LtvlError(f"{where} must be one of {shapes}, got {spec!r}", where=where)
    (name, arg), = spec.items()
    makers = {"loguniform": tune.loguniform, "uniform": tune.uniform, "choice": tune.choice}
    if name not in makers:
        raise LtvlError(f"unknown distribution {name!r}", where=where, fix=", ".join(makers))
    if name == "choice":
        if not isinstance(arg, list) or not arg:
            raise LtvlError(f"{where}.choice must be a non-empty list, got {arg!r}", where=f"{where}.choice",
                            fix="e.g. {choice: [0.2, 0.5]}")
        return tune.choice([check_value(key, v, f"{where}.choice[{i}]") for i, v in enumerate(arg)])
    if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                            for v in arg)):
        raise LtvlError(f"{where}.{name} must be two numbers [lo, hi], got {arg!r}", where=f"{where}.{name}",
                        fix=f"e.g. {{{name}: [1.0e-5, 1.0e-3]}}")
    lo, hi = arg
    if not lo < hi or (name == "loguniform" and lo <= 0):
        raise LtvlError(f"bad bounds {arg!r}", where=where, fix="lo < hi, and lo > 0 for loguniform")
    for bound in (lo, hi):  # the bounds must be values the parameter takes
        check_value(key, float(bound) if isinstance(DEFAULTS[key], float) else bound, where)
    return makers[name](float(lo), float(hi))


def run_sweep(cfg: SweepConfig, *, resume: bool = False, dry_run: bool = False, console: Console | None = None,
              verbose: bool = False) -> int:
    from ltvl.sweep.lock import SweepLock
    from ltvl.util.home import home

    console = console or sweep_console()
    space = space_of(cfg)
    grid, points, chains = sweep_points(cfg, space)
    n = len(grid) + len(chains)
    k = sum(c.get("method") == "all" for c in chains)
    controls_note = "" if not k else f", {k} of them {'a 100%-sparse control' if k == 1 else '100%-sparse controls'}"
    base = home() / "sweeps" / cfg.name
    root, storage = Path(cfg.root or base / "chains"), cfg.storage or str(base / "ray")  # storage may be s3://…
    opts = cfg.options()
    opts.validate()
    check_local_data(points)
    check_progress_env()
    from ltvl.plan.plan import build_plan

    the_plan = build_plan(cfg, root)
    if dry_run:
        for line in the_plan.describe():
            console.print(line, highlight=False)
        console.print(f"{n} chain(s){controls_note}; nothing run (--dry-run)")
        return 0
    console.print(f"plan: {len(the_plan.chains)} chain(s), {len(the_plan.tickets)} ticket job(s), "
                  f"{'≤ ' if the_plan.bounded else ''}{the_plan.total_steps:,} training steps "
                  "(--dry-run shows each)", highlight=False)
    from ltvl.plan import record as plan_record

    plan = sweep_plan(cfg, grid + chains)
    with SweepLock(base, cfg.name, shared_dirs(root, storage, cfg.tracking_uri)):  # a second driver: refused
        from ltvl.sweep.helpers import reap_orphans
        if reaped := reap_orphans(base):  # holding the lock: no other driver of this sweep is alive
            console.print(f"Stopped {len(reaped)} Ray helper process(es) that a killed driver of this sweep left "
                          f"running: {', '.join(reaped)}")
        if resume:  # finish the sweep that was started, never a silently different one
            if note := plan_record.check_resume(base, plan):
                console.print(f"[yellow]{note}[/]")
        else:
            plan_record.save(base, plan)
        with contextlib.nullcontext() if verbose else quiet_libraries():
            return _run_locked(cfg, space, chains, n, base, root, storage, opts, resume, console, verbose)


def _run_locked(cfg: SweepConfig, space: dict, chains: list[dict], n: int, base: Path, root: Path, storage: str,
                opts, resume: bool, console: Console, verbose: bool = False) -> int:
    import ray

    from ltvl.cluster.embedded import ray_for_sweep
    from ltvl.sweep.helpers import HelperRecorder
    from ltvl.tracking.mlflow_lineage import LineageTracker, default_tracking_uri

    uri = cfg.tracking_uri or default_tracking_uri()
    drain_s = tracking_drain_timeout()  # a bad LTVL_TRACKING_TIMEOUT is refused now, not after the sweep
    from ltvl.tracking.spool import LEGACY, spool_path

    if (root / LEGACY).exists():
        raise LtvlError(f"an older ltvl left unsent lineage records in {root / LEGACY}, which name no experiment "
                        "(sweeps sharing this root shared that file)", where=str(root / LEGACY),
                        fix=f"send them to their sweep: ltvl lineage --sync {root / LEGACY} --experiment NAME "
                            f"--tracking-uri {uri}")
    tracker = LineageTracker(uri, cfg.name, cfg.kind, spool_path(root, cfg.name))
    tracker.connect()  # an unreachable server fails here, before any trial; sends what a killed run left
    own_ray = not ray.is_initialized()
    # joins the cluster RAY_ADDRESS names (ray job submit), or starts one on 127.0.0.1 only
    with HelperRecorder(base) if own_ray else contextlib.nullcontext():  # its record goes once Ray is down
        with ray_for_sweep(verbose):
            return _run_stages(cfg, space, chains, n, base, root, storage, opts, resume, console, tracker, uri,
                               drain_s, verbose)


def not_started(outcomes: list, points: list[dict], root: Path) -> list:
    """An outcome (no trial, no failure) for each planned chain no stage reached before a stop."""
    from ltvl.params.resolve import ChainJob, resolve
    from ltvl.ray.failures import TrialOutcome
    from ltvl.ray.space import job_entry, trial_job

    ran = set()
    for t in outcomes:
        if t.stage != "dense" and t.config:
            job = trial_job(t.config)
            if isinstance(job, ChainJob):
                ran.add(job.chain.sha256)
    out = []
    for p in points:
        job = resolve(p)
        if isinstance(job, ChainJob) and job.chain.sha256 not in ran:
            ran.add(job.chain.sha256)
            out.append(TrialOutcome("chains", f"chain-{job.chain.short_hash} (not started)",
                                    {"job": job_entry(p, root)}, None))
    return out


def register_tickets(cfg: SweepConfig, uri: str, console: Console) -> None:
    """Each chain's ticket into MLflow's Model Registry (``register: false`` skips it). MLflow being
    away costs the registry entry, never the sweep: the stores hold everything, the next run registers."""
    from mlflow.exceptions import MlflowException

    from ltvl.tickets.registry import register_sweep

    try:
        for line in register_sweep(cfg, uri):
            console.print(line, highlight=False)
    except (MlflowException, OSError, LtvlError) as e:
        console.print(f"[yellow]Model Registry not updated ({type(e).__name__}: {str(e)[:300]}); the next run of "
                      "this sweep registers its tickets[/]")


def _run_stages(cfg: SweepConfig, space: dict, chains: list[dict], n: int, base: Path, root: Path, storage: str,
                opts, resume: bool, console: Console, tracker, uri: str, drain_s: float, verbose: bool = False) -> int:
    import ray

    from ltvl.ray.board import ProgressBoard, ProgressView
    from ltvl.ray.capacity import cluster_capacity
    from ltvl.ray.lineage import LineageCallback, run_hint_writer
    from ltvl.ray.nodes import NodeSampler
    from ltvl.ray.stages import run_chains
    from ltvl.sweep.summary import add_mlflow_counts, chain_summaries, print_summary, sparsity_plot
    from ltvl.tracking.mlflow_lineage import deep_link, ui_command
    from ltvl.tracking.sender import LineageSender

    started = time.time()  # rounds whose records are written from now on are this run's work
    cap = cluster_capacity()
    size = (f"autoscaling, {cap.describe()}" if cap.autoscaling else
            f"{ray.cluster_resources().get('CPU', 0):g} CPUs, {ray.cluster_resources().get('GPU', 0):g} GPUs")
    console.print(f"[bold]{cfg.kind}[/] sweep {cfg.name!r}: {n} chain(s) on Ray ({size}); lineage → {uri}")
    board = ProgressBoard(console, live=console.is_terminal)
    sender = LineageSender(tracker, say=lambda m: board.say(f"[yellow]{m}[/]"),
                           on_sent=run_hint_writer(root, tracker)).start()
    lineage = LineageCallback(sender, root, console, board=board, p=cfg.keep)
    outcomes: list = []
    notes: list[str] = []  # what the sweep decided on its own (re-seeded dense runs)
    nodes = NodeSampler()
    nodes.start()
    mlflow_log = base / "mlflow-errors.log"
    with quiet_library_errors(mlflow_log), graceful_interrupt(console) as interrupted:
        try:
            with ProgressView(board, on_reading=lineage.live_reading):
                run_chains(space, root, storage, name=cfg.name, options=opts, resume=resume, sweep_base=base,
                           extra_points=chains, callbacks=[lineage], outcomes=outcomes,
                           stop=interrupted.is_set, verbose=verbose, notes=notes)
        finally:  # interrupted or not, no run stays RUNNING and every record is sent or kept
            lineage.close_open_runs("KILLED")
            left = sender.close(drain_s)
            timeline = nodes.stop()
            timeline.write_csv(base / "node-timeline.csv")
    if interrupted.is_set():  # chains a stopped sweep never reached are unfinished too, not absent
        _, planned, extra = sweep_points(cfg, space)
        outcomes += not_started(outcomes, planned + extra if not cfg.search.space else [], root)
    rows = chain_summaries(outcomes, root, early_stop=opts.early_stop.kind != "off",
                           interrupted=interrupted.is_set(), since=started)
    note = add_mlflow_counts(rows, uri, cfg.name) if rows else None
    print_summary(rows, cfg.name, cfg.keep, console, note)
    if cfg.register and rows and not interrupted.is_set():
        register_tickets(cfg, uri, console)
    for line in notes:
        console.print(f"[bold yellow]↻ {line}[/]")
    if timeline.peak > 1 or any(timeline.joined_left()):  # a multi-node or autoscaling cluster
        console.print(timeline.line())
    if sender.outages and mlflow_log.exists():
        console.print(f"[yellow]MLflow's own error messages while it was away: {mlflow_log}[/]")
    if left:
        console.print(f"[yellow]MLflow at {uri} has not taken {left} record(s) yet; they are kept in order in "
                      f"{tracker.spool.path} and go out on the next run of this sweep or with "
                      f"`ltvl lineage --sync {tracker.spool.path} --experiment {cfg.name} --tracking-uri {uri}`.[/]")
    if rows:
        plot = sparsity_plot(rows, cfg.name, cfg.keep, base / "metric_vs_sparsity.png")
        if plot is not None:
            console.print(f"Metric against sparsity: [bold]{plot}[/]")
    console.print(f"\nOpen the comparison:  [bold]{ui_command(uri)}[/]  (experiment {cfg.name!r})")
    if tracker.experiment_id is not None:
        console.print(f"  then this link lists the chain runs, best ticket first, in chart view:\n  "
                      f"[bold]{deep_link(uri, tracker.experiment_id, cfg.keep)}[/]")
    console.print(f"Tables and figures:   [bold]ltvl report --experiment {cfg.name} --tracking-uri {uri}[/]")
    failures = [o.failure for o in outcomes if o.failure is not None]
    if failures:
        report_failures(failures, base / "failures.log", console)
    unfinished = [r for r in rows if r.status == "incomplete"]
    if interrupted.is_set():
        console.print(f"[bold red]Interrupted[/]: {len(unfinished)} chain(s) unfinished. Finished rounds are kept; "
                      "finish the sweep with --resume.")
        return 130
    if failures or unfinished:
        if unfinished:
            console.print(f"[bold red]{len(unfinished)} chain(s) incomplete[/] without an error: "
                          f"{', '.join(r.name for r in unfinished)}. Finish them with --resume.")
        return EXIT_FAILED
    return EXIT_MLFLOW_LAGS if left else 0


EXIT_FAILED = 1  # a chain failed or was left unfinished
EXIT_MLFLOW_LAGS = 3  # every chain finished, but MLflow has not taken every record yet (they are spooled)


def tracking_drain_timeout() -> float:
    """How long the end of a sweep waits for a tracking server that does not answer."""
    from ltvl.tracking.reach import tracking_timeout
    return 2 * tracking_timeout()


def report_failures(failures: list, log: Path, console: Console) -> None:
    """Each cause once, short, with the trials it stopped; every traceback in the log."""
    write_log(failures, log)
    console.print(f"\n[bold red]{len(failures)} trial(s) FAILED[/] (status FAILED above); full tracebacks: {log}")
    by_cause: dict[str, list] = {}
    for f in failures:
        by_cause.setdefault(f.message, []).append(f"{f.stage} {f.trial}")
    for message, trials in by_cause.items():
        console.print(f"  [red]✘[/] {message}\n    in {len(trials)} trial(s): {', '.join(trials)}")
    console.print("Fix the cause, then finish the sweep with --resume (finished rounds are kept).")


@contextlib.contextmanager
def graceful_interrupt(console: Console):
    """Ctrl-C (or SIGTERM, as ``ray job stop`` sends) asks Tune to stop at its next step and the
    sweep to stop after the stage, so its records are sent and its summary says what is unfinished.
    A second Ctrl-C stops at once. Tune's own SIGINT handler is turned off for this (it would
    swallow the first signal and let the next stage start); its SIGUSR1 handler does the stopping."""
    import os
    import signal
    import threading

    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    old_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")

    def handler(sig, frame):
        if event.is_set():
            raise KeyboardInterrupt
        event.set()
        console.print(f"[bold yellow]{signal.Signals(sig).name}: stopping the sweep (finished rounds are kept, "
                      "--resume finishes it); again to stop at once.[/]")
        if callable(signal.getsignal(signal.SIGUSR1)):  # inside a stage: Tune's graceful stop
            os.kill(os.getpid(), signal.SIGUSR1)

    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    for sig in old:
        signal.signal(sig, handler)
    try:
        yield event
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        if old_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = old_env


def sweep_points(cfg: SweepConfig, space: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """(grid points, every chain point, the extra chains incl. controls), checked: duplicates refused."""
    from ltvl.plan.controls import control_chains
    from ltvl.plan.points import chain_points, grid_points
    from ltvl.ray.space import validate_space

    fixed = {k: v for k, v in space.items() if k not in cfg.search.space}
    plain = {k: v for k, v in fixed.items() if not (isinstance(v, dict) and "grid_search" in v)}
    validate_space(space)
    grid = grid_points(fixed)
    points = chain_points(fixed, list(cfg.chains))
    refuse_duplicates(grid, [{**plain, **c} for c in cfg.chains])
    chains = list(cfg.chains)
    if cfg.controls and not cfg.search.space:
        chains += control_chains(points)
    return grid, points, chains


def sweep_plan(cfg: SweepConfig, points: list[dict]) -> dict:
    """What --resume must find unchanged: the config's result-bearing keys and its chains' identities."""
    from ltvl.params.resolve import ChainJob, resolve
    from ltvl.plan import record as plan_record
    from ltvl.plan.config import to_dict

    return plan_record.plan_of(to_dict(cfg), [j.chain.sha256 for p in points
                                             if isinstance(j := resolve(p), ChainJob)])


def shared_dirs(root: Path, storage: str, tracking_uri: str | None) -> list[Path]:
    """The directories a sweep writes that a driver with another LTVL_HOME could write too."""
    out = [Path(root)]
    if "://" not in storage:
        out.append(Path(storage))
    if tracking_uri and tracking_uri.startswith("sqlite:///"):
        out.append(Path(tracking_uri.removeprefix("sqlite:///")).parent)
    return out


def refuse_duplicates(grid: list[dict], extra: list[dict]) -> None:
    """Two entries of one sweep that are the same chain would train one store twice at once."""
    from ltvl.params.resolve import ChainJob, resolve

    seen: dict[str, str] = {}
    for where, point in [*((f"grid point {i}", p) for i, p in enumerate(grid)),
                         *((f"chains[{i}]", p) for i, p in enumerate(extra))]:
        job = resolve(point, where=where)
        if not isinstance(job, ChainJob):
            continue
        if job.chain.sha256 in seen:
            raise LtvlError(f"{where} is the same chain as {seen[job.chain.sha256]} ({job.chain.short_hash}): it "
                            "would train one store twice at once", where=where, fix="drop one of them")
        seen[job.chain.sha256] = where


def check_progress_env() -> None:
    """``LTVL_PROGRESS_S`` (read by every worker) and ``LTVL_PROGRESS_LOG_S``: a bad value is
    refused here, before any trial, not in a worker halfway through the sweep."""
    from ltvl.core.cost import gpu_tflops
    from ltvl.core.progress import progress_interval_s
    from ltvl.ray.board import log_interval_s
    progress_interval_s()
    log_interval_s()
    gpu_tflops()  # the summary's GPU-hours: a bad value is refused before any trial


def check_local_data(points: list[dict]) -> None:
    """A dataset directory on this machine must be one before any trial starts (URIs, easy-vqa and
    synthetic data are prepared or fetched by the workers)."""
    from ltvl.params.resolve import data_for, resolve
    from ltvl.vl.data.info import DatasetInfo
    from ltvl.vl.datasets import prepared_elsewhere

    seen = set()
    for i, point in enumerate(points):
        job = resolve(point, where=f"chains[{i}]")
        data = data_for(getattr(job, "target", job).params)
        if data in seen or prepared_elsewhere(data):
            continue
        seen.add(data)
        try:
            DatasetInfo.load(Path(data).expanduser())
        except LtvlError as e:
            raise LtvlError(e.what, where=f"params.data={data}", fix=e.fix) from None


@contextlib.contextmanager
def quiet_libraries():
    """What a researcher does not need to read while chains train: MLflow's table-creation lines,
    Ray's token and start-up lines (and their ANSI colours), Tune's configuration boxes and its
    TensorBoard hints (results live in MLflow), and the raylet's warning that it started more
    worker processes than the machine has cores (Tune and Train actors do that by design; Ray
    prints it to stdout from a thread of its own and has no switch for it). ``--verbose`` keeps
    them all."""
    import logging
    import os
    import sys

    env = {"RAY_AIR_NEW_OUTPUT": "0", "RAY_COLOR_PREFIX": "0", "MLFLOW_LOGGING_LEVEL": "WARNING"}
    old_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import mlflow  # noqa: F401 - it configures its loggers on import: quiet them after that

    names = ("mlflow", "alembic", "ray", "ray.tune", "ray.train", "ray.data")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    stdout = sys.stdout
    sys.stdout = DroppingLines(stdout, ("PYTHON worker processes have been started on node",))
    try:
        yield
    finally:
        sys.stdout = stdout
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class DroppingLines:
    """A text stream that passes everything through except whole writes containing one of
    ``patterns`` (Ray writes each message in one call)."""

    def __init__(self, stream, patterns: tuple[str, ...]):
        self._stream, self._patterns = stream, patterns

    def write(self, text: str) -> int:
        if any(p in text for p in self._patterns):
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


MLFLOW_LOGGERS = ("mlflow.store", "mlflow.utils.rest_utils", "urllib3.connectionpool")


@contextlib.contextmanager
def quiet_library_errors(mlflow_log: Path):
    """While the stages run: Tune logs every errored trial's whole Ray traceback, and MLflow's
    store logs a traceback for every record it cannot write while it is away; the driver says
    each once, short, itself. MLflow's own messages go to ``mlflow_log`` (made only if one comes);
    the loggers are restored afterwards."""
    import logging

    loggers = [logging.getLogger(name) for name in ("ray.tune", "ray.train")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    handler = logging.FileHandler(mlflow_log, delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    routed = [logging.getLogger(name) for name in MLFLOW_LOGGERS]
    was = [lg.propagate for lg in routed]
    for lg in routed:
        lg.addHandler(handler)
        lg.propagate = False
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        for lg, propagate in zip(routed, was):
            lg.removeHandler(handler)
            lg.propagate = propagate
        handler.close()


