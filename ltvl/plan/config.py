"""Sweep configs: YAML files in ``sweeps/configs/`` plus ``--set key=value`` overrides, checked
key by key before Ray or MLflow is touched. Chain parameters are checked by their one schema
(:mod:`ltvl.params.schema`); scheduling options are :mod:`ltvl.plan.options`."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ltvl.params.schema import DEFAULTS, check_value, unknown_key
from ltvl.plan import yamlio
from ltvl.plan.options import EarlyStop, Resources, Search, SweepOptions
from ltvl.util.errors import LtvlError

KINDS = ("rewind_grid", "adversarial_grid", "transfer", "search")
MAX_CHAINS = 10_000  # chains in one sweep: planning stays seconds, and a typo never queues weeks of work
MAX_CONFIG_BYTES = 1 << 20  # a config file, or one --set value
MAX_CONFIG_VALUES = 200_000  # values a config may expand to (YAML aliases can multiply a small file)
TRACKING_SCHEMES = ("sqlite", "http", "https", "file", "databricks", "postgresql", "mysql", "mssql")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # a sweep's name becomes a directory


# What each key of a sweep config means: docs/reference/sweep-config.md is generated from this
# (ltvl.reference), and a test fails when a key has no line here.
KEY_DOCS = {
    "kind": "which sweep: " + ", ".join(KINDS) + "; the entry point's own kind when omitted",
    "name": "the MLflow experiment and the Tune run name; a plain directory name. An experiment of another "
            "sweep kind is refused",
    "params": "chain parameters shared by every chain (docs/reference/parameters.md)",
    "grid": "axes, e.g. `rewind_step: [0, 20]`; every combination runs",
    "chains": "single extra chains as overrides of `params`, e.g. `[{method: random, rate: 0.5}]`",
    "baselines": "the ticket stage: baselines re-trained on every IMP chain's masks (theta0_shuffled, "
                 "theta0_prime, high_magnitude, random, random_init)",
    "transfer_to": "the ticket stage: tasks every IMP chain's masks are trained on",
    "search.space": "Optuna space, e.g. `{lr: {loguniform: [3e-5, 1e-3]}}` (or `uniform`, `choice`); implies "
                    "`algorithm: optuna`",
    "search.num_samples": "trials per Optuna study (one study per grid point)",
    "search.metric": "what the search maximises at a chain's last round: metric, dense_ratio or finetune_metric",
    "search.algorithm": "grid or optuna",
    "resources.num_workers": "DDP workers per chain",
    "resources.use_gpu": "one GPU per worker",
    "resources.cpus_per_worker": "CPUs a worker reserves; with the 0.1-CPU trial driver the default makes a trial "
                                 "cost one CPU",
    "resources.max_failures": "worker-group restarts per chain (each resumes at the last finished round)",
    "resources.max_concurrent_trials": "chains at once; null = what fits",
    "resources.driver_resources": "extra resources every trial driver asks for, e.g. `{trial_driver: 1}` so "
                                  "drivers stay on the head, never on spot workers",
    "early_stop.kind": "off, below_dense (drop a chain at its first round below p of dense) or asha "
                       "(ASHA on dense_ratio by round)",
    "early_stop.keep": "below_dense: a chain stops at its first round below this fraction of dense "
                       "(formerly early_stop.p)",
    "tracking_uri": "MLflow: default `$MLFLOW_TRACKING_URI` if set, else `sqlite:///$LTVL_HOME/mlflow.db`; "
                    "an `http://` server works the same",
    "root": "chain stores; default `$LTVL_HOME/sweeps/<name>/chains`",
    "storage": "Ray storage; default `$LTVL_HOME/sweeps/<name>/ray`",
    "keep": "the fraction of dense a ticket must keep: the summary's line, its verdicts and MLflow's "
            "best_sparsity_p<keep> (formerly report_p)",
    "controls": "add a 100%-sparse control chain per dense run (docs/guide/controls.md)",
    "register": "register each chain's ticket (the sparsest round keeping `keep` of dense) in MLflow's Model "
                "Registry, with its card and mask (docs/guide/tickets.md)",
    "retry_unlearned": "re-seed a dense run that does not beat the majority answer, up to N times",
    "seed_informed": "adaptive chains that differ only in seed: the first seed searches, the others start at "
                     "its answer (docs/results/cost-to-ticket.md)",
    "share_masks": "with seed_informed: the others also take the first seed's masks and walk one level at a "
                   "time from its answer",
    "scales": "named override sets chosen with `--scale` (smoke, real-cpu, paper): a scale's params and grid "
              "update the config's, its other keys replace them",
}


@dataclass
class SweepConfig:
    kind: str = "rewind_grid"
    name: str = "rewind-grid"  # the MLflow experiment and the Tune run name
    params: dict[str, Any] = field(default_factory=dict)  # chain params (ltvl.params.schema.ChainParams)
    grid: dict[str, list] = field(default_factory=dict)  # axes: every combination runs
    chains: list[dict] = field(default_factory=list)  # extra single chains (overrides of params)
    baselines: list[str] = field(default_factory=list)  # ticket baselines on every IMP chain's masks
    transfer_to: list[str] = field(default_factory=list)  # tasks every IMP chain's masks transfer to
    search: Search = field(default_factory=Search)
    resources: Resources = field(default_factory=Resources)
    early_stop: EarlyStop = field(default_factory=EarlyStop)
    tracking_uri: str | None = None  # default: sqlite under LTVL_HOME
    root: str | None = None  # chain stores; default LTVL_HOME/sweeps/<name>/chains
    storage: str | None = None  # Ray storage; default LTVL_HOME/sweeps/<name>/ray
    keep: float = 0.99  # the fraction of dense a ticket must keep (the summary's line; formerly report_p)
    register: bool = True  # each chain's answer as a model version in MLflow's Model Registry (ltvl.tickets.registry)
    # SPEC §7: a 100%-sparse control chain per dense run (ltvl.plan.controls); off only to save a
    # trial where controls are not the point (fast tests); searches never add them
    controls: bool = True
    retry_unlearned: int = 0  # retry a dense run below the majority answer with the next unused seed, N times
    seed_informed: bool = False  # adaptive chains: other seeds start at the first seed's answer (ltvl.ray.informed)
    share_masks: bool = False  # with seed_informed: they also take the first seed's masks (ltvl.core.lead_masks)
    # named override sets chosen with --scale (smoke / real-cpu / paper): each is a partial config
    # whose params and grid update the base ones and whose other keys replace them
    scales: dict[str, dict] = field(default_factory=dict)

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise LtvlError(f"unknown sweep kind {self.kind!r}", where="kind", fix=", ".join(KINDS))
        if not SAFE_NAME.match(self.name) or ".." in self.name:
            raise LtvlError(
                f"name {self.name!r} is not a safe directory name",
                where="name",
                fix="letters, digits, '.', '_' and '-' only (no '/' or '..'), e.g. name: rewind-grid-v2",
            )
        for k, v in self.params.items():
            _check_param(k, v, f"params.{k}")
        for axis, values in self.grid.items():
            if axis not in DEFAULTS:
                raise unknown_key(axis, f"grid.{axis}")
            if not isinstance(values, list) or not values:
                raise LtvlError(
                    f"grid.{axis} must be a non-empty list, got {values!r}",
                    where=f"grid.{axis}",
                    fix=f"e.g. --set grid.{axis}=[a,b]",
                )
            for i, v in enumerate(values):
                _check_param(axis, v, f"grid.{axis}[{i}]")
            seen: dict[str, int] = {}
            for i, v in enumerate(values):
                key = repr(v)
                if key in seen:
                    raise LtvlError(f"grid.{axis} lists {v!r} twice (at {seen[key]} and {i}): the same chain would "
                                    "train twice into one store", where=f"grid.{axis}[{i}]", fix="drop the repeat")
                seen[key] = i
        n = 1
        for values in self.grid.values():
            n *= len(values)
        if n + len(self.chains) > MAX_CHAINS:
            raise LtvlError(f"this sweep has {n:,} grid points and {len(self.chains):,} extra chains, beyond "
                            f"{MAX_CHAINS:,} chains in one sweep", where="grid/chains",
                            fix="split it into several sweeps (a typo in a grid list is the usual cause)")
        if self.tracking_uri is not None:
            check_tracking_uri(self.tracking_uri)
        for i, c in enumerate(self.chains):
            if not isinstance(c, dict):
                raise LtvlError(f"chains[{i}] must be a mapping of chain params", where=f"chains[{i}]")
            for k, v in c.items():
                _check_param(k, v, f"chains[{i}].{k}")
        if not 0 < self.keep <= 1:
            raise LtvlError(f"keep {self.keep} outside (0, 1]", where="keep", fix="e.g. 0.99")
        self.options().validate()

    def options(self) -> SweepOptions:
        search = dataclasses.replace(self.search, algorithm="optuna") if self.search.space else self.search
        return SweepOptions(self.resources, self.early_stop, search, tuple(self.baselines), tuple(self.transfer_to),
                            retry_unlearned=self.retry_unlearned, seed_informed=self.seed_informed,
                            share_masks=self.share_masks)


def check_tracking_uri(uri: str) -> None:
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ("file" if uri.startswith("/") else "")
    if scheme not in TRACKING_SCHEMES:
        raise LtvlError(f"tracking_uri {uri!r} is not an MLflow tracking URI", where="tracking_uri",
                        fix=f"a URI with one of {', '.join(TRACKING_SCHEMES)}, e.g. http://127.0.0.1:5000 or "
                            "sqlite:////abs/path/mlflow.db; or leave it unset for the local store")


def check_size(data: Any, where: str) -> None:
    """Refuse a config that expands beyond MAX_CONFIG_VALUES values (YAML aliases share nodes, so a
    few lines can stand for billions): counted with a budget, never expanded."""
    todo, n = [data], 0
    while todo:
        x = todo.pop()
        n += 1
        if n > MAX_CONFIG_VALUES:
            raise LtvlError(f"the config expands to more than {MAX_CONFIG_VALUES:,} values (nested YAML aliases?)",
                            where=where, fix="write the values out; anchors and aliases are for a few repeats")
        if isinstance(x, dict):
            todo.extend(x.keys())
            todo.extend(x.values())
        elif isinstance(x, list):
            todo.extend(x)


def _check_param(key: str, value: Any, where: str) -> None:
    if key not in DEFAULTS:
        raise unknown_key(key, where)
    if isinstance(value, yamlio.Required):  # a placeholder: refused at run time if still unfilled
        return
    check_value(key, value, where)


def refuse_unfilled(cfg: SweepConfig, scale: str | None) -> None:
    """The chosen config may not run with a ``!required`` value left in it."""
    places = [(f"params.{k}", v) for k, v in cfg.params.items()]
    places += [(f"grid.{k}[{i}]", v) for k, vs in cfg.grid.items() for i, v in enumerate(vs)]
    places += [(f"chains[{i}].{k}", v) for i, c in enumerate(cfg.chains) for k, v in c.items()]
    for where, value in places:
        if isinstance(value, yamlio.Required):
            at = f" at scale {scale!r}" if scale else ""
            raise LtvlError(f"{where} is required{at}: {value}", where=where,
                            fix=f"give it with --set {where}=VALUE" if where.startswith("params.") else
                            "fill it in the config file")


# one word per idea: keys renamed to it, and the word they are now
RENAMED = {"report_p": "keep", "p": "keep"}


def _unknown(key: str, known, where: str) -> None:
    if key in RENAMED and RENAMED[key] in known:
        new = where.rsplit(".", 1)[0] + "." + RENAMED[key] if "." in where else RENAMED[key]
        raise LtvlError(f"config key {where!r} is now {new!r} (one word, keep, for the fraction of dense a ticket "
                        "must keep)", where=where, fix=f"rename it: {new}: <value>")
    close = difflib.get_close_matches(key, list(known), n=1)
    raise LtvlError(
        f"unknown config key {where!r}",
        where=where,
        fix=(f"did you mean {where.rsplit('.', 1)[0] + '.' if '.' in where else ''}{close[0]}? " if close else "")
        + f"known: {', '.join(sorted(known))}",
    )


def _merge(base: Any, data: dict, where: str) -> Any:
    """Fill a dataclass from a mapping, naming any unknown key and any value of the wrong type."""
    if not isinstance(data, dict):
        raise LtvlError(
            f"{where or 'the config'} must be a mapping, got {type(data).__name__}", where=where or "config"
        )
    fields = {f.name: f for f in dataclasses.fields(base)}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            _unknown(key, fields, path)
        current = getattr(base, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, path)
        else:
            setattr(base, key, _typed(value, current, fields[key], path))
    return base


def _typed(value: Any, current: Any, f: dataclasses.Field, path: str) -> Any:
    want = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    checks = {"int": int, "float": (int, float), "bool": bool, "str": str}
    base_type = want.split("[")[0].split("|")[0].strip()
    if value is None and "None" in want:
        return None
    if base_type in ("dict", "list"):
        if not isinstance(value, dict if base_type == "dict" else list):
            raise LtvlError(f"{path} must be a {base_type}, got {type(value).__name__} {value!r}", where=path)
        return value
    if base_type in checks:
        ok = isinstance(value, checks[base_type]) and not (base_type in ("int", "float") and isinstance(value, bool))
        if not ok:
            raise LtvlError(
                f"{path} must be {base_type}, got {type(value).__name__} {value!r}",
                where=path,
                fix=f"e.g. --set {path}={current!r}" if current is not None else None,
            )
        return float(value) if base_type == "float" else value
    return value


def apply_scale(cfg: SweepConfig, scale: str) -> None:
    if scale not in cfg.scales:
        raise LtvlError(
            f"this config has no scale {scale!r}",
            where="--scale",
            fix=f"one of: {', '.join(cfg.scales) or '(none defined: drop --scale)'}",
        )
    data = cfg.scales[scale]
    if not isinstance(data, dict):
        raise LtvlError(f"scales.{scale} must be a mapping of config keys", where=f"scales.{scale}")
    for key, value in data.items():
        where = f"scales.{scale}.{key}"
        if key in ("params", "grid"):
            if not isinstance(value, dict):
                raise LtvlError(f"{where} must be a mapping", where=where)
            for k, v in value.items():
                _set(cfg, [key, k], v, f"{where}.{k}")
        elif key == "scales":
            raise LtvlError("a scale cannot define scales", where=where)
        else:
            _merge(cfg, {key: value}, "")


def load_config(kind: str, path: str | Path | None, overrides: list[str], scale: str | None = None) -> SweepConfig:
    """The sweep's config: the kind's built-in defaults, then the YAML file, then its ``--scale``
    overrides, then ``--set`` overrides."""
    cfg = SweepConfig(kind=kind, name=kind.replace("_", "-"))
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise LtvlError(f"config file {p} does not exist", where="--config", fix="check the path")
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise LtvlError(f"{p} is {p.stat().st_size:,} bytes, beyond {MAX_CONFIG_BYTES:,} for a config",
                            where=str(p), fix="a sweep config is a page of YAML: generate chains with grid axes")
        try:
            data = yamlio.load(p.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise LtvlError(f"{p} is not valid YAML ({e})", where=str(p)) from e
        check_size(data, str(p))
        if data is None:
            raise LtvlError(
                f"{p} is empty",
                where=str(p),
                fix=f"give at least `kind: {kind}` and the params to sweep (see sweeps/configs/)",
            )
        if not isinstance(data, dict):
            raise LtvlError(
                f"{p} must be a mapping of config keys, got a {type(data).__name__}",
                where=str(p),
                fix="top-level keys such as kind, name, params, grid (see sweeps/configs/)",
            )
        if data.get("kind", kind) != kind:
            raise LtvlError(
                f"{p} is a {data['kind']!r} config, this entry point runs {kind!r}",
                where="kind",
                fix=f"run sweeps/{data['kind']}.py with it",
            )
        _merge(cfg, data, "")
    for name in cfg.scales:  # every scale is checked, not only the one chosen
        trial = copy.deepcopy(cfg)
        apply_scale(trial, name)
        trial.validate()
    if scale is not None:
        apply_scale(cfg, scale)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise LtvlError(f"--set {item!r} is not key=value", where="--set", fix="e.g. --set params.lr=1e-4")
        if len(raw) > MAX_CONFIG_BYTES:
            raise LtvlError(f"--set {key}: the value is {len(raw):,} characters", where=f"--set {key}",
                            fix="put large settings in a config file")
        try:
            value = yamlio.load(raw)
        except yaml.YAMLError as e:
            raise LtvlError(f"--set {key}: cannot parse {raw[:200]!r} ({e})", where=f"--set {key}") from e
        check_size(value, f"--set {key}")
        _set(cfg, key.split("."), value, key)
    cfg.validate()  # an unknown kind is named as such before the entry-point check below
    if cfg.kind != kind:
        raise LtvlError(f"this entry point runs {kind!r} sweeps, not {cfg.kind!r}", where="kind",
                        fix=f"run sweeps/{cfg.kind}.py for a {cfg.kind} sweep")
    refuse_unfilled(cfg, scale)
    # how to run this config again (the model cards' command); not a config key, not in its identity
    cfg.origin = [_config_ref(path, kind), *(["--scale", scale] if scale else []),
                  *[a for item in overrides for a in ("--set", item)]]
    return cfg


def _config_ref(path: str | Path | None, kind: str) -> str:
    """How a command names the config: a shipped one by its name (any checkout has it), else its path."""
    if path is None:
        return kind
    shipped = shipped_config_dir()
    p = Path(path).resolve()
    return p.stem if shipped is not None and p.parent == shipped.resolve() else str(path)


def _set(cfg: SweepConfig, parts: list[str], value: Any, key: str) -> None:
    head = parts[0]
    if head in ("params", "grid") and len(parts) == 2:
        if parts[1] not in DEFAULTS:
            raise unknown_key(parts[1], key)
        getattr(cfg, head)[parts[1]] = value  # checked with the rest by validate()
        return
    nested: dict[str, Any] = value
    for p in reversed(parts[1:]):
        nested = {p: nested}
    _merge(cfg, {head: nested}, "")


def to_dict(cfg: SweepConfig) -> dict:
    return copy.deepcopy(dataclasses.asdict(cfg))


def shipped_config_dir() -> Path | None:
    """``sweeps/configs`` beside the ltvl package (a checkout, or ``ray job submit``'s working dir)."""
    directory = Path(__file__).resolve().parents[2] / "sweeps" / "configs"
    return directory if directory.is_dir() else None


def find_config(name: str) -> Path:
    """A config file by path, or a shipped config by name (``rewind_grid`` or ``rewind_grid.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = shipped_config_dir()
    if shipped is not None and path.parent == Path(".") and (shipped / f"{path.stem}.yaml").is_file():
        return shipped / f"{path.stem}.yaml"
    names = ", ".join(p.stem for p in sorted(shipped.glob("*.yaml"))) if shipped else "(none found)"
    raise LtvlError(f"no config file {name!r}", where="CONFIG", fix=f"a YAML file, or a shipped config: {names}")


def config_kind(path: Path) -> str:
    """The ``kind:`` a config file names (rewind_grid when it names none). A file that cannot be
    read as a mapping gives the default, so that loading it reports the problem with its key."""
    try:
        data = yamlio.load(path.read_text()) if path.stat().st_size <= MAX_CONFIG_BYTES else None
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return KINDS[0]
    kind = data.get("kind") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else KINDS[0]
