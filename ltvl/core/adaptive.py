"""The adaptive schedule: an IMP chain whose rounds are the tries of a search over its levels.

``schedule: adaptive`` keeps the geometric schedule's sparsities as *levels* and asks for the
highest level whose ticket keeps ``keep`` x the dense metric, in few trainings
(:func:`ltvl.core.level_search.next_level`): jumps of ``jump`` levels while tickets keep it,
bisection between the last good and the first bad level once one does not, and a ``start``
level (another seed's answer) that caps the jumps. Round r of such a chain is one try: the last
good level's trained weights pruned to the try's level, trained from θi, evaluated and judged.
Its record names its ``level``, its ``parent_level`` and whether it ``kept`` p, so the path is
lineage like any schedule's: :func:`ltvl.core.imp.run_chain` drives it, resumes it and reports
every try, and ``jump: 1`` draws exactly plain IMP's masks up to its first level below p.

A failed try is followed by a prune from the last *good* level, whose weights may belong to a
round long finished (or to a process that died): a kept try's trained weights are therefore
written to the chain store (``weights/<sha256>.safetensors``, atomically, before the round's
record names them). Imports neither Ray nor MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltvl.core.level_search import next_level, walk_level
from ltvl.pruning.schedule import Schedule


@dataclass
class AdaptiveSearch:
    """Where a chain's search stands: the highest level kept so far (``good``, 0 = the dense run)
    and the round that trained it, and the lowest level that fell below p (``bad``)."""

    n_levels: int
    jump: int
    keep: float
    start: int | None = None
    walk: bool = False  # masks_of_seed: walk one level at a time from start (ltvl.core.lead_masks)
    good: int = 0
    good_round: int = 0
    bad: int | None = None

    @classmethod
    def of(cls, schedule: Schedule, records: list[dict] = ()) -> AdaptiveSearch:
        """The search after the finished rounds ``records`` (round 0, the dense run, first)."""
        s = cls(len(schedule.sparsities()), schedule.jump, schedule.keep, schedule.start,
                schedule.masks_of_seed is not None)
        for rec in records:
            if rec["round"] > 0:
                s.add(rec["level"], rec["kept"], rec["round"])
        return s

    def first(self) -> int:
        """The first try's level (it is pruned from the dense run)."""
        level = self.next()
        assert level is not None  # n_levels >= 1: the first try always exists
        return level

    def kept(self, metric: float, dense_metric: float) -> bool:
        return metric >= self.keep * dense_metric

    def add(self, level: int, kept: bool, round_: int) -> None:
        if kept:
            self.good, self.good_round = level, round_
        else:
            self.bad = level if self.bad is None else min(self.bad, level)

    def next(self) -> int | None:
        """The next try's level, None once the answer is settled."""
        if self.walk:
            assert self.start is not None  # Schedule.validate: masks_of_seed needs a start level
            return walk_level(self.good, self.bad, self.n_levels, self.start)
        return next_level(self.good, self.bad, self.n_levels, self.jump, self.start)
