"""How a sweep schedules its chains: resources per trial, failures, early stopping, search, the
ticket stage. One definition with one set of defaults, read from a sweep's YAML and passed as is
to the Ray adapter (:mod:`ltvl.ray.stages`). Imports no Ray."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ltvl.util.errors import LtvlError

DRIVER_CPU = 0.1  # a trial's function driver: it only builds and waits on the TorchTrainer
# A worker reserves 0.9 CPU by default so that a trial (worker + driver) costs exactly one CPU:
# a 2-core machine then runs two chains at once, each with one torch thread, instead of one.
DEFAULT_CPUS_PER_WORKER = 1 - DRIVER_CPU
EARLY_STOPS = ("off", "below_dense", "asha")
SEARCH_METRICS = ("metric", "dense_ratio", "finetune_metric")  # what a round reports that a search can maximise


@dataclass
class Resources:
    num_workers: int = 1  # DDP workers per chain
    use_gpu: bool = False
    cpus_per_worker: float = DEFAULT_CPUS_PER_WORKER
    max_failures: int = 1  # worker-group restarts per chain (each resumes at the last finished round)
    max_concurrent_trials: int | None = None  # default: what fits
    # extra resources every trial driver asks for, e.g. {trial_driver: 1}: a custom resource only
    # the head offers, so drivers never land on (and die with) spot workers
    driver_resources: dict[str, float] = field(default_factory=dict)

    def validate(self, where: str = "resources") -> None:
        if self.num_workers < 1:
            raise LtvlError(
                f"{where}.num_workers must be >= 1, got {self.num_workers}",
                where=f"{where}.num_workers",
                fix="1 for one worker per chain, more for DDP",
            )
        if self.cpus_per_worker <= 0:
            raise LtvlError(f"{where}.cpus_per_worker must be > 0", where=f"{where}.cpus_per_worker", fix="e.g. 0.9")
        if self.max_failures < 0:
            raise LtvlError(f"{where}.max_failures must be >= 0", where=f"{where}.max_failures")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise LtvlError(
                f"{where}.max_concurrent_trials must be >= 1 (or null)", where=f"{where}.max_concurrent_trials"
            )
        if not isinstance(self.driver_resources, dict):
            raise LtvlError(f"{where}.driver_resources must be a mapping of resource: amount",
                            where=f"{where}.driver_resources", fix="e.g. {trial_driver: 1}")
        for k, v in self.driver_resources.items():
            if not isinstance(k, str) or not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1e6:
                raise LtvlError(f"{where}.driver_resources.{k} must be an amount >= 0, got {v!r}",
                                where=f"{where}.driver_resources.{k}", fix="e.g. {trial_driver: 1}")


@dataclass
class EarlyStop:
    kind: str = "off"  # off | below_dense (drop a chain below keep of dense) | asha (ASHA on dense_ratio by round)
    keep: float = 0.9

    def validate(self, where: str = "early_stop") -> None:
        if self.kind not in EARLY_STOPS:
            raise LtvlError(f"unknown early_stop {self.kind!r}", where=f"{where}.kind", fix=", ".join(EARLY_STOPS))
        if not 0 < self.keep <= 1:  # checked even while off: a typo should not wait for the day it is switched on
            raise LtvlError(f"early-stop fraction {self.keep} outside (0, 1]", where=f"{where}.keep", fix="e.g. 0.9")


@dataclass
class Search:
    space: dict[str, dict] = field(default_factory=dict)  # key: {loguniform: [lo, hi]} | {uniform: …} | {choice: […]}
    num_samples: int = 4  # trials per Optuna study (one study per grid point)
    metric: str = "metric"  # maximised; the last round's value is what Optuna sees
    algorithm: str = "grid"  # grid | optuna (a config with a search space implies optuna)

    def validate(self, where: str = "search") -> None:
        if self.algorithm not in ("grid", "optuna"):
            raise LtvlError(f"unknown search {self.algorithm!r}", where=f"{where}.algorithm", fix="grid or optuna")
        if self.num_samples < 1:
            raise LtvlError(f"{where}.num_samples must be >= 1", where=f"{where}.num_samples")
        if self.num_samples > 10_000:
            raise LtvlError(f"{where}.num_samples {self.num_samples:,} is beyond 10,000 trials per study",
                            where=f"{where}.num_samples", fix="a smaller study, or several sweeps")
        if self.metric not in SEARCH_METRICS:
            import difflib

            close = difflib.get_close_matches(self.metric, SEARCH_METRICS, n=1)
            raise LtvlError(f"unknown search.metric {self.metric!r}: a chain's rounds report "
                            f"{', '.join(SEARCH_METRICS)}", where=f"{where}.metric",
                            fix=(f"did you mean {close[0]!r}? " if close else "") + "e.g. metric")


@dataclass
class SweepOptions:
    resources: Resources = field(default_factory=Resources)
    early_stop: EarlyStop = field(default_factory=EarlyStop)
    search: Search = field(default_factory=Search)
    baselines: tuple[str, ...] = ()  # ticket baselines on every IMP chain's masks (ltvl.core.baselines)
    transfer_to: tuple[str, ...] = ()  # tasks every IMP chain's masks are transferred to
    seed: int = 0  # Optuna's sampler seed
    # a dense run that does not beat the majority answer is tried again with the next unused seed,
    # up to this many times, before its chains run (SPEC §7); needs a dense stage (controls give one)
    retry_unlearned: int = 0
    # adaptive chains that differ only in seed: the others start their search at the first seed's
    # settled answer (ltvl.ray.informed), in a stage after the first seeds' chains
    seed_informed: bool = False
    # with seed_informed: the other seeds take the first seed's masks and only walk from its answer
    # (ltvl.core.lead_masks), instead of searching a path of their own
    share_masks: bool = False

    def validate(self) -> None:
        self.resources.validate()
        self.early_stop.validate()
        self.search.validate()
        if not 0 <= self.retry_unlearned <= 10:
            raise LtvlError(f"retry_unlearned {self.retry_unlearned} is outside [0, 10]", where="retry_unlearned",
                            fix="0 (never) or a few retries, e.g. retry_unlearned: 1")
        if self.share_masks and not self.seed_informed:
            raise LtvlError("share_masks needs seed_informed: the other seeds take the masks of the first seed's "
                            "settled chain", where="share_masks", fix="set seed_informed: true as well")
        from ltvl.params.schema import check_value

        for i, b in enumerate(self.baselines):
            check_value("ticket", b, f"baselines[{i}]")
        for i, t in enumerate(self.transfer_to):
            check_value("task", t, f"transfer_to[{i}]")

    @classmethod
    def from_flat(cls, **kw: Any) -> SweepOptions:
        """``num_workers=2, early_stop="asha", baselines=(…)``: the keyword form of the Python API."""
        groups = {"resources": Resources, "early_stop": EarlyStop, "search": Search}
        parts: dict[str, dict] = {g: {} for g in groups}
        top = {}
        renames = {
            "early_stop": ("early_stop", "kind"),
            "early_stop_p": ("early_stop", "keep"),  # the Python API's older keyword
            "early_stop_keep": ("early_stop", "keep"),
            "search": ("search", "algorithm"),
            "num_samples": ("search", "num_samples"),
            "search_metric": ("search", "metric"),
        }
        for k, v in kw.items():
            if k in renames:
                g, name = renames[k]
                parts[g][name] = v
            elif k in {f.name for f in dataclasses.fields(Resources)}:
                parts["resources"][k] = dict(v) if k == "driver_resources" else v
            elif k in {f.name for f in dataclasses.fields(cls)}:
                top[k] = tuple(v) if k in ("baselines", "transfer_to") else v
            else:
                raise LtvlError(f"unknown sweep option {k!r}", where=k)
        return cls(**{g: groups[g](**parts[g]) for g in groups}, **top)
