"""Table 2 (GLUE): one row per paper row (method and size, the experiment's `paper_row`), one column per GLUE task,
the trivial-baseline row on top, cpu-scale targets and the claims of conf/paper/table2_claims.yaml under it.

Runs map to the paper by what they computed, not by model: at cpu scale the embedded MiniLM stands in for RoBERTa,
and each section's header names the model and scale behind its numbers. An imported checkpoint (repro.evaluate)
gets a row of its own beside the reproduced row of the same paper row."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import pandas as pd

from repro.cells import MISSING, fmt_cell
from repro.paper import paper_data
from repro.paper_tables.common import (BASELINE_LABEL, aggregate, baseline_notes, cells, fmt_baseline, label,
                                       reproduced)
from repro.paper_tables.learning_curve import curve_files
from repro.paper_tables.spec import Claims, Judged, Layout, PaperTable
from repro.verdicts import Cell, Convergence, Rule, compare, load_rule, tolerance_from_gap

NAME = "table2"
PAPER = "table2_glue"  # conf/paper/table2_glue.yaml
COLUMNS = ("scale", "model", "paper_row", "variant", "task", "median", "std", "n_seeds", "trainable", "paper",
           "paper_pm", "paper_params", "diff", "baseline")


def glue_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs of a Table 2 experiment (a `paper_row`) on one of its GLUE tasks."""
    if frame.empty:
        return frame
    return frame[frame["paper_row"].notna() & frame["paper_task"].isin(paper_data(PAPER)["tasks"])]


def table2_long(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (scale, model, paper row, variant, task) with every paper cell present (missing ones NaN)."""
    paper = paper_data(PAPER)
    runs = frame[frame["paper_row"].notna()] if not frame.empty else frame
    agg = aggregate(runs, ["scale", "model", "paper_row", "variant", "paper_task"]) if not runs.empty else None
    rows = []
    groups = agg[["scale", "model"]].drop_duplicates().itertuples(index=False) if agg is not None else []
    for scale, model in groups:
        for row_id, row in paper["rows"].items():
            variants = sorted(set(agg[(agg.scale == scale) & (agg.model == model) & (agg.paper_row == row_id)]
                                  ["variant"])) or [""]
            for variant in variants:
                for task in paper["tasks"]:
                    hit = agg[(agg.scale == scale) & (agg.model == model) & (agg.paper_row == row_id)
                              & (agg.variant == variant) & (agg.paper_task == task)]
                    cell = hit.iloc[0] if len(hit) else None
                    rows.append({"scale": scale, "model": model, "paper_row": row_id, "variant": variant,
                                 "task": task, "median": cell["median"] if cell is not None else math.nan,
                                 "std": cell["std"] if cell is not None else math.nan,
                                 "n_seeds": int(cell["n"]) if cell is not None else 0,
                                 "rising": int(cell["rising"]) if cell is not None else 0,
                                 "trainable": cell["trainable"] if cell is not None else math.nan,
                                 "paper": row["results"][task]["value"], "paper_pm": row["results"][task]["pm"],
                                 "paper_params": row["params"]["printed"],
                                 "baseline": cell["baseline"] if cell is not None else math.nan})
    long = pd.DataFrame(rows, columns=["scale", "model", "paper_row", "variant", "task", "median", "std", "n_seeds",
                                       "trainable", "paper", "paper_pm", "paper_params", "baseline", "rising"])
    long.insert(list(long.columns).index("baseline"), "diff", long["median"] - long["paper"])  # ..., diff, baseline, rising
    return long


def table2_wide(long: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (scale, model): the paper's layout, rows x tasks, formatted cells."""
    paper = paper_data(PAPER)
    out = {}
    for (scale, model), part in long.groupby(["scale", "model"], sort=False):
        rows = []
        for (row_id, variant), row_cells in part.groupby(["paper_row", "variant"], sort=False):
            row_name = row_id + (f" [{variant}]" if variant else "")
            params = row_cells["trainable"].dropna()
            record = {"row": row_name, "params (paper)": row_cells["paper_params"].iloc[0],
                      "params (ours)": f"{params.iloc[0] / 1e6:.2f}M" if len(params) else MISSING}
            for cell in row_cells.itertuples():
                record[cell.task] = fmt_cell(cell.median, cell.std, cell.n_seeds, cell.paper, rising=cell.rising)
            complete = row_cells["median"].notna().all()
            record["Avg."] = fmt_cell(row_cells["median"].mean() if complete else None, None, None,
                                      paper["rows"][row_id]["avg"])
            rows.append(record)
        baselines = part.groupby("task", sort=False)["baseline"].median()
        baseline = {"row": BASELINE_LABEL, "params (paper)": "", "params (ours)": "",
                    **{task: fmt_baseline(value) for task, value in baselines.items()},
                    "Avg.": fmt_baseline(baselines.mean() if baselines.notna().all() else None)}
        out[(scale, model)] = pd.DataFrame([baseline, *rows])
    return out


def table2_notes(long: pd.DataFrame, curves: dict[str, str] | None = None) -> list[str]:
    has_runs = long.groupby("task", sort=False)["n_seeds"].max() > 0
    return [*baseline_notes(long.groupby("task", sort=False)["baseline"].median(), has_runs),
            *target_notes(long, curves)]


def target_notes(long: pd.DataFrame, curves: dict[str, str] | None = None) -> list[str]:
    """At the scale conf/paper/cpu_targets.yaml names: each target row's cell against its target (met, below, or too
    few seeds to tell), and for a task below its target its learning curve's table (`curves`: paper task name ->
    file, see `curve_files`) or that it has none yet (`make learning-curve`)."""
    curves = curves or {}
    spec = paper_data("cpu_targets")
    if long.empty or set(long["scale"]) != {spec["scale"]}:
        return []
    lines = [f"Targets at scale {spec['scale']} (conf/paper/cpu_targets.yaml: median over >= {spec['min_seeds']} "
             f"seeds for {', '.join(spec['rows'])}):"]
    for task, target in spec["targets"].items():
        verdicts, below = [], False
        for row in spec["rows"]:
            hit = long[(long["paper_row"] == row) & (long["task"] == task) & (long["variant"].fillna("") == "")]
            if hit.empty or not hit["n_seeds"].iloc[0]:
                verdicts.append(f"{row} no run")
                continue
            median, n = hit["median"].iloc[0], int(hit["n_seeds"].iloc[0])
            state = "met" if median >= target else "below"
            below |= state == "below"
            shown = f"{median:.1f}" if state == "met" or round(median, 1) < target else f"{median:.2f}"  # 19.95, not 20.0
            verdicts.append(f"{row} {shown} [{n}] {state}" + ("" if n >= spec["min_seeds"] else
                                                                      f" (needs {spec['min_seeds']} seeds)"))
        curve = ""
        if below:
            curve = (f"; learning curve: {curves[task]}" if task in curves else
                     "; no learning curve yet (make learning-curve CURVE_TASK=glue/<task>)")
        lines.append(f"- {task} >= {target:g}: {'; '.join(verdicts)}{curve}")
    return lines


Labelled = dict[str, tuple[dict[str, Cell], float]]  # row label -> (task -> per-seed cell, median trainable params)


def table2_cells(runs: pd.DataFrame, convergence: Convergence | None = None) -> Labelled:
    """Per Table 2 row label (paper row [variant]) in the paper's order: its cells per task and trainable count."""
    paper = paper_data(PAPER)
    order = {row_id: i for i, row_id in enumerate(paper["rows"])}
    runs = reproduced(runs)
    runs = runs[runs["paper_row"].isin(order)] if not runs.empty else runs
    by_row = cells(runs, ["paper_row", "variant"], task="paper_task",
                   convergence=convergence or load_rule().convergence)
    out = {}
    for (row_id, variant) in sorted(by_row, key=lambda k: (order[k[0]], k[1])):
        hit = runs[(runs["paper_row"] == row_id) & (runs["variant"] == variant)]
        tasks = by_row[(row_id, variant)]
        out[row_id + (f" [{variant}]" if variant else "")] = (
            {t: tasks[t] for t in paper["tasks"] if t in tasks}, hit["params.trainable"].median())  # paper's order
    return out


def _pairs(labelled: Labelled, first: Callable[[str], bool], second: Callable[[str], bool]):
    """(a, b, a's cells, b's cells on their common tasks, a's and b's trainable parameters), same model only;
    `first` and `second` see the paper row of a label (its variant in brackets left out)."""
    for a, (ca, pa) in labelled.items():
        for b, (cb, pb) in labelled.items():
            row_a, row_b = a.split(" [")[0], b.split(" [")[0]
            if a != b and first(row_a) and second(row_b) and a.split(".")[0] == b.split(".")[0]:
                common = [t for t in ca if t in cb]
                if common:
                    yield a, b, {t: ca[t] for t in common}, {t: cb[t] for t in common}, pa, pb


def claim_lora_matches_ft(labelled: Labelled, crit: dict, rule: Rule) -> Judged:
    return [compare(a, ca, b, cb, tolerance_from_gap(crit["max_gap_points"]), rule)
            for a, b, ca, cb, _, _ in _pairs(labelled, lambda s: ".lora" in s, lambda s: s.endswith(".ft"))]


def claim_lora_fewer_params(labelled: Labelled, crit: dict, rule: Rule) -> Judged:
    """Deterministic (parameter counts have no spread over seeds): a plain comparison."""
    out = []
    for a, b, _, _, pa, pb in _pairs(labelled, lambda s: ".lora" in s, lambda s: s.endswith(".ft")):
        pct = 100 * pa / pb
        out.append(f"{'holds' if pct <= crit['max_percent'] else 'fails'}: {a} trains {pct:.2f}% of {b}'s "
                   f"parameters (criterion: at most {crit['max_percent']}%; deterministic, no interval)")
    return out


def claim_lora_beats_adapters(labelled: Labelled, crit: dict, rule: Rule) -> Judged:
    out: Judged = []
    for a, b, ca, cb, pa, pb in _pairs(labelled, lambda s: ".lora" in s, lambda s: ".adapter_" in s):
        if ("houlsby" in a) == ("houlsby" in b) and pb >= crit["min_param_ratio"] * pa:
            verdict = compare(a, ca, b, cb, tolerance_from_gap(crit["max_gap_points"]), rule)
            verdict.suffix = f"; adapter with {pb / pa:.1f}x LoRA's parameters"
            out.append(verdict)
    return out


CLAIMS: dict[str, Callable[[Labelled, dict, Rule], Judged]] = {
    "lora_matches_ft": claim_lora_matches_ft,
    "lora_fewer_params": claim_lora_fewer_params,
    "lora_beats_adapters": claim_lora_beats_adapters,
}


def table2_claims(labelled: Labelled, rule: Rule) -> Claims:
    criteria = paper_data("table2_claims")
    return [(criteria[name]["text"],
             fn(labelled, criteria[name], rule) or ["not testable: the rows it compares are missing"])
            for name, fn in CLAIMS.items()]


def fp32_first(precision: str) -> tuple[bool, str]:
    """Sort key: fp32 (the reference every other precision is compared with), then the others by name."""
    return precision != "fp32", precision


def claims_per_precision(runs: pd.DataFrame, rule: Rule) -> Claims:
    """Table 2's claims judged within each training precision (fp32 runs against fp32 runs, bf16 against bf16,
    each verdict naming its rows), never across: a precision changes the numbers it is compared on."""
    order = sorted(set(runs["precision"]), key=fp32_first) if len(runs) else []
    groups = [runs[runs["precision"] == p] for p in order] or [runs]
    judged = [table2_claims(table2_cells(part), rule) for part in groups]
    out: Claims = []
    for i, (text, _) in enumerate(judged[0]):
        verdicts = [v for claims in judged for v in claims[i][1] if not str(v).startswith("not testable")]
        out.append((text, verdicts or judged[0][i][1]))
    return out


def _curves(long: pd.DataFrame, tables: Path) -> dict[str, str]:
    """Paper task -> its learning curve's file, for the section of `long` (one scale and model)."""
    return curve_files(tables).get((str(long["scale"].iloc[0]), str(long["model"].iloc[0])), {}) if len(long) else {}


TABLE = PaperTable(
    name=NAME, title="Table 2 (GLUE)", note="Rows map by the experiment's `paper_row` (method and size).",
    select=glue_runs, long=table2_long,
    layout=Layout(rows=("row",), wide=table2_wide, columns=COLUMNS,
                  cell=lambda r: ((label(r["paper_row"]) + (f" [{r['variant']}]" if r["variant"] else ""),),
                                  label(r["task"])),
                  run_keys=(("scale", "scale"), ("model", "model"), ("paper_row", "paper_row"),
                            ("variant", "variant"), ("task", "paper_task")),
                  n="n_seeds", text_columns=("variant",)),
    notes=lambda long, tables: table2_notes(long, _curves(long, tables)),
    claims=claims_per_precision,
    headline=lambda long, tables: target_notes(long, _curves(long, tables)),
    paper=PAPER, after=("learning_curve",), precisions=True)
