"""Is a ticket a ticket? A verdict on a pruned round against its dense run, its p-of-dense line,
random pruning at the same sparsity and the controls, each decided with the uncertainty of the
numbers it compares, so that an answer inside the noise says so instead of flipping between
machines.

Uncertainty: over several seeds, the standard error of the mean; with one seed, the binomial
standard error of an accuracy on ``n`` evaluated examples, sqrt(q(1-q)/n). Two numbers are
compared by the standard error of their difference, sqrt(se_a² + se_b²): this treats the two
evaluations as independent, which overstates the error of two models scored on the same questions
(their errors are correlated); without per-question scores it is the honest upper bound. A
difference counts only beyond ``Z`` standard errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z = 2.0  # standard errors a difference must exceed to count


@dataclass(frozen=True)
class Estimate:
    """A metric's mean over seeds and its standard error (nan when nothing says how noisy it is)."""

    mean: float
    se: float
    seeds: int

    @classmethod
    def of(cls, values: Sequence[float], n_eval: float | None = None) -> Estimate:
        vals = [float(v) for v in values if v == v]
        if not vals:
            return cls(float("nan"), float("nan"), 0)
        mean = sum(vals) / len(vals)
        if len(vals) > 1:
            var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
            return cls(mean, math.sqrt(var / len(vals)), len(vals))
        if n_eval and n_eval == n_eval and 0 <= mean <= 1:
            return cls(mean, math.sqrt(mean * (1 - mean) / n_eval), 1)
        return cls(mean, float("nan"), 1)


def gap(a: Estimate, b: Estimate, scale: float = 1.0) -> tuple[float, float]:
    """``a - scale·b`` and its standard error."""
    return a.mean - scale * b.mean, math.sqrt(a.se ** 2 + (scale * b.se) ** 2)


def clearly_above(diff: float, se: float) -> bool:
    return diff > Z * se if se == se else diff > 0


def clearly_below(diff: float, se: float) -> bool:
    return diff < -Z * se if se == se else diff < 0


@dataclass(frozen=True)
class Verdict:
    sparsity: float
    ticket: Estimate
    dense: Estimate
    p: float
    to_dense: tuple[float, float]  # ticket - dense, and its standard error
    to_line: tuple[float, float]  # ticket - p·dense, and its standard error
    to_random: tuple[float, float] | None  # ticket - random pruning at this sparsity
    to_control: tuple[float, float] | None  # ticket - the best control

    @property
    def matching(self) -> bool:
        """Not below dense beyond noise (a matching ticket, in the paper's words)."""
        return not clearly_below(*self.to_dense)

    @property
    def relaxed(self) -> bool:
        """Keeps p of dense (a relaxed winning ticket)."""
        return self.to_line[0] >= 0

    @property
    def near_line(self) -> bool:
        """Within noise of the p line: the relaxed verdict could go either way."""
        return not clearly_above(*self.to_line) and not clearly_below(*self.to_line)

    @property
    def beats_random(self) -> bool | None:
        return None if self.to_random is None else clearly_above(*self.to_random)

    @property
    def above_controls(self) -> bool | None:
        return None if self.to_control is None else clearly_above(*self.to_control)

    def words(self) -> list[str]:
        """What the ticket is, most serious first: below a control, no better than random pruning,
        then matching / relaxed / below p of dense, and whether that sits within noise of the line."""
        out = []
        if self.above_controls is False:
            out.append("below a control")
        if self.beats_random is False:
            out.append("no better than random pruning")
        out.append("matching" if self.matching else "relaxed" if self.relaxed else f"below {self.p:.0%} of dense")
        if self.near_line:
            out.append(f"within noise of the {self.p:.0%} line")
        return out

    def label(self) -> str:
        d, se = self.to_dense
        noise = f" ± {Z * se * 100:.1f}" if se == se else ""
        return f"{', '.join(self.words())} ({d * 100:+.1f}{noise} pts vs dense)"


def verdict(sparsity: float, ticket: Estimate, dense: Estimate, p: float, random: Estimate | None = None,
            controls: Sequence[Estimate] = ()) -> Verdict:
    best = max((c for c in controls if c.mean == c.mean), key=lambda c: c.mean, default=None)
    return Verdict(sparsity, ticket, dense, p, gap(ticket, dense), gap(ticket, dense, p),
                   gap(ticket, random) if random is not None and random.mean == random.mean else None,
                   gap(ticket, best) if best is not None else None)


def plausible_answers(rounds: Sequence[tuple[float, Estimate]], dense: Estimate, p: float) -> tuple[float, float]:
    """The range the answer "sparsest round keeping p of dense" could take within noise: from the
    sparsest round clearly above the line (0, the dense run, when none is) to the sparsest round
    not clearly below it (``rounds``: (sparsity, metric) of the pruned rounds)."""
    low, high = 0.0, 0.0
    for s, est in rounds:
        d, se = gap(est, dense, p)
        if clearly_above(d, se):
            low = max(low, s)
        if not clearly_below(d, se):
            high = max(high, s)
    return low, max(low, high)
