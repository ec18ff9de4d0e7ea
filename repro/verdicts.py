"""Verdicts on the paper's claims that can say no and don't know: holds, fails or inconclusive (with its reason).

A number we print is a claim about the paper only when it is compared with its trivial baseline and its spread over
seeds. The rule, with its numbers in conf/paper/verdict_rule.yaml (`rule`), printed under every table with claims:

1. A task counts for a comparison of methods A and B only when each of them has at least `min_seeds` seeds and
   beats the task's trivial baseline by more than `k_std` standard deviations over seeds
   (median - baseline > k_std * std). A task whose runs did not store a baseline does not count.
2. Over the counted tasks (at least `min_tasks`), the difference A - B (per task the difference of the means over
   seeds, averaged over the tasks) gets a two-sided Welch t-interval at `interval.level`.
3. A claim "A - B > tolerance" holds when the whole interval is above the tolerance, fails when the whole interval is
   below it, and is inconclusive otherwise; an inconclusive verdict names its reason (no task counts and why, or
   the interval straddling the tolerance).

Pure numpy; scipy (for the t quantile) is imported only when an interval is computed, so importing this module
stays cheap (repro.tables is imported by quick CLIs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from repro.paper import paper_data

RULE_FILE = "verdict_rule"  # conf/paper/verdict_rule.yaml
HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
INTERVAL_METHODS = ("welch_t",)


@dataclass(frozen=True)
class Cell:
    """One method on one task: the main metric of each run (one per seed, 0-100 scale) and the task's trivial
    baseline on the same scale (None when the runs did not store it)."""

    values: tuple[float, ...]
    baseline: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if self.baseline is not None and math.isnan(self.baseline):
            object.__setattr__(self, "baseline", None)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return float(np.median(self.values)) if self.values else math.nan

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        """Standard deviation over seeds (ddof 1); NaN for fewer than two."""
        return float(np.std(self.values, ddof=1)) if self.n > 1 else math.nan


@dataclass(frozen=True)
class Rule:
    k_std: float
    min_seeds: int
    min_tasks: int
    level: float
    method: str = "welch_t"

    def __post_init__(self):
        if self.min_seeds < 2:
            raise ValueError("verdict rule: min_seeds must be at least 2 (one seed has no spread)")
        if not 0 < self.level < 1:
            raise ValueError(f"verdict rule: interval.level must be in (0, 1), got {self.level}")
        if self.k_std < 0 or self.min_tasks < 1:
            raise ValueError("verdict rule: k_std must be >= 0 and min_tasks >= 1")
        if self.method not in INTERVAL_METHODS:
            raise ValueError(f"verdict rule: interval.method must be one of {INTERVAL_METHODS}, got {self.method}")

    @classmethod
    def from_config(cls, cfg: Mapping) -> "Rule":
        interval = cfg["interval"]
        return cls(k_std=float(cfg["k_std"]), min_seeds=int(cfg["min_seeds"]), min_tasks=int(cfg["min_tasks"]),
                   level=float(interval["level"]), method=str(interval.get("method", "welch_t")))

    def text(self) -> str:
        """The rule with its numbers, as printed under the tables."""
        return (f"Verdict rule (conf/paper/{RULE_FILE}.yaml): a task counts for a comparison only when each of the "
                f"two compared methods has at least {self.min_seeds} seeds and beats the task's trivial baseline by "
                f"more than {self.k_std:g} x its standard deviation over seeds (median - baseline > "
                f"{self.k_std:g} x std); tasks without a stored baseline do not count. Over the counted tasks (at "
                f"least {self.min_tasks}), the difference of the two methods (per task the difference of the means "
                f"over seeds, averaged over the tasks) gets a two-sided {self.level:.0%} Welch t-interval over "
                f"seeds. A claim holds when the whole interval is on the claim's side of its tolerance, fails when "
                f"the whole interval is on the other side, and is inconclusive otherwise (reason given).")


def load_rule() -> Rule:
    return Rule.from_config(paper_data(RULE_FILE)["rule"])


@dataclass
class Verdict:
    word: str                        # holds | fails | inconclusive
    reason: str                      # the comparison's numbers, or why it is inconclusive
    difference: float | None = None  # A - B, points
    interval: tuple[float, float] | None = None
    counted: list[str] = field(default_factory=list)
    not_counted: dict[str, str] = field(default_factory=dict)  # task -> why it does not count (tasks in order)

    def __str__(self) -> str:
        return f"{self.word}: {self.reason}"


def _pts(value: float) -> str:
    return f"{value:+.1f}"


def task_exclusion(cells: Mapping[str, Cell], rule: Rule) -> str | None:
    """None when a task counts for a comparison of these methods (name -> their cell on the task); otherwise why
    not."""
    no_baseline = [name for name, cell in cells.items() if cell.baseline is None]
    if no_baseline:
        return f"no trivial baseline stored for {', '.join(no_baseline)} (runs made before result.json recorded it)"
    few = [(name, cell.n) for name, cell in cells.items() if cell.n < rule.min_seeds]
    if few:
        return ", ".join(f"only {n} seed{'s' if n != 1 else ''} ({name})" for name, n in few) + \
            f", the rule needs {rule.min_seeds}"
    below = {name: cell for name, cell in cells.items()
             if not cell.median - cell.baseline > rule.k_std * cell.std}
    if not below:
        return None
    described = ", ".join(f"{name} {c.median:.1f}±{c.std:.1f} vs baseline {c.baseline:.1f}"
                          for name, c in below.items())
    who = "no method" if len(below) == len(cells) else " and ".join(below) + " not"
    return f"{who} above the trivial baseline by more than {rule.k_std:g} x std ({described})"


def describe_not_counted(not_counted: Mapping[str, str]) -> str:
    """`task: why` for each task left out, tasks with the same reason named together ("CoLA, RTE: ...")."""
    by_reason: dict[str, list[str]] = {}
    for task, why in not_counted.items():
        by_reason.setdefault(why, []).append(task)
    return "; ".join(f"{', '.join(tasks)}: {why}" for why, tasks in by_reason.items())


def welch_interval(pairs: Sequence[tuple[Sequence[float], Sequence[float]]], level: float
                   ) -> tuple[float, float, float]:
    """Mean over tasks of (mean(a) - mean(b)) and its two-sided Welch t-interval at `level`: per-task variances of
    the means (s^2 / n, ddof 1), Welch-Satterthwaite degrees of freedom. Every sample needs two values or more."""
    k = len(pairs)
    diff = sum(np.mean(a) - np.mean(b) for a, b in pairs) / k
    parts = [(np.var(x, ddof=1) / len(x) / k**2, len(x) - 1) for a, b in pairs for x in (a, b)]
    var = sum(v for v, _ in parts)
    if var <= 0:  # no spread at all: the interval is the point
        return float(diff), float(diff), float(diff)
    df = var**2 / sum(v**2 / d for v, d in parts if v > 0)
    from scipy.stats import t  # here, not at the top: scipy takes a while to import

    half = float(t.ppf(0.5 + level / 2, df)) * math.sqrt(var)
    return float(diff), float(diff - half), float(diff + half)


def compare(a_name: str, a: Mapping[str, Cell], b_name: str, b: Mapping[str, Cell], tolerance: float,
            rule: Rule) -> Verdict:
    """Judge the claim "A - B > tolerance" (points) on the tasks both have (per task a Cell of each)."""
    tasks = [t for t in a if t in b]
    if not tasks:
        return Verdict(INCONCLUSIVE, f"{a_name} and {b_name} share no task")
    not_counted = {t: why for t in tasks if (why := task_exclusion({a_name: a[t], b_name: b[t]}, rule))}
    counted = [t for t in tasks if t not in not_counted]
    if len(counted) < rule.min_tasks:
        head = "no task counts" if not counted else \
            f"only {len(counted)} task(s) count ({', '.join(counted)}), the rule needs {rule.min_tasks}"
        return Verdict(INCONCLUSIVE, f"{a_name} vs {b_name}: {head}: {describe_not_counted(not_counted)}",
                       counted=counted, not_counted=not_counted)
    diff, lo, hi = welch_interval([(a[t].values, b[t].values) for t in counted], rule.level)
    if lo > tolerance:
        word, relation = HOLDS, "above"
    elif hi < tolerance:
        word, relation = FAILS, "below"
    else:
        word, relation = INCONCLUSIVE, "straddles"
    reason = (f"{a_name} - {b_name} = {_pts(diff)} points on {len(counted)} counted task(s) ({', '.join(counted)}), "
              f"{rule.level:.0%} interval [{_pts(lo)}, {_pts(hi)}] {relation} the tolerance {_pts(tolerance)}")
    if not_counted:
        reason += f"; not counted: {describe_not_counted(not_counted)}"
    return Verdict(word, reason, diff, (lo, hi), counted, not_counted)


def tolerance_from_gap(max_gap_points: float) -> float:
    """The threshold on A - B of a claim "A at most max_gap_points below B" (0.0, never -0.0, for no gap)."""
    return 0.0 - float(max_gap_points)
