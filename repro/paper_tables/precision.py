"""Training precision: Table 2's cells trained in fp32 and in bf16, side by side, so that the cpu scale trains in
bf16 (`train.precision=auto`: bf16 where the CPU computes it natively) only on measured evidence.

Per (paper row, task): each precision's median±std over seeds, the difference against the larger seed spread, the
time per optimizer step in each (and the speed-up where both ran on the same CPU), and the CPUs behind each. Claims
(conf/paper/precision_claims.yaml, the harness's adoption criterion): each method in bf16 on par with itself in fp32,
both ways; and whether Table 2's verdicts and cpu targets come out the same in each precision. Runs come from Table 2
(`make reproduce-glue ... train.precision=bf16`), not a sweep of their own: a bf16 run is the Table 2 run a bf16 CPU
makes, and Table 2 shows it in a row of its own (`[bf16]`)."""

from __future__ import annotations

import pandas as pd

from repro.cells import MISSING, fmt_cell
from repro.paper import paper_data
from repro.paper_tables.common import (BASELINE_LABEL, cells, decided, fmt_baseline, label, reproduced, row_claims,
                                       task_baseline_notes, with_rising)
from repro.paper_tables.lora_variants import with_costs
from repro.paper_tables.spec import Claims, Layout, PaperTable
from repro.paper_tables.table2 import PAPER, claims_per_precision, fp32_first, glue_runs
from repro.verdicts import FAILS, Rule, Verdict

NAME = "precision"
CLAIMS = "precision_claims"  # conf/paper/precision_claims.yaml
REFERENCE = "fp32"
COLUMNS = ["scale", "model", "paper_row", "task", "precision", "median", "std", "n", "rising", "step_ms", "cpus",
           "baseline"]


def precision_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 2's reproduced runs (no other variant than their precision) of the (scale, model, paper row) groups
    trained in more than one precision."""
    runs = reproduced(glue_runs(frame))
    if runs.empty:
        return runs
    runs = runs[runs["variant"] == runs["precision"].where(runs["precision"] != REFERENCE, "")]
    mixed = runs.groupby(["scale", "model", "paper_row"])["precision"].transform("nunique") > 1
    return runs[mixed]


def precision_long(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (scale, model, paper row, task, precision): median, std and count over seeds, how many runs were still
    rising, the median time per optimizer step and the CPUs the runs came from; fp32 first, tasks in the paper's
    order."""
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    runs = with_rising(with_costs(runs))
    grouped = runs.groupby(["scale", "model", "paper_row", "paper_task", "precision"], sort=False)
    long = grouped.agg(median=("value", "median"), std=("value", "std"), n=("seed", "nunique"),
                       rising=("rising", "sum"), step_ms=("step_ms", "median"),
                       cpus=("cpu", lambda c: "; ".join(sorted(set(c)))), baseline=("baseline", "median")
                       ).reset_index()
    long = long.rename(columns={"paper_task": "task"})[COLUMNS]
    paper = paper_data(PAPER)
    order = {"task": {t: i for i, t in enumerate(paper["tasks"])},
             "paper_row": {r: i for i, r in enumerate(paper["rows"])}}
    return long.sort_values(["scale", "model", "paper_row", "task", "precision"], kind="stable",
                            key=lambda c: (c.map(order[c.name]) if c.name in order else
                                           c.map(fp32_first) if c.name == "precision" else c)
                            ).reset_index(drop=True)


def _cell(c) -> str:
    return fmt_cell(c.median, c.std, c.n, None, rising=c.rising).removesuffix(f" / {MISSING}")


def precision_wide(long: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (scale, model): each task's trivial-baseline row, then one row per (paper row, task); per precision its
    cell and ms per step; per precision other than fp32 its difference from fp32, that difference over the larger
    of the two seed spreads, and the speed-up per step where both precisions ran on the same CPUs."""
    out = {}
    for (scale, model), part in long.groupby(["scale", "model"], sort=False):
        precisions = list(dict.fromkeys(part["precision"]))
        baselines = [{"row": BASELINE_LABEL, "task": task, **{p: fmt_baseline(baseline) for p in precisions}}
                     for task, baseline in part.groupby("task", sort=False)["baseline"].median().items()]
        rows = []
        for (row, task), group in part.groupby(["paper_row", "task"], sort=False):
            by = {c.precision: c for c in group.itertuples()}
            entry = {"row": row, "task": task}
            for p in precisions:
                entry[p] = _cell(by[p]) if p in by else MISSING
                entry[f"ms / step {p}"] = f"{by[p].step_ms:.0f}" if p in by else MISSING
            ref = by.get(REFERENCE)
            for p in precisions[1:]:
                other = by.get(p)
                if ref is None or other is None:
                    entry.update({f"{p} - {REFERENCE} (in stds)": MISSING, f"speed-up {p}": MISSING})
                    continue
                diff, spread = other.median - ref.median, max(s for s in (ref.std, other.std, 0.0) if s == s)
                entry[f"{p} - {REFERENCE} (in stds)"] = f"{diff:+.1f}" + (f" ({diff / spread:+.2f})" if spread else "")
                entry[f"speed-up {p}"] = (f"{ref.step_ms / other.step_ms:.2f}x" if ref.cpus == other.cpus
                                          else "other CPU")
            rows.append(entry)
        out[(scale, model)] = pd.DataFrame(baselines + rows, columns=list(rows[0])).fillna("")
    return out


def precision_notes(long: pd.DataFrame) -> list[str]:
    """Which CPU each precision's runs came from (a speed-up is only shown between runs of the same CPUs)."""
    lines = [f"- {p} runs: {'; '.join(sorted(set('; '.join(part['cpus']).split('; '))))}"
             for p, part in long.groupby("precision", sort=False)]
    return [*task_baseline_notes(long), "",
            "CPUs behind each precision (speed-up: time per optimizer step, fp32 over the other, same CPU only):",
            *lines]


def _word(verdict) -> str:
    """A verdict's word; an inconclusive one that would fail but for unconverged runs says so (its test gives
    fails, the convergence gate holds it back)."""
    if not isinstance(verdict, Verdict):
        return str(verdict).split(":")[0]
    return verdict.word + (" (would fail: unconverged runs)" if verdict.held_back else "")


def _outcome(verdict) -> str:
    """What a verdict's test gives: a verdict held back only by unconverged runs counts as fails."""
    return FAILS if isinstance(verdict, Verdict) and verdict.held_back else _word(verdict)


def table2_verdicts_move(runs: pd.DataFrame, rule: Rule) -> tuple[str, list[str]]:
    """Table 2's claims judged in each precision on these runs (Holm within each): the same words, or which moved.
    Claims not testable in every precision are left out."""
    precisions = sorted(set(runs["precision"]), key=fp32_first)
    judged_in: dict[str, dict[str, list]] = {}
    for p in precisions:
        for text, judged in decided(claims_per_precision(runs[runs["precision"] == p], rule), rule):
            judged_in.setdefault(text, {})[p] = judged
    testable = {t: w for t, w in judged_in.items()
                if len(w) == len(precisions) and "not testable" not in {_word(v) for vs in w.values() for v in vs}}
    text = ("Table 2's verdicts come out the same in every precision (a verdict held back only by unconverged runs "
            "counts as the verdict its test gives)")
    if not testable or len(precisions) < 2:
        return text, ["not testable: no Table 2 claim has runs in two precisions"]
    shown = "; ".join(f"{t}: " + " / ".join(f"{p} {', '.join(map(_word, w[p]))}" for p in precisions)
                      for t, w in testable.items())
    moved = [t for t, w in testable.items() if len({tuple(map(_outcome, vs)) for vs in w.values()}) > 1]
    return text, [f"{'fails' if moved else 'holds'}: {shown}" + (f" (moved: {len(moved)})" if moved else "")]


def targets_move(long: pd.DataFrame) -> tuple[str, list[str]]:
    """conf/paper/cpu_targets.yaml's targets, met or below, in each precision (cells with the targets' minimum
    seeds only): the same in every precision, or which moved."""
    spec = paper_data("cpu_targets")
    text = "Table 2's cpu targets are met or missed alike in every precision"
    part = long[(long["scale"] == spec["scale"]) & (long["n"] >= spec["min_seeds"])]
    states: dict[tuple[str, str], dict[str, str]] = {}
    for c in part.itertuples():
        if c.paper_row in spec["rows"] and c.task in spec["targets"]:
            target = spec["targets"][c.task]
            states.setdefault((c.paper_row, c.task), {})[c.precision] = (
                f"{c.median:.1f} {'met' if c.median >= target else 'below'}")
    compared = {k: v for k, v in states.items() if len(v) > 1}
    if not compared:
        return text, ["not testable: no target cell has enough seeds in two precisions"]
    moved = [k for k, v in compared.items() if len({s.split()[1] for s in v.values()}) > 1]
    shown = "; ".join(f"{row} {task} (target {spec['targets'][task]:g}): "
                      + " / ".join(f"{p} {s}" for p, s in v.items()) for (row, task), v in compared.items())
    return text, [f"{'fails' if moved else 'holds'}: {shown}" + (f" (moved: {len(moved)})" if moved else "")]


def precision_claims(runs: pd.DataFrame, rule: Rule) -> Claims:
    """Each method in one precision on par with itself in the other (conf/paper/precision_claims.yaml), then
    whether Table 2's verdicts and cpu targets move between precisions."""
    if runs.empty:
        return []
    by_key = cells(runs, ["paper_row", "precision"], task="paper_task", convergence=rule.convergence)

    def find(row: dict) -> tuple[str, dict | None]:
        return f"{row['paper_row']} [{row['precision']}]", by_key.get((row["paper_row"], row["precision"]))

    claims = [c for c in paper_data(CLAIMS)["claims"] if c["better"]["paper_row"] in set(runs["paper_row"])]
    return [*row_claims(claims, find, rule), table2_verdicts_move(runs, rule),
            targets_move(precision_long(runs))]


TABLE = PaperTable(
    name=NAME, title="Training precision: Table 2's cells in fp32 and in bf16",
    note="Rows: Table 2's paper rows trained in more than one precision (weights and optimizer states stay fp32; "
         "bf16 autocasts the forward pass and the loss). `(in stds)`: the difference of the medians over the larger "
         "of the two cells' spreads over seeds.",
    select=precision_runs, long=precision_long,
    layout=Layout(rows=("row", "task"), wide=precision_wide, columns=tuple(COLUMNS),
                  cell=lambda r: ((label(r["paper_row"]), label(r["task"])), label(r["precision"])),
                  run_keys=(("scale", "scale"), ("model", "model"), ("paper_row", "paper_row"),
                            ("task", "paper_task"), ("precision", "precision"))),
    notes=lambda long, tables: precision_notes(long), claims=precision_claims, cell_text="median±std [seeds]",
    after=("table2",), precisions=True)
