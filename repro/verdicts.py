"""Verdicts on the paper's claims that decide: holds, fails or inconclusive (with its reason, and the seeds that
would decide it).

Rule v2, its numbers in conf/paper/verdict_rule.yaml (`rule`), printed under every table with claims:

1. Per task first, in the metric's own units, on per-seed values. A task where *both* methods are at chance
   (median - trivial baseline <= k_std x std over seeds) is "not informative": reported with its numbers, left out
   (as is a task whose runs stored no baseline, or with fewer than `min_seeds` seeds).
   A task where one method beats chance and the other does not is evidence of a difference and counts like any
   other: the gate never drops the task on which the method under test failed.
2. Pooled over the counted tasks by a stratified permutation test: the statistic is the sum over tasks of Welch's
   t of (A + margin) - B (each method's std over seeds at least `std_floor`), so each task speaks in units of its
   own seed spread and one noisy metric cannot drown the others. Seeds are permuted within each task only and the
   statistic is computed again for every arrangement (an exact test); every arrangement is enumerated when there
   are at most `test.exact_max`, otherwise `test.draws` are drawn (seeded). A claim "A - B > -margin" gets two
   one-sided p-values: p_holds (H0: A - B <= -margin) and p_fails (H0: A - B >= -margin).
3. Multiplicity: Holm over the statistical claims of one table (family-wise error `alpha` per side).
4. Convergence: a run converged when its last `convergence.patience` epochs raised its best dev metric by at most
   `convergence.min_delta` points (a plateau; 0: not at all). A claim can only fail on converged runs of the
   method it is about; otherwise it is inconclusive ("A still improving at its last epoch in 2/3 seeds").
5. Power: an inconclusive verdict prints the seeds per method that would decide it at `power.target` power, from
   the observed standardised effect (normal approximation), or says that no number of seeds up to the cap would.

Non-inferiority ("on par": margin > 0) and superiority (margin 0) claims use the same machinery; each verdict says
which it is. Pure numpy (scipy's normal quantile only for the power figure).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from repro.paper import paper_data

RULE_FILE = "verdict_rule"  # conf/paper/verdict_rule.yaml
HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
TEST_METHODS = ("stratified_permutation",)


@dataclass(frozen=True)
class Cell:
    """One method on one task: the main metric of each run (one per seed, 0-100 scale), the task's trivial
    baseline on the same scale (None when the runs did not store it), and per run whether it converged (None for a
    run that does not say)."""

    values: tuple[float, ...]
    baseline: float | None = None
    converged: tuple[bool | None, ...] | None = None
    run_ids: tuple[str, ...] = ()  # the runs behind the values (to add seeds to this cell: repro.decide)

    def __post_init__(self):
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if self.baseline is not None and math.isnan(self.baseline):
            object.__setattr__(self, "baseline", None)
        if self.converged is not None:
            object.__setattr__(self, "converged", tuple(None if c is None else bool(c) for c in self.converged))

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

    def at_chance(self, k_std: float) -> bool | None:
        """Whether the cell does not beat its trivial baseline by more than k_std x its spread; None without a
        baseline or spread."""
        if self.baseline is None or self.n < 2:
            return None
        return not self.median - self.baseline > k_std * self.std

    @property
    def unconverged(self) -> int:
        """Runs known to be still improving at their last epoch (unknown ones, None, are not counted)."""
        return 0 if self.converged is None else sum(c is False for c in self.converged)


@dataclass(frozen=True)
class Convergence:
    """When a run has stopped improving: its last `patience` epochs raised the best dev metric by at most
    `min_delta` points. A linear schedule that decays to zero makes the last epoch's gain small but rarely zero, so
    a plateau needs a tolerance; the rule's is the seed-spread floor (std_floor) unless it says otherwise."""

    patience: int
    min_delta: float = 0.0

    def __call__(self, curve: Sequence[float] | None, epochs_run: int | None, best_epoch: int | None) -> bool | None:
        """Whether a run converged, from its per-epoch main metric (points) where known, else from its best epoch
        (first epoch of the maximum) and epoch count; None when the run says neither."""
        if curve is not None and len(curve) and all(v is not None and not math.isnan(v) for v in curve):
            if len(curve) <= self.patience:
                return False
            return max(curve[-self.patience:]) <= max(curve[:-self.patience]) + self.min_delta
        if best_epoch is None or not epochs_run or math.isnan(best_epoch):
            return None
        return int(epochs_run) - int(best_epoch) >= self.patience


@dataclass(frozen=True)
class Rule:
    k_std: float
    min_seeds: int
    alpha: float
    exact_max: int
    draws: int
    test_seed: int
    std_floor: float
    convergence: Convergence
    power_target: float
    seed_cap: int
    method: str = "stratified_permutation"

    def __post_init__(self):
        if self.min_seeds < 2:
            raise ValueError("verdict rule: min_seeds must be at least 2 (one seed has no spread)")
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"verdict rule: alpha must be in (0, 0.5), got {self.alpha}")
        if not 0 < self.power_target < 1:
            raise ValueError(f"verdict rule: power.target must be in (0, 1), got {self.power_target}")
        if (self.k_std < 0 or self.std_floor <= 0 or self.convergence.patience < 1 or self.convergence.min_delta < 0
                or self.draws < 1 or self.exact_max < 1):
            raise ValueError("verdict rule: k_std >= 0, std_floor > 0, convergence.patience >= 1, convergence.min_delta "
                             ">= 0, test.draws >= 1 and test.exact_max >= 1 are required")
        if self.method not in TEST_METHODS:
            raise ValueError(f"verdict rule: test.method must be one of {TEST_METHODS}, got {self.method}")

    @classmethod
    def from_config(cls, cfg: Mapping) -> "Rule":
        test, power = cfg["test"], cfg["power"]
        return cls(k_std=float(cfg["k_std"]), min_seeds=int(cfg["min_seeds"]), alpha=float(cfg["alpha"]),
                   exact_max=int(test["exact_max"]), draws=int(test["draws"]), test_seed=int(test["seed"]),
                   std_floor=float(cfg["std_floor"]),
                   convergence=Convergence(int(cfg["convergence"]["patience"]),
                                           float(cfg["convergence"].get("min_delta", 0.0))),
                   power_target=float(power["target"]), seed_cap=int(power["seed_cap"]),
                   method=str(test.get("method", "stratified_permutation")))

    def text(self) -> str:
        """The rule with its numbers, as printed under the tables."""
        return (f"Verdict rule v2 (conf/paper/{RULE_FILE}.yaml): per task, a method is at chance when its median "
                f"is not above the trivial baseline by more than {self.k_std:g} x its std over seeds; a task where "
                f"both methods are at chance is not informative (left out, shown), a task where one is and the "
                f"other is not counts like any other. Tasks need {self.min_seeds}+ seeds per method. Over the "
                f"counted tasks, a stratified permutation test (seeds permuted within each task; exact up to "
                f"{self.exact_max:,} arrangements, else {self.draws:,} seeded draws) of the sum over tasks of Welch's t "
                f"of (A + margin) - B (each method's std at least {self.std_floor:g} points) gives one-sided p-values for holds and for fails; Holm's correction "
                f"over the table's claims at family-wise {self.alpha:g} per side. A claim can fail only on "
                f"converged runs of the method it is about (its last {self.convergence.patience} epoch(s) raised its "
                f"best dev metric by at most {self.convergence.min_delta:g} points). An inconclusive verdict gives the seeds per method that would decide it "
                f"at {self.power_target:.0%} power (cap {self.seed_cap}).")


def load_rule() -> Rule:
    return Rule.from_config(paper_data(RULE_FILE)["rule"])


@dataclass
class Verdict:
    word: str                        # holds | fails | inconclusive
    reason: str                      # the comparison's numbers, or why it is inconclusive
    difference: float | None = None  # mean over counted tasks of mean(A) - mean(B), points (for display)
    p_holds: float | None = None     # one-sided, before Holm
    p_fails: float | None = None
    counted: list[str] = field(default_factory=list)
    not_counted: dict[str, str] = field(default_factory=dict)  # task -> why it does not count (tasks in order)
    blocked: str = ""                # why the claim cannot fail (unconverged runs of A), or ""
    effect: float | None = None      # mean over tasks of (mean A + margin - mean B) / s_t
    seeds_needed: int | None = None  # per method, at the rule's power; None when not computed
    kind: str = ""                   # non-inferiority | superiority
    suffix: str = ""                 # appended to the printed line (e.g. the adapter's parameter ratio)
    cells: tuple[Cell, ...] = ()     # the counted cells of both methods (their runs get the seeds that decide)
    held_back: bool = False          # decided: inconclusive only because `blocked` stops a fail its test gives

    @property
    def statistical(self) -> bool:
        return self.p_holds is not None

    def __str__(self) -> str:
        return f"{self.word}: {self.reason}{self.suffix}"


def _pts(value: float) -> str:
    return f"{value:+.1f}"


def _p(value: float) -> str:
    return f"{value:.2g}" if value >= 0.001 else "<0.001"


def describe_not_counted(not_counted: Mapping[str, str]) -> str:
    """`task: why` for each task left out, tasks with the same reason named together ("CoLA, RTE: ...")."""
    by_reason: dict[str, list[str]] = {}
    for task, why in not_counted.items():
        by_reason.setdefault(why, []).append(task)
    return "; ".join(f"{', '.join(tasks)}: {why}" for why, tasks in by_reason.items())


def task_exclusion(cells: Mapping[str, Cell], rule: Rule) -> str | None:
    """None when a task counts for a comparison of these methods (name -> their cell on the task); otherwise why
    not: no stored baseline, too few seeds, or every method at chance ("not informative")."""
    no_baseline = [name for name, cell in cells.items() if cell.baseline is None]
    if no_baseline:  # whether the task is informative cannot be told
        return f"no trivial baseline stored for {', '.join(no_baseline)} (runs made before result.json recorded it)"
    few = [(name, cell.n) for name, cell in cells.items() if cell.n < rule.min_seeds]
    if few:
        return ", ".join(f"only {n} seed{'s' if n != 1 else ''} ({name})" for name, n in few) + \
            f", the rule needs {rule.min_seeds}"
    if all(cell.at_chance(rule.k_std) for cell in cells.values()):
        described = ", ".join(f"{name} {c.median:.1f}±{c.std:.1f}" for name, c in cells.items())
        base = next(iter(cells.values())).baseline
        return f"not informative: every method at chance ({described} vs baseline {base:.1f})"
    return None


def _splits(n_a: int, n: int) -> np.ndarray:
    """Every way to choose which n_a of n pooled runs are labelled A: a boolean matrix (arrangements x n)."""
    out = np.zeros((math.comb(n, n_a), n), dtype=bool)
    for i, idx in enumerate(itertools.combinations(range(n), n_a)):
        out[i, list(idx)] = True
    return out


def _task_stats(pooled: np.ndarray, n_a: int, masks: np.ndarray, floor: float) -> np.ndarray:
    """Welch's t of A - B for each arrangement in `masks` (rows: which of the pooled runs are A); each method's std
    over seeds is at least `floor` (a method with constant values would otherwise give an infinite t)."""
    n_b = len(pooled) - n_a
    sum_a, sq_a = masks @ pooled, masks @ pooled**2
    sum_b, sq_b = pooled.sum() - sum_a, (pooled**2).sum() - sq_a
    mean_a, mean_b = sum_a / n_a, sum_b / n_b
    var_a = np.maximum((sq_a - n_a * mean_a**2) / (n_a - 1), floor**2)
    var_b = np.maximum((sq_b - n_b * mean_b**2) / (n_b - 1), floor**2)
    return (mean_a - mean_b) / np.sqrt(var_a / n_a + var_b / n_b)


def permutation_pvalues(pairs: Sequence[tuple[Sequence[float], Sequence[float]]], margin: float, rule: Rule
                        ) -> tuple[float, float, list[float]]:
    """One-sided p-values of the stratified permutation test of "A + margin > B" (p_holds) and "A + margin < B"
    (p_fails) over tasks (per task (A's values, B's values)), and per task the pooled std over seeds within the two
    methods (floored), which standardises the effect. The statistic, the sum over tasks of Welch's t, is computed
    again for every arrangement, so the test is exact whatever the spreads."""
    data = [(np.concatenate([np.asarray(a, float) + margin, np.asarray(b, float)]), len(a)) for a, b in pairs]
    first = [np.arange(len(p)) < n_a for p, n_a in data]  # the observed arrangement: A's runs first
    observed = float(sum(_task_stats(p, n_a, m[None, :], rule.std_floor)[0] for (p, n_a), m in zip(data, first)))
    spreads = [math.sqrt(max((np.var(p[:n_a], ddof=1) + np.var(p[n_a:], ddof=1)) / 2, rule.std_floor**2))
               for p, n_a in data]
    sizes = [math.comb(len(p), n_a) for p, n_a in data]
    eps = 1e-9 * max(1.0, abs(observed))
    if math.prod(sizes) <= rule.exact_max:
        total = np.zeros(1)
        for p, n_a in data:  # the distribution of the sum: every combination of per-task arrangements
            total = (total[:, None] + _task_stats(p, n_a, _splits(n_a, len(p)), rule.std_floor)[None, :]).ravel()
        return float(np.mean(total >= observed - eps)), float(np.mean(total <= observed + eps)), spreads
    rng = np.random.default_rng(rule.test_seed)
    total = np.zeros(rule.draws)
    for p, n_a in data:
        order = np.argsort(rng.random((rule.draws, len(p))), axis=1)
        masks = np.zeros((rule.draws, len(p)), dtype=bool)
        np.put_along_axis(masks, order[:, :n_a], True, axis=1)
        total += _task_stats(p, n_a, masks, rule.std_floor)
    hi, lo = int(np.sum(total >= observed - eps)), int(np.sum(total <= observed + eps))
    return (1 + hi) / (1 + rule.draws), (1 + lo) / (1 + rule.draws), spreads


def seeds_to_decide(effect: float, tasks: int, alpha: float, rule: Rule, have: int = 0) -> int | None:
    """Seeds per method at which the test would decide at the rule's power: each task's t is about
    (d_t + margin) / (s_t sqrt(2 / n)), so their sum over tasks, divided by sqrt(tasks), is about
    effect * sqrt(tasks * n / 2), which must reach z_(1-alpha) + z_power (normal approximation). Never fewer than
    the exact test needs to reach `alpha` at all (its smallest p-value is 1 / C(2n, n)^tasks: one task at 3 vs 3
    seeds cannot go below 0.05), nor than `have` + 1 (the seeds per method that left it undecided). None when the
    observed effect is zero (no number of seeds decides a difference that sits at the tolerance)."""
    if not effect or not math.isfinite(effect):
        return None
    from scipy.stats import norm  # here: scipy takes a while to import

    z = float(norm.ppf(1 - alpha) + norm.ppf(rule.power_target))
    resolvable = next(n for n in itertools.count(rule.min_seeds) if math.comb(2 * n, n) ** tasks * alpha >= 1)
    return max(rule.min_seeds, math.ceil(2 * z**2 / (tasks * effect**2)), resolvable, have + 1)


def still_improving(cells: Mapping[str, Cell], tasks: Sequence[str]) -> str:
    """"2/3 seeds on SST-2, 1/3 seeds on RTE": the tasks where some runs were still improving at their last
    epoch, or "" where none was."""
    return ", ".join(f"{cells[t].unconverged}/{cells[t].n} seeds on {t}" for t in tasks if cells[t].unconverged)


def compare(a_name: str, a: Mapping[str, Cell], b_name: str, b: Mapping[str, Cell], tolerance: float,
            rule: Rule) -> Verdict:
    """Judge the claim "A - B > tolerance" (points; tolerance <= 0) on the tasks both have, before the table's
    multiplicity correction (`decide` applies it): the verdict carries both p-values, the convergence block and
    the standardised effect. Use `decide([verdict], rule)` for a claim judged alone."""
    margin = 0.0 - tolerance  # never -0.0
    kind = "non-inferiority" if margin > 0 else "superiority"
    tasks = [t for t in a if t in b]
    if not tasks:
        return Verdict(INCONCLUSIVE, f"{a_name} and {b_name} share no task", kind=kind)
    not_counted = {t: why for t in tasks if (why := task_exclusion({a_name: a[t], b_name: b[t]}, rule))}
    counted = [t for t in tasks if t not in not_counted]
    if not counted:
        return Verdict(INCONCLUSIVE, f"{a_name} vs {b_name}: no task counts: {describe_not_counted(not_counted)}",
                       counted=counted, not_counted=not_counted, kind=kind)
    pairs = [(a[t].values, b[t].values) for t in counted]
    p_holds, p_fails, spreads = permutation_pvalues(pairs, margin, rule)
    diffs = [a[t].mean - b[t].mean for t in counted]
    effect = float(np.mean([(d + margin) / w for d, w in zip(diffs, spreads)]))
    per_task = ", ".join(f"{t} {_pts(d)}" for t, d in zip(counted, diffs))
    chance = [f"{name} at chance on {t}" for t in counted for name, cell in ((a_name, a[t]), (b_name, b[t]))
              if cell.at_chance(rule.k_std)]
    reason = (f"{a_name} - {b_name} = {_pts(float(np.mean(diffs)))} points on {len(counted)} task(s) ({per_task}); "
              f"{kind} with margin {margin:g}: p_holds {_p(p_holds)}, p_fails {_p(p_fails)}")
    if chance:
        reason += f" ({'; '.join(chance)}: counted as a difference)"
    blocked = still_improving(a, counted)
    blocked = f"{a_name} still improving at its last epoch in {blocked}" if blocked else ""
    if b_rising := still_improving(b, counted):
        reason += f"; {b_name} still improving in {b_rising}"
    if not_counted:
        reason += f"; not counted: {describe_not_counted(not_counted)}"
    return Verdict(INCONCLUSIVE, reason, float(np.mean(diffs)), p_holds, p_fails, counted, not_counted, blocked,
                   effect, kind=kind, cells=tuple(c[t] for t in counted for c in (a, b)))


def holm(pvalues: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise error `alpha`."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    rejected = [False] * len(pvalues)
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (len(pvalues) - rank):
            break
        rejected[i] = True
    return rejected


def decide(verdicts: Sequence[Verdict], rule: Rule) -> list[Verdict]:
    """The final words of one table's claims: Holm over the statistical verdicts' p-values (each side its own
    family), the convergence block on fails, and the seeds that would decide what stays inconclusive."""
    stats = [v for v in verdicts if v.statistical]
    k = len(stats)
    holds = dict(zip(map(id, stats), holm([v.p_holds for v in stats], rule.alpha)))
    fails = dict(zip(map(id, stats), holm([v.p_fails for v in stats], rule.alpha)))
    out = []
    for v in verdicts:
        if not v.statistical:
            out.append(v)
            continue
        word, reason = INCONCLUSIVE, v.reason + (f"; Holm over {k} claims" if k > 1 else "")
        would_fail = fails[id(v)] and not holds[id(v)]
        if holds[id(v)]:
            word = HOLDS
        elif would_fail and not v.blocked:
            word = FAILS
        elif v.blocked:
            reason += f"; {'would fail, but ' if would_fail else ''}{v.blocked}"
        seeds = None
        if word == INCONCLUSIVE and not would_fail:
            have = min((c.n for c in v.cells), default=0)
            seeds = seeds_to_decide(v.effect, len(v.counted), rule.alpha / max(k, 1), rule, have)
            reason += ("; no number of seeds decides it (effect 0)" if seeds is None else
                       f"; ~{seeds} seeds per method would decide it at {rule.power_target:.0%} power" +
                       (f" (over the cap of {rule.seed_cap})" if seeds > rule.seed_cap else ""))
        out.append(replace(v, word=word, reason=reason, seeds_needed=seeds,
                           held_back=word == INCONCLUSIVE and would_fail and bool(v.blocked)))
    return out


def tolerance_from_gap(max_gap_points: float) -> float:
    """The threshold on A - B of a claim "A at most max_gap_points below B" (0.0, never -0.0, for no gap)."""
    return 0.0 - float(max_gap_points)
