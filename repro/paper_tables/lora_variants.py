"""LoRA and its successors (sweeps/lora_variants.yaml, `make compare-variants`): LoRA, rsLoRA, DoRA, AdaLoRA (and
QLoRA on a GPU) at an equal rank budget, with trainable parameters, peak memory and time per step. No paper values
and no claim: the paper predates these methods."""

from __future__ import annotations

import pandas as pd

from repro.cells import MISSING, fmt_cell
from repro.paper_tables.common import (BASELINE_LABEL, CONSTANT_BASELINE, COPY_BASELINE, NOT_STORED, baseline_notes,
                                       fmt_baseline, in_sweep, label, with_generation_baselines)
from repro.paper_tables.spec import Layout, PaperTable

VARIANTS_SWEEP = "lora_variants"


COLUMNS = ["scale", "model", "task", "method", "median", "std", "n", "trainable", "peak_memory_gib", "step_ms",
           "baseline"]


def variants_long(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (scale, model, task, method): main metric median/std over seeds, trainable parameters, peak memory and
    time per optimizer step (medians over seeds), and the trivial baseline on the main metric."""
    columns = COLUMNS
    runs = with_generation_baselines(runs)
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


TABLE = PaperTable(
    name=VARIANTS_SWEEP, title="LoRA and its successors (equal rank budget)",
    note="Main metric: the task's (GLUE x100, generation on its printed scale); memory: the run's peak (CPU: resident "
         "set; CUDA: torch's max allocated); ms / step: training time per optimizer step. No paper values: the paper "
         "predates these methods.",
    select=in_sweep(VARIANTS_SWEEP), long=variants_long,
    layout=Layout(rows=("task", "method"), wide=variants_wide, columns=tuple(COLUMNS),
                  cell=lambda r: ((label(r["task"]), label(r["method"])), "main metric"),
                  run_keys=tuple((c, c) for c in ("scale", "model", "task", "method"))),
    notes=lambda long, tables: variants_notes(long), cell_text="median±std [seeds]")
