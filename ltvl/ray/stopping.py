"""Early stopping on rounds: a chain's IMP curve only falls once it drops below its dense metric."""

from __future__ import annotations

from ray import tune

from ltvl.plan.options import EarlyStop
from ltvl.util.errors import LtvlError


class BelowDenseStopper(tune.Stopper):
    """Drop a chain once a pruned round keeps less than ``p`` of its dense metric, after
    ``grace_rounds`` pruned rounds."""

    def __init__(self, p: float, grace_rounds: int = 1):
        if not 0 < p <= 1:
            raise LtvlError(f"early-stop fraction {p} outside (0, 1]", where="early_stop.keep", fix="e.g. 0.9")
        self.p, self.grace = p, grace_rounds

    def __call__(self, trial_id: str, result: dict) -> bool:
        if "kept" in result:  # schedule: adaptive: a try below p narrows the search; the chain stops itself
            return False
        r = result.get("round", 0)
        return r >= self.grace and result.get("dense_ratio", 1.0) < self.p

    def stop_all(self) -> bool:
        return False


def check_early_stop(es: EarlyStop, points: list[dict]) -> None:
    """ASHA compares chains round by round; an adaptive chain's rounds are tries at different levels."""
    if es.kind == "asha" and any(p.get("schedule") == "adaptive" for p in points):
        raise LtvlError("early_stop: asha compares chains round by round, but an adaptive chain's rounds are tries "
                        "at different levels", where="early_stop.kind",
                        fix="use early_stop: off (the adaptive schedule stops itself) or a geometric schedule")


def early_stop_config(es: EarlyStop) -> dict:
    """TuneConfig/RunConfig pieces for an early-stop choice (``stop`` goes to the RunConfig)."""
    if es.kind == "below_dense":
        return {"stop": BelowDenseStopper(es.keep)}
    if es.kind == "asha":
        from ray.tune.schedulers import ASHAScheduler
        return {"scheduler": ASHAScheduler(time_attr="round", metric="dense_ratio", mode="max", max_t=64,
                                           grace_period=1)}
    return {}
