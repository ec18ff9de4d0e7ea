"""`python -m repro.tables [--runs results/runs] [--out results/tables] [--scale cpu]`: the paper's tables from runs.

Writes `table2.{md,csv,tex}` (GLUE, Table 2 layout) and one table per sweep (`rank`: Table 6, `targets`: Table 5)
with a PNG plot. Per cell: the median and standard deviation over seeds of the run's best-epoch main metric (x 100,
the paper's 0-100 scale), the number of seeds, the paper's value and the difference. Missing cells say so.

Runs map to the paper by what they computed, not by model: a Table 2 experiment stores its `paper_row` (method and
size), so at cpu scale the embedded MiniLM stands in for RoBERTa and every table header names the model and scale
that produced the numbers. Sweep runs carry `sweep_name`; the paper's sweeps are on GPT-3 (WikiSQL, MultiNLI), so
their MultiNLI row is shown as the reference for any GLUE task. Incomplete runs are ignored and counted.
Every table carries a trivial-baseline row: a constant predictor's score on the same evaluation labels (stored by
each classification run as `trivial_baseline`; shown as missing, with a note, for runs made before it was), or for
generation tables the input copied as the output. Claims get holds / fails / inconclusive by the rule of
conf/paper/verdict_rule.yaml (repro/verdicts.py), printed under the table with its numbers.
Generation runs give Tables 3, 13, 14, a SAMSum table and Table 18 (the GPT-2 rank sweep): repro/generation/tables.py.
`lora_variants.*` compares LoRA with rsLoRA, DoRA, AdaLoRA and QLoRA (sweeps/lora_variants.yaml).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable

import pandas as pd

from repro.analysis.reference import write_table
from repro.cells import MISSING, RELEASED_LABEL, fmt_cell
from repro.config import LM_TASK_KINDS, identity_tree
from repro.errors import ReproError, exit_on_user_error
from repro.generation.tables import (GENERATION_CELL, GENERATION_TABLES, RANK_SWEEP, generation_long,
                                     generation_notes, generation_wide, rank_sweep_long, run_copy_baseline)
from repro.paper import paper_data
from repro.results import (SOURCE_IMPORTED, complete_records, corrupt_records, is_complete, is_records_folder,
                           load)
from repro.verdicts import Cell, Convergence, Rule, Verdict, compare, decide, load_rule, tolerance_from_gap

BASELINE_LABEL = "trivial baseline"
SCALE_PERCENT = 100  # results store fractions; the paper prints 0-100
# the paper's sweep dataset shown as reference for our GLUE task (Tables 5 and 6 are GPT-3 on WikiSQL/MultiNLI)
SWEEP_REFERENCE_DATASET = "MultiNLI"


# --- records -> one flat frame --------------------------------------------------------------------------------

def _get(config: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def runs_frame(root: Path) -> tuple[pd.DataFrame, int]:
    """Complete runs, one row each with the fields the tables need; and the number of run folders ignored."""
    folders = [d for d in sorted(root.glob("*/")) if d.is_dir()]
    ignored = sum(not is_complete(d) for d in folders)
    frame = load(root)
    if frame.empty:
        return frame, ignored
    # what load() leaves out: the trivial baseline, the run folder and the saved outputs (generation)
    records = {r.get("run_id"): (d, r) for d, r in complete_records(root)}
    extra = [records.get(run_id, (None, {})) for run_id in frame["run_id"]]
    cfg = frame["config"]
    frame = frame.assign(
        run_dir=[str(d) if d is not None else None for d, _ in extra],
        best_outputs=[r.get("best_outputs") for _, r in extra],
        train_examples=[r.get("train_examples") for _, r in extra],
        source=[r.get("source") or "trained" for _, r in extra],
        baseline=[classification_baseline(r, main) for (_, r), main in zip(extra, frame["main_metric"])],
        epochs_run=[len(r.get("epochs") or []) for _, r in extra],
        curve=[dev_curve(r, main) for (_, r), main in zip(extra, frame["main_metric"])],
        code=[(r.get("git_commit") or "unknown")[:7] + ("-dirty" if str(r.get("git_commit")).endswith("-dirty")
                                                         else "") for _, r in extra],
        cpu=[describe_cpu(r.get("hardware") or {}) for _, r in extra],
    )
    frame = frame.assign(
        scale=cfg.map(lambda c: _get(c, "scale_name")),
        paper_row=cfg.map(lambda c: _get(c, "paper_row")),
        variant=[released_variant(_get(c, "paper_variant.name") or "", source)
                 for c, source in zip(cfg, frame["source"])],
        sweep=cfg.map(lambda c: _get(c, "sweep_name")),
        paper_task=cfg.map(lambda c: _get(c, "task.paper_key")),
        kind=cfg.map(lambda c: _get(c, "task.kind") or "classification"),
        r=cfg.map(lambda c: _get(c, "method.r")),
        learning_rate=cfg.map(lambda c: _get(c, "train.learning_rate")),
        lr_factor=cfg.map(lambda c: _get(c, "lr_factor")),
        targets=cfg.map(lambda c: ",".join(_get(c, "method.targets") or [])),
        # classification metrics are stored as fractions; generation metrics already on the paper's scales, and
        # long_context's (minus the NLL per token) on their own
        value=[row[f"best.{row['main_metric']}"] * (1 if _get(c, "task.kind") in LM_TASK_KINDS else SCALE_PERCENT)
               for c, (_, row) in zip(cfg, frame.iterrows())],
    )
    return frame, ignored


def dev_curve(record: dict, main_metric: str | None) -> tuple[float, ...] | None:
    """A classification run's main dev metric per epoch, x 100 (the verdicts' convergence); None for other kinds
    (their per-epoch scores are not on the table's scale) and for runs whose epochs lack the metric."""
    if _get(record.get("config") or {}, "task.kind") in LM_TASK_KINDS or not main_metric:
        return None
    values = [(e.get("metrics") or {}).get(main_metric) for e in record.get("epochs") or []]
    return tuple(float(v) * SCALE_PERCENT for v in values) if values and None not in values else None


def describe_cpu(hardware: dict) -> str:
    """Which CPU a run's numbers came from ("Intel(R) Xeon(R) Processor, AVX512"), or the device for GPU runs."""
    if hardware.get("gpu"):
        return str(hardware["gpu"])
    if not hardware.get("cpu_model"):
        return "CPU not recorded"
    return f"{hardware['cpu_model']}, {hardware.get('cpu_capability') or '?'}" + (
        f" ({'/'.join(hardware['cpu_bf16'])})" if hardware.get("cpu_bf16") else "")


def released_variant(variant: str, source: str) -> str:
    """An imported record's variant: "released checkpoint" (after the experiment's own variant, if any), so that
    Table 2 puts it in a row of its own beside the reproduced row of the same paper row."""
    if source != SOURCE_IMPORTED:
        return variant
    return f"{variant}, {RELEASED_LABEL}" if variant else RELEASED_LABEL


def reproduced(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs trained here (not imported): what claims and training-budget headers are about."""
    return frame[frame["source"] != SOURCE_IMPORTED] if len(frame) and "source" in frame else frame


def classification_baseline(record: dict, main_metric: str | None) -> float:
    """The run's trivial baseline on its main metric, x 100 (NaN when the run did not store one: runs made before
    `trivial_baseline` was recorded, and generation runs, whose baseline is computed from their outputs)."""
    value = (record.get("trivial_baseline") or {}).get(main_metric)
    return math.nan if value is None else float(value) * SCALE_PERCENT


def aggregate(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Median, standard deviation (over seeds, ddof 1; undefined for one seed) and seed count per group, and the
    median trivial baseline of the group's runs (NaN when none stored it)."""
    frame = frame if "baseline" in frame else frame.assign(baseline=math.nan)
    grouped = frame.groupby(keys, dropna=False)
    return grouped.agg(median=("value", "median"), std=("value", "std"), n=("seed", "nunique"),
                       trainable=("params.trainable", "median"), baseline=("baseline", "median")).reset_index()


def converged(runs: pd.DataFrame, convergence: Convergence) -> list[bool | None] | None:
    """Per run whether its dev metric had stopped improving when its budget ended (the verdict rule's
    convergence), from its per-epoch curve where the frame has one; None for a run that says nothing."""
    if "epochs_run" not in runs or "best_epoch" not in runs:
        return None
    curves = runs["curve"] if "curve" in runs else [None] * len(runs)
    return [convergence(c, n, b) for c, n, b in zip(curves, runs["epochs_run"], runs["best_epoch"])]


def cells(runs: pd.DataFrame, keys: list[str], task: str = "task", convergence: Convergence | None = None
          ) -> dict[tuple, dict[str, Cell]]:
    """Per-seed values for the verdicts: (values of `keys`) -> task -> Cell (each run's main metric x 100, the
    median of the runs' trivial baselines and, given the rule's convergence, whether each run converged)."""
    out: dict[tuple, dict[str, Cell]] = {}
    if runs.empty:
        return out
    runs = runs if "baseline" in runs else runs.assign(baseline=math.nan)
    for key, part in runs.groupby(keys + [task], sort=False, dropna=False):
        part = part[part["value"].notna()]
        baselines = part["baseline"].dropna()
        if len(part):
            out.setdefault(tuple(key[:-1]), {})[key[-1]] = Cell(
                tuple(part["value"]), baselines.median() if len(baselines) else None,
                converged(part, convergence) if convergence else None, tuple(part["run_id"]))
    return out


def fmt_baseline(value: float | None, digits: int = 1) -> str:
    return MISSING if value is None or pd.isna(value) else f"{value:.{digits}f}"


CONSTANT_BASELINE = ("a constant predictor's score on the same evaluation labels as the runs (the majority class: "
                     "its accuracy and F1, MCC 0; correlation 0 for STS-B), stored by each run as `trivial_baseline`")
COPY_BASELINE = "for generation tasks the input copied as the output, scored from the outputs the run saved"
NOT_STORED = "their runs were made before result.json stored `trivial_baseline`"


def baseline_notes(baselines: pd.Series, has_runs: pd.Series, what: str = CONSTANT_BASELINE,
                   why_missing: str = NOT_STORED, claims: bool = True) -> list[str]:
    """What the trivial-baseline row is, and which tasks miss it (and why)."""
    lines = [f"Trivial baseline row: {what} (median over runs)."]
    missing = [str(t) for t in baselines.index if has_runs.get(t, False) and pd.isna(baselines[t])]
    if missing:
        lines.append(f"Trivial baseline missing ({MISSING}) for {', '.join(missing)}: {why_missing}"
                     + ("; claims on those tasks are inconclusive." if claims else "."))
    return lines


# --- Table 2 --------------------------------------------------------------------------------------------------

def table2_long(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (scale, model, paper row, variant, task) with every paper cell present (missing ones NaN)."""
    paper = paper_data("table2_glue")
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
                                 "trainable": cell["trainable"] if cell is not None else math.nan,
                                 "paper": row["results"][task]["value"], "paper_pm": row["results"][task]["pm"],
                                 "paper_params": row["params"]["printed"],
                                 "baseline": cell["baseline"] if cell is not None else math.nan})
    long = pd.DataFrame(rows, columns=["scale", "model", "paper_row", "variant", "task", "median", "std", "n_seeds",
                                       "trainable", "paper", "paper_pm", "paper_params", "baseline"])
    long.insert(len(long.columns) - 1, "diff", long["median"] - long["paper"])  # the CSV's columns: ..., diff, baseline
    return long


def table2_wide(long: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (scale, model): the paper's layout, rows x tasks, formatted cells."""
    paper = paper_data("table2_glue")
    out = {}
    for (scale, model), part in long.groupby(["scale", "model"], sort=False):
        rows = []
        for (row_id, variant), cells in part.groupby(["paper_row", "variant"], sort=False):
            label = row_id + (f" [{variant}]" if variant else "")
            params = cells["trainable"].dropna()
            record = {"row": label, "params (paper)": cells["paper_params"].iloc[0],
                      "params (ours)": f"{params.iloc[0] / 1e6:.2f}M" if len(params) else MISSING}
            for cell in cells.itertuples():
                record[cell.task] = fmt_cell(cell.median, cell.std, cell.n_seeds, cell.paper)
            complete = cells["median"].notna().all()
            record["Avg."] = fmt_cell(cells["median"].mean() if complete else None, None, None,
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


# --- claims ---------------------------------------------------------------------------------------------------

Labelled = dict[str, tuple[dict[str, Cell], float]]  # row label -> (task -> per-seed cell, median trainable params)


def table2_cells(runs: pd.DataFrame, convergence: Convergence | None = None) -> Labelled:
    """Per Table 2 row label (paper row [variant]) in the paper's order: its cells per task and trainable count."""
    paper = paper_data("table2_glue")
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
    """(a, b, a's cells, b's cells on their common tasks, a's and b's trainable parameters), same model only."""
    for a, (ca, pa) in labelled.items():
        for b, (cb, pb) in labelled.items():
            if a != b and first(a) and second(b) and a.split(".")[0] == b.split(".")[0]:
                common = [t for t in ca if t in cb]
                if common:
                    yield a, b, {t: ca[t] for t in common}, {t: cb[t] for t in common}, pa, pb


Judged = list["Verdict | str"]  # a claim's verdicts (statistical ones get the table's Holm correction) or lines


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


Claims = list[tuple[str, Judged]]  # (claim text, its verdicts) of one table section


def decided(claims: Claims, rule: Rule) -> Claims:
    """The claims with their final verdicts: the statistical ones of all the claims decided together (Holm's
    correction over the table's family)."""
    final = iter(decide([v for _, judged in claims for v in judged if isinstance(v, Verdict)], rule))
    return [(text, [next(final) if isinstance(v, Verdict) else v for v in judged]) for text, judged in claims]


def judged_lines(claims: Claims, rule: Rule) -> list[str]:
    """`- claim:` then `  - verdict` lines (decided), then the rule."""
    lines = ["Claims at this scale:"]
    for text, judged in decided(claims, rule):
        lines.append(f"- {text}:")
        lines.extend(f"  - {v}" for v in judged)
    return [*lines, "", rule.text()]


def table2_claims(labelled: Labelled, rule: Rule) -> Claims:
    criteria = paper_data("table2_claims")
    return [(criteria[name]["text"],
             fn(labelled, criteria[name], rule) or ["not testable: the rows it compares are missing"])
            for name, fn in CLAIMS.items()]


def claims_summary(labelled: Labelled, rule: Rule | None = None) -> list[str]:
    """The claims summary under Table 2: each claim's verdicts, then the rule that gave them."""
    rule = rule or load_rule()
    return judged_lines(table2_claims(labelled, rule), rule)


# --- sweeps ---------------------------------------------------------------------------------------------------

def _sweep_reference(name: str) -> Callable[[str, int | None], float | None]:
    """Paper value for (targets "q,v", rank) in Table 6 (rank) or Table 5 (targets), MultiNLI row."""
    if name == "rank":
        paper = paper_data("table6_rank")
        values = {(",".join(r["targets"]), int(k)): v for r in paper["rows"]
                  if r["dataset"] == SWEEP_REFERENCE_DATASET for k, v in r["by_rank"].items()}
    else:
        paper = paper_data("table5_weight_types")
        values = {(",".join(c["targets"]), c["rank"]): c["results"][SWEEP_REFERENCE_DATASET]
                  for c in paper["columns"]}
    return lambda targets, r: values.get((targets, r))


SWEEP_COLUMNS = ["scale", "model", "task", "method", "targets", "r", "median", "std", "n", "paper", "diff", "baseline"]


def with_generation_baselines(runs: pd.DataFrame) -> pd.DataFrame:
    """`baseline` of generation runs (a sweep or the variants may run on E2E...): the input copied as the output,
    scored on the run's main metric from its saved outputs (repro.generation.tables.copy_input_baseline)."""
    if runs.empty or "kind" not in runs or not (runs["kind"] == "generation").any():
        return runs
    generation = runs["kind"] == "generation"
    scores = [run_copy_baseline(row) or {} for _, row in runs[generation].iterrows()]
    runs = runs.copy()
    runs.loc[generation, "baseline"] = [s.get(m, math.nan) for s, m in zip(scores, runs.loc[generation, "main_metric"])]
    return runs


def sweep_runs(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    runs = frame[frame["sweep"] == name] if not frame.empty else frame
    return with_generation_baselines(runs)


def sweep_long(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    runs = sweep_runs(frame, name)
    if runs.empty:
        return pd.DataFrame(columns=SWEEP_COLUMNS)
    # by method too: the rank sweep also compares scaling rules (method=lora,rslora)
    agg = aggregate(runs, ["scale", "model", "task", "method", "targets", "r"])
    agg["r"] = agg["r"].astype("Int64")  # a rank, not a measurement: "r=8", not "r=8.0"
    reference = _sweep_reference(name)
    agg["paper"] = [reference(t, int(r)) for t, r in zip(agg["targets"], agg["r"])]
    agg["diff"] = agg["median"] - agg["paper"].astype(float)
    return agg[SWEEP_COLUMNS]


SWEEP_LAYOUT = {  # sweep -> (row keys, column key) of its paper layout
    "rank": (["task", "method", "targets"], "r"),
    "targets": (["task", "method"], "targets"),
}


def sweep_wide(long: pd.DataFrame, name: str) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (scale, model): the paper's layout, and per task a trivial-baseline row (the task's baseline in every
    column that has runs) above the task's rows."""
    index, column = SWEEP_LAYOUT[name]
    out = {}
    for (scale, model), part in long.groupby(["scale", "model"], sort=False):
        part = part.assign(cell=[fmt_cell(m, s, n, p) for m, s, n, p in
                                 zip(part["median"], part["std"], part["n"], part["paper"])])
        if name == "targets":
            part = part.assign(targets=[f"{t} (r={r})" for t, r in zip(part["targets"], part["r"])])
        table = part.pivot_table(index=index, columns=column, values="cell", aggfunc="first",
                                 fill_value=MISSING).reset_index()
        baselines = []
        for task, cells_ in part.groupby("task", sort=False):
            value = fmt_baseline(cells_["baseline"].median())
            has = set(cells_[column])
            baselines.append({"task": task, **{k: "" for k in index[1:]}, "method": BASELINE_LABEL,
                              **{c: value if c in has else MISSING for c in table.columns[len(index):]}})
        table = pd.concat([pd.DataFrame(baselines, columns=table.columns), table], ignore_index=True)
        table["_order"] = [0] * len(baselines) + [1] * (len(table) - len(baselines))
        out[(scale, model)] = table.sort_values(["task", "_order"], kind="stable").drop(columns="_order") \
            .reset_index(drop=True)
    return out


def sweep_notes(long: pd.DataFrame) -> list[str]:
    return baseline_notes(long.groupby("task", sort=False)["baseline"].median(),
                          long.groupby("task", sort=False)["n"].max() > 0)


def rank_claims(by_key: dict[tuple, dict[str, Cell]], crit: dict, rule: Rule) -> Judged:
    """Table 6: each small rank against the reference rank, same method and weights, pooled over tasks."""
    ref = int(crit["reference_rank"])
    out: Judged = []
    tolerance = tolerance_from_gap(crit["max_gap_points"])
    for method, targets in dict.fromkeys((m, t) for m, t, _ in by_key):
        reference = by_key.get((method, targets, ref))
        for r in crit["small_ranks"]:
            small = by_key.get((method, targets, int(r)))
            if reference is not None and small is not None:
                verdict = compare(f"{method} {{{targets}}} r={r}", small, f"r={ref}", reference, tolerance, rule)
                out.append(verdict)
    return out or [f"not testable: no runs at r={ref} and at r in {crit['small_ranks']} on the same weights"]


def targets_claims(by_key: dict[tuple, dict[str, Cell]], crit: dict, rule: Rule) -> Judged:
    """Table 5: several weight types against one, same method, equal budget, pooled over tasks."""
    out: Judged = []
    tolerance = tolerance_from_gap(crit["max_gap_points"])
    for method in dict.fromkeys(m for m, _ in by_key):
        for pair in crit["compare"]:
            better, than = ",".join(pair["better"]), ",".join(pair["than"])
            a, b = by_key.get((method, better)), by_key.get((method, than))
            if a is not None and b is not None:
                out.append(compare(f"{method} {{{better}}}", a, f"{{{than}}}", b, tolerance, rule))
    pairs = "; ".join(f"{{{','.join(p['better'])}}} vs {{{','.join(p['than'])}}}" for p in crit["compare"])
    return out or [f"not testable: none of the compared weight sets has runs ({pairs})"]


SWEEP_CLAIMS = {  # sweep -> (the keys its cells are grouped by, the claim's judge)
    "rank": (["method", "targets", "r"], rank_claims),
    "targets": (["method", "targets"], targets_claims),
}


def sweep_judged(runs: pd.DataFrame, name: str, rule: Rule) -> Claims:
    """The claim of a sweep table (conf/paper/verdict_rule.yaml `sweep_claims`) on the runs of one (scale, model)."""
    crit = paper_data("verdict_rule")["sweep_claims"][name]
    keys, judge = SWEEP_CLAIMS[name]
    if not runs.empty and "r" in keys:
        runs = runs[runs["r"].notna()]
        runs = runs.assign(r=runs["r"].astype(int))
    tolerance = tolerance_from_gap(crit["max_gap_points"])
    return [(f"{crit['text']} (tolerance {tolerance:+.1f}: the difference must be above it)",
             judge(cells(runs, keys, convergence=rule.convergence), crit, rule))]


def sweep_claims(runs: pd.DataFrame, name: str, rule: Rule | None = None) -> list[str]:
    """The sweep table's claim judged by the verdict rule, as printed under the table."""
    rule = rule or load_rule()
    return judged_lines(sweep_judged(runs, name, rule), rule)


def all_claims(frame: pd.DataFrame, rule: Rule) -> dict[tuple[str, str, str], Claims]:
    """(table, scale, model) -> its claims, decided: what the tables print under each section, as data (for
    `repro.decide`, which adds seeds to the inconclusive ones)."""
    out: dict[tuple[str, str, str], Claims] = {}
    if frame.empty:
        return out
    glue = frame[frame["paper_task"].isin(paper_data("table2_glue")["tasks"]) & frame["paper_row"].notna()
                 & (frame["sweep"] != LR_SEARCH)]
    for (scale, model), part in glue.groupby(["scale", "model"]):
        out[("table2", scale, model)] = decided(table2_claims(table2_cells(part), rule), rule)
    for name in SWEEP_CLAIMS:
        runs = sweep_runs(frame, name)
        for (scale, model), part in (runs.groupby(["scale", "model"]) if not runs.empty else []):
            out[(name, scale, model)] = decided(sweep_judged(part, name, rule), rule)
    return out


def plot_sweep(long: pd.DataFrame, name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (scale, model, task, method, targets), part in long.groupby(["scale", "model", "task", "method", "targets"]):
        label = f"{task} {method} {{{targets}}} ({model}, {scale})"
        if name == "rank":
            part = part.sort_values("r")
            ax.errorbar(part["r"], part["median"], yerr=part["std"].fillna(0), marker="o", capsize=3, label=label)
        else:
            ax.bar(label.replace(" (", "\n("), part["median"].iloc[0], yerr=part["std"].fillna(0).iloc[0])
    if name == "rank":
        ax.set_xscale("log", base=2)
        ax.set_xlabel("LoRA rank r")
        ax.legend(fontsize=7)
    else:
        ax.tick_params(axis="x", labelsize=6, rotation=45)
    ax.set_ylabel("main metric x 100 (median over seeds)")
    ax.set_title(f"{name} sweep")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- learning curves (sweeps/learning_curve.yaml) -------------------------------------------------------------

CURVE_SWEEP = "learning_curve"
CURVE_COLUMNS = ["scale", "model", "task", "method", "train_examples", "median", "std", "n", "baseline", "from_table2",
                 "paper_task"]
# Everything a classification run's result depends on besides its training subset's size and seed: a Table 2 run
# that agrees with a learning-curve run on all of these is the curve's point at Table 2's own training size.
CURVE_RECIPE_KEYS = ("method", "model.name", "model.pooling", "init_from_task", "train.learning_rate", "train.epochs",
                     "train.batch_size", "train.grad_accum_steps", "train.warmup_ratio", "train.weight_decay",
                     "train.max_grad_norm", "train.group_by_length", "train.lr_schedule", "data.max_seq_len",
                     "data.subset_seed", "data.max_eval_samples")


def curve_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The learning-curve sweep's runs, and Table 2's runs of the same recipe at sizes the sweep did not run (e.g.
    SST-2's 6,000 examples against the sweep's 500-4,000), so that each curve reaches the size its Table 2 cell was
    trained at. Same recipe: equal scale, model, task, method and every CURVE_RECIPE_KEYS setting (on RTE, where
    both ran all 2,490 examples, the two gave the same number for every seed). Column `from_table2` marks them."""
    curve = sweep_runs(frame, CURVE_SWEEP)
    if curve.empty:
        return curve.assign(from_table2=False)

    def recipe(config: dict) -> str:  # identity_tree: a knob added later equals its absence at the old value
        tree = identity_tree(config)
        return repr([_get(tree, key) for key in CURVE_RECIPE_KEYS])

    keys = ["scale", "model", "task", "method"]
    recipes = {(*row, recipe(c)) for row, c in zip(curve[keys].itertuples(index=False), curve["config"])}
    points = set(curve[keys + ["train_examples"]].itertuples(index=False, name=None))
    table2 = reproduced(frame[frame["paper_row"].notna() & frame["variant"].fillna("").eq("")])
    same = [(*row, recipe(c)) in recipes and (*row, n) not in points
            for row, c, n in zip(table2[keys].itertuples(index=False), table2["config"], table2["train_examples"])]
    return pd.concat([curve.assign(from_table2=False), table2[same].assign(from_table2=True)], ignore_index=True)


def curve_long(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (scale, model, task, method, number of training examples) of `curve_runs`: the main metric over seeds
    and the baseline."""
    if runs.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    agg = aggregate(runs, ["scale", "model", "task", "paper_task", "method", "train_examples", "from_table2"])
    return agg[CURVE_COLUMNS].sort_values(["scale", "model", "task", "method", "train_examples"]).reset_index(drop=True)


def curve_notes(long: pd.DataFrame) -> list[str]:
    """The baseline note, and which points are Table 2's own runs."""
    table2 = long[long["from_table2"].astype(bool)]
    sizes = [f"{task} {', '.join(str(int(n)) for n in sorted(set(part['train_examples'])))}"
             for task, part in table2.groupby("task", sort=False)]
    return [*sweep_notes(long), *([f"Points from Table 2's runs (the same recipe at its own training size): "
                                  f"{'; '.join(sizes)} examples."] if sizes else [])]


def curve_name(task: str) -> str:
    """The files of one task's learning curve (learning_curve_<task>.{md,csv,tex,png}). Each task's curve is its own
    experiment (`make learning-curve CURVE_TASK=...`, about an hour on 2 cores), so each has its own files: building
    the tables from one task's runs rewrites that task's curve and leaves the others' committed curves as they are."""
    return f"{CURVE_SWEEP}_{task}"


def curve_files(tables: Path) -> dict[tuple[str, str], dict[str, str]]:
    """(scale, model) -> {paper task name (e.g. MRPC): its learning-curve table's .md file name}, from the curve
    CSVs under `tables`: the curves a reader of that folder sees, whether or not their runs are at hand."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for path in sorted(tables.glob(f"{CURVE_SWEEP}_*.csv")):
        try:
            long = pd.read_csv(path)
        except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
            continue
        for (scale, model, paper_task), _ in long.groupby(["scale", "model", "paper_task"]):
            out.setdefault((str(scale), str(model)), {})[paper_task] = path.with_suffix(".md").name
    return out


def curve_wide(long: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (scale, model): rows (task, method), columns the training-set sizes; each task's baseline row first."""
    out = {}
    for (scale, model), part in long.groupby(["scale", "model"], sort=False):
        part = part.assign(cell=[fmt_cell(m, s, n, None).removesuffix(f" / {MISSING}")
                                 for m, s, n in zip(part["median"], part["std"], part["n"])])
        table = part.pivot_table(index=["task", "method"], columns="train_examples", values="cell", aggfunc="first",
                                 fill_value=MISSING)
        baselines = part.groupby("task")["baseline"].median()
        for task in baselines.index:
            table.loc[(task, f" {BASELINE_LABEL}"), :] = fmt_baseline(baselines[task])  # sorts first in its task
        table = table.sort_index()
        table.index = table.index.set_levels([lvl.str.strip() for lvl in table.index.levels])
        table.columns = [f"{int(c)} examples" for c in table.columns]
        out[(scale, model)] = table.reset_index()
    return out


def plot_curves(long: pd.DataFrame, out: Path) -> list[Path]:
    """One figure per task: main metric (median, error bar = std over seeds) against training examples (log scale),
    one line per method, Table 2's points boxed, the trivial baseline dashed and the cpu target dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = paper_data("cpu_targets")
    paths = []
    for (scale, model, task), part in long.groupby(["scale", "model", "task"]):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for method, line in part.groupby("method"):
            bars = ax.errorbar(line["train_examples"], line["median"], yerr=line["std"].fillna(0), marker="o",
                               capsize=3, label=f"{method} (median of {int(line['n'].max())} seeds)")
            table2 = line[line["from_table2"].astype(bool)]
            ax.plot(table2["train_examples"], table2["median"], "s", markersize=10, markerfacecolor="none",
                    color=bars[0].get_color(), label=f"{method}: Table 2's runs" if len(table2) else None)
        if part["baseline"].notna().any():
            ax.axhline(part["baseline"].median(), color="grey", linestyle="--", label=BASELINE_LABEL)
        target = targets["targets"].get(part["paper_task"].iloc[0]) if scale == targets["scale"] else None
        if target is not None:
            ax.axhline(target, color="black", linestyle=":", label="target (conf/paper/cpu_targets.yaml)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training examples")
        ax.set_ylabel("main metric x 100")
        ax.set_title(f"{task}: {model}, scale {scale}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{curve_name(task)}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


# --- LoRA variants (sweeps/lora_variants.yaml) --------------------------------------------------------------

VARIANTS_SWEEP = "lora_variants"


def variants_long(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (scale, model, task, method): main metric median/std over seeds, trainable parameters, peak memory and
    time per optimizer step (medians over seeds), and the trivial baseline on the main metric."""
    columns = ["scale", "model", "task", "method", "median", "std", "n", "trainable", "peak_memory_gib", "step_ms",
               "baseline"]
    runs = sweep_runs(frame, VARIANTS_SWEEP)
    if runs.empty:
        return pd.DataFrame(columns=columns)
    runs = runs.assign(peak_memory_gib=runs["peak_memory_bytes"] / 2**30,
                       step_ms=1000 * runs["train_time_s"] / runs["optimizer_steps"].clip(lower=1))
    grouped = runs.groupby(["scale", "model", "task", "method"], sort=False)
    long = grouped.agg(median=("value", "median"), std=("value", "std"), n=("seed", "nunique"),
                       trainable=("params.trainable", "median"), peak_memory_gib=("peak_memory_gib", "median"),
                       step_ms=("step_ms", "median"), baseline=("baseline", "median")).reset_index()[columns]
    from repro.methods import LORA_FAMILY  # here, not at the top: it imports torch and peft (seconds)

    order = {name: i for i, name in enumerate(LORA_FAMILY)}  # lora first, then its successors
    return long.sort_values(["scale", "model", "task", "method"], key=lambda c: c.map(order) if c.name == "method"
                            else c, kind="stable").reset_index(drop=True)


def variants_wide(long: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (scale, model): one row per (task, method), each task's trivial-baseline row first. No claim: the paper
    predates these methods."""
    out = {}
    for (scale, model), part in long.groupby(["scale", "model"], sort=False):
        rows = []
        for task, cells_ in part.groupby("task", sort=False):
            rows.append({"task": task, "method": BASELINE_LABEL,
                         "main metric": fmt_baseline(cells_["baseline"].median()),
                         "trainable": "", "peak memory (GiB)": "", "ms / step": ""})
            rows += [{"task": task, "method": c.method,
                      "main metric": fmt_cell(c.median, c.std, c.n, None).removesuffix(f" / {MISSING}"),
                      "trainable": f"{c.trainable / 1e6:.3f}M", "peak memory (GiB)": f"{c.peak_memory_gib:.2f}",
                      "ms / step": f"{c.step_ms:.0f}"} for c in cells_.itertuples()]
        out[(scale, model)] = pd.DataFrame(rows)
    return out


def variants_notes(long: pd.DataFrame) -> list[str]:
    notes = baseline_notes(long.groupby("task", sort=False)["baseline"].median(),
                           long.groupby("task", sort=False)["n"].max() > 0, f"{CONSTANT_BASELINE}; {COPY_BASELINE}",
                           f"{NOT_STORED} (classification) or saved no outputs (generation)", claims=False)
    return [*notes, "No claim is judged here: the paper predates these methods (baseline row only)."]


# --- writing --------------------------------------------------------------------------------------------------

# table name -> (title, note under its header); shared with repro.report, which shows the same tables
LR_SEARCH = "lr_search"  # sweeps/lr_search.yaml: scored on held-out training data, so in no other table
LR_SEARCH_COLUMNS = ["scale", "model", "task", "paper_row", "lr_factor", "learning_rate", "median", "std", "n",
                     "best"]


def lr_search_long(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (task, Table 2 row, factor): the held-out score over seeds, and whether it is the row's best factor."""
    runs = frame[frame["sweep"] == LR_SEARCH] if not frame.empty else frame
    if runs.empty:
        return pd.DataFrame(columns=LR_SEARCH_COLUMNS)
    runs = runs.assign(paper_row=runs["paper_row"].fillna(runs["method"]))
    agg = runs.groupby(["scale", "model", "task", "paper_row", "lr_factor", "learning_rate"], dropna=False).agg(
        median=("value", "median"), std=("value", "std"), n=("seed", "nunique")).reset_index()
    best = agg.groupby(["scale", "model", "task", "paper_row"])["median"].transform("max")
    return agg.assign(best=agg["median"] == best)[LR_SEARCH_COLUMNS]


def lr_search_wide(long: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    out = {}
    for (scale, model), part in long.groupby(["scale", "model"], sort=False):
        part = part.assign(cell=[f"{m:.1f} [{n}] (lr {lr:.3g}){' *' if b else ''}" for m, n, lr, b in
                                 zip(part["median"], part["n"], part["learning_rate"], part["best"])],
                           factor=[f"x{f:g}" for f in part["lr_factor"]])
        out[(scale, model)] = part.pivot_table(index=["task", "paper_row"], columns="factor", values="cell",
                                               aggfunc="first", fill_value=MISSING).reset_index()
    return out


TITLES: dict[str, tuple[str, str]] = {
    "table2": ("Table 2 (GLUE)", "Rows map by the experiment's `paper_row` (method and size)."),
    "generation": ("", "Rows map by the experiment's `paper_row`; rows without one are labelled by method."),
    "table18": ("Table 18 (GPT-2 LoRA rank, E2E)", "Paper: GPT-2 medium, 26,000 steps; METEOR and ROUGE_L x100 here."),
    "rank": ("Table 6 (rank r)", f"Paper: GPT-3 175B on {SWEEP_REFERENCE_DATASET} (the reference, not the same task or "
                                 "model)."),
    "targets": ("Table 5 (weight types, equal budget)", f"Paper: GPT-3 175B on {SWEEP_REFERENCE_DATASET} (the "
                                                         "reference, not the same task or model)."),
    CURVE_SWEEP: ("Learning curves (main metric vs training examples)",
                  "Each task's cpu recipe otherwise; whether a number below its target is still rising with more "
                  "data."),
    LR_SEARCH: ("Learning-rate search (equal effort per method, scored on held-out training data)",
                "Each row's cpu-recipe rate times the same factors, one seed; the score is the main metric on "
                "`data.holdout_fraction` of the training subset held out, never the dev split of Table 2. "
                "* marks the best factor of each row."),
    VARIANTS_SWEEP: ("LoRA and its successors (equal rank budget)",
                     "Main metric: the task's (GLUE x100, generation on its printed scale); memory: the run's peak "
                     "(CPU: resident set; CUDA: torch's max allocated); ms / step: training time per optimizer step. "
                     "No paper values: the paper predates these methods."),
}

MEDIAN_CELL = "median±std [seeds] / paper (difference), 0-100 scale"


def _header(title: str, scale: str, model: str, note: str, budget: str = "", cell: str = MEDIAN_CELL) -> str:
    return (f"{title}\n\nReproduced numbers: model `{model}` at scale `{scale}`{budget}. Cell: {cell}; "
            f"{MISSING} = no run. {note}")


def run_budgets(frame: pd.DataFrame, train_size: bool = True) -> dict[tuple[str, str], str]:
    """(scale, model) -> the training budgets of its runs, so a table says how much data and training it saw
    (without the training-set size where the table's columns give it: the learning curves)."""
    def describe(c: dict, used: float | None) -> str:
        train, dev = _get(c, "data.max_train_samples"), _get(c, "data.max_eval_samples")
        if train and used is not None and not pd.isna(used) and used < train:  # a cap above the task's size
            train = f"{int(used)} (all)"
        size = f"{train or 'all'} train / " if train_size else ""
        return (f"{_get(c, 'task.name')}: {size}{dev or 'all'} eval examples, "
                f"{_get(c, 'train.epochs')} epochs, batch {_get(c, 'train.batch_size')}, "
                f"length {_get(c, 'data.max_seq_len')}")

    frame = reproduced(frame)  # an imported checkpoint was not trained on these budgets
    if frame.empty:
        return {}
    used = frame["train_examples"] if "train_examples" in frame else [None] * len(frame)
    frame = frame.assign(budget=[describe(c, n) for c, n in zip(frame["config"], used)])
    if "code" not in frame:
        frame = frame.assign(code="unknown", cpu="CPU not recorded")
    out = {}
    for key, part in frame.groupby(["scale", "model"]):
        out[key] = (" (" + "; ".join(sorted(set(part["budget"]))) + "). Runs from code " +
                    ", ".join(sorted(set(part["code"]))) + " on " + "; ".join(sorted(set(part["cpu"]))))
    return out


Notes = Callable[[str, str, pd.DataFrame], list[str]]  # (scale, model, that section's long rows) -> lines


def write_tables(wide: dict, long: pd.DataFrame, out: Path, name: str, title: str, note: str,
                 notes: Notes | None = None,
                 budgets: dict[tuple[str, str], str] | None = None, cell: str = MEDIAN_CELL) -> list[Path]:
    """`name`.md (per scale and model: header, table, then `notes`: baseline notes, claims and the verdict rule),
    `name`.csv (the long form) and `name`.tex."""
    md, tex = [], []
    for (scale, model), table in wide.items():
        budget = (budgets or {}).get((scale, model), "")
        md += [f"## {_header(title, scale, model, note, budget, cell)}", "", table.to_markdown(index=False), ""]
        if notes is not None:
            part = long[(long["scale"] == scale) & (long["model"] == model)]
            md += [*notes(scale, model, part), ""]
        tex += [f"% {title}: model {model}, scale {scale}",
                table.to_latex(index=False, caption=f"{title} ({model}, {scale})").replace("±", r"$\pm$")]
    paths = [out / f"{name}.md", out / f"{name}.csv", out / f"{name}.tex"]
    if not wide:
        if paths[0].exists():  # built before from runs that are not among these records: kept, not blanked
            print(f"kept {paths[0]}: no runs for it here")
            return []
        md = [f"## {title}", "", f"no complete runs for this table ({MISSING} everywhere)."]
    paths[0].write_text("\n".join(md) + "\n", encoding="utf-8")
    long.to_csv(paths[1], index=False)
    paths[2].write_text("\n".join(tex) + "\n", encoding="utf-8")
    return paths


def _section(frame: pd.DataFrame, scale: str, model: str) -> pd.DataFrame:
    return frame[(frame["scale"] == scale) & (frame["model"] == model)] if not frame.empty else frame


def build(runs: Path, out: Path, scale: str | None = None) -> dict[str, list[Path]]:
    if not runs.is_dir():
        raise ReproError(f"no runs or records folder {runs} (the committed records are results/records; your own runs: "
                         "--runs results/runs)")
    frame, ignored = runs_frame(runs)
    print(f"{len(frame)} complete run(s) under {runs}; ignored {ignored} incomplete")
    if scale is not None and not frame.empty:
        frame = frame[frame["scale"] == scale]
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    rule = load_rule()
    everything = frame
    if not frame.empty and (frame["sweep"] == LR_SEARCH).any():  # scored on held-out training data: a table of
        long = lr_search_long(frame)                                # its own, no other table counts these runs
        written[LR_SEARCH] = write_tables(lr_search_wide(long), long, out, LR_SEARCH, *TITLES[LR_SEARCH],
                                          budgets=run_budgets(frame[frame["sweep"] == LR_SEARCH]),
                                          cell="held-out main metric [seeds] (learning rate)")
        frame = frame[frame["sweep"] != LR_SEARCH]
    curve = curve_runs(frame)
    long = curve_long(curve)
    written[CURVE_SWEEP] = []
    for task, part in long.groupby("task"):  # before Table 2, whose target notes point to the curves
        written[CURVE_SWEEP] += write_tables(
            curve_wide(part), part, out, curve_name(task), *TITLES[CURVE_SWEEP],
            notes=lambda s, m, part: curve_notes(part),
            budgets=run_budgets(curve[curve["task"] == task], train_size=False), cell="median±std [seeds]")
    written[CURVE_SWEEP] += plot_curves(long, out)
    curves = curve_files(out)
    glue = frame[frame["paper_task"].isin(paper_data("table2_glue")["tasks"])] if len(frame) else frame
    glue_rows = glue[glue["paper_row"].notna()] if len(glue) else glue
    long = table2_long(glue)
    written["table2"] = write_tables(
        table2_wide(long), long, out, "table2", *TITLES["table2"],
        notes=lambda s, m, part: [*table2_notes(part, curves.get((str(s), str(m)))), "",
                                  *claims_summary(table2_cells(_section(glue_rows, s, m)), rule)],
        budgets=run_budgets(glue_rows))
    for spec in GENERATION_TABLES:
        long = generation_long(frame, spec)
        written[spec.name] = write_tables(
            generation_wide(long), long, out, spec.name, spec.title, TITLES["generation"][1],
            notes=lambda s, m, part: generation_notes(part),
            budgets=run_budgets(frame[frame["task"] == spec.task] if len(frame) else frame),
            cell=GENERATION_CELL)
    long = rank_sweep_long(frame)
    written["table18"] = write_tables(generation_wide(long), long, out, "table18", *TITLES["table18"],
                                      notes=lambda s, m, part: generation_notes(part),
                                      budgets=run_budgets(frame[frame["sweep"] == RANK_SWEEP] if len(frame) else frame),
                                      cell=GENERATION_CELL)
    for name in ("rank", "targets"):
        long = sweep_long(frame, name)
        runs_ = sweep_runs(frame, name)
        written[name] = write_tables(sweep_wide(long, name), long, out, name, *TITLES[name],
                                     notes=lambda s, m, part, name=name, runs_=runs_: [
                                         *sweep_notes(part), "", *sweep_claims(_section(runs_, s, m), name, rule)],
                                     budgets=run_budgets(frame[frame["sweep"] == name] if len(frame) else frame))
        if not long.empty:
            plot_sweep(long, name, out / f"{name}.png")
            written[name].append(out / f"{name}.png")
    long = variants_long(frame)
    written[VARIANTS_SWEEP] = write_tables(
        variants_wide(long), long, out, VARIANTS_SWEEP, *TITLES[VARIANTS_SWEEP],
        notes=lambda s, m, part: variants_notes(part),
        budgets=run_budgets(frame[frame["sweep"] == VARIANTS_SWEEP] if len(frame) else frame),
        cell="median±std [seeds]")
    written["all_runs"] = write_table(all_runs(everything), out / "all_runs",
                                      f"Every complete run{f' at scale {scale}' if scale else ''} (main metric x100 "
                                      "for GLUE, generation on its printed scale), the tables it appears in, and "
                                      "the settings that differ among runs of the same task, model and method "
                                      "(run identity, seed aside). A run in no table says why.", ".4g")
    for paths in filter(None, written.values()):
        print("wrote " + ", ".join(str(p) for p in paths))
    return written


SWEEP_TABLES = {RANK_SWEEP: "table18", "rank": "rank", "targets": "targets", VARIANTS_SWEEP: VARIANTS_SWEEP,
                LR_SEARCH: LR_SEARCH}
NOT_IN_A_TABLE = "none: no paper row (run without +experiment=...) and no sweep of a paper table"


def tables_of(row: pd.Series) -> str:
    """The generated tables a run is counted in (the selections `build` makes), or why none."""
    names = []
    if isinstance(row["paper_row"], str) and row["paper_task"] in paper_data("table2_glue")["tasks"] and \
            row["sweep"] != LR_SEARCH:
        names.append("table2")
    if isinstance(row["sweep"], str):
        names.append(curve_name(row["task"]) if row["sweep"] == CURVE_SWEEP else SWEEP_TABLES.get(row["sweep"], ""))
    else:
        names += [spec.name for spec in GENERATION_TABLES if spec.task == row["task"]]
    names = [n for n in names if n]
    if names:
        return ", ".join(names)
    return NOT_IN_A_TABLE if not isinstance(row["sweep"], str) else f"none: sweep {row['sweep']} has no table"


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(configs: list[dict]) -> list[str]:
    """Per run, `key=value` for the identity settings that vary among `configs` (seed aside)."""
    flat = [_flatten(identity_tree(c)) for c in configs]
    keys = sorted({k for f in flat for k in f} - {"seed"})
    varying = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    return ["; ".join(f"{k}={f.get(k)}" for k in varying) for f in flat]


def all_runs(frame: pd.DataFrame) -> pd.DataFrame:
    columns = ["task", "model", "method", "scale", "seed", "main_metric", "value", "tables", "differences", "run_id"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.assign(tables=[tables_of(row) for _, row in frame.iterrows()], differences="")
    for _, part in frame.groupby(["task", "model", "method"], sort=False):
        frame.loc[part.index, "differences"] = config_differences(list(part["config"]))
    return frame.sort_values(["task", "model", "method", "scale", "seed"])[columns].reset_index(drop=True)


def log_to_wandb(written: dict[str, list[Path]], project: str) -> None:
    """Log each table to W&B in the group its sweep's runs use (`logger.group` = `sweep_name`); offline unless
    WANDB_MODE=online."""
    import os

    import wandb

    for name, paths in written.items():
        csvs = [p for p in paths if p.suffix == ".csv"]
        if not csvs:  # nothing written for it (no runs), or figures only
            continue
        frame = pd.concat([pd.read_csv(p) for p in csvs], ignore_index=True)
        if frame.empty:
            continue
        run = wandb.init(project=project, group=name, name=f"{name}-table", job_type="tables",
                         mode=os.environ.get("WANDB_MODE", "offline"), reinit="finish_previous")
        run.log({f"{name}/table": wandb.Table(dataframe=frame.astype(str))})
        run.finish()


def default_paths(base: Path, runs: Path | None, out: Path | None) -> tuple[Path, Path]:
    """(source, out). The committed tables (`base`/tables) are built from the committed records (`base`/records)
    only; run folders of one's own build into `base`/local/tables unless `--out` says where, and never into the
    committed tables (one-line refusal): those change only by adding records (python -m repro.records add)."""
    committed = base / "tables"
    source = runs or base / "records"
    from_records = source.is_dir() and is_records_folder(source)
    if out is None:
        out = committed if from_records else base / "local" / "tables"
    if not from_records and out.resolve() == committed.resolve():
        raise ReproError(f"{committed} is built from the committed records ({base / 'records'}) alone; add your "
                         f"runs to them first (python -m repro.records add --runs {source}) or pass another --out")
    return source, out


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m repro.tables", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=None,
                        help="run folders, or a folder of records (default: the committed records, "
                             "$REPRO_RESULTS/records or results/records)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: results/tables for the committed records, results/local/tables for runs")
    parser.add_argument("--scale", help="only runs at this scale (paper, cpu, smoke)")
    parser.add_argument("--wandb", metavar="PROJECT", help="also log the tables to this W&B project, one group per "
                                                           "sweep (offline unless WANDB_MODE=online)")
    args = parser.parse_args(argv)
    import os

    source, out = default_paths(Path(os.environ.get("REPRO_RESULTS", "results")), args.runs, args.out)
    for problem in corrupt_records(source) if source.is_dir() and not is_records_folder(source) else []:
        print(f"warning: {problem}; left out", file=sys.stderr)
    written = build(source, out, args.scale)
    if args.wandb:
        log_to_wandb(written, args.wandb)


if __name__ == "__main__":
    main()
