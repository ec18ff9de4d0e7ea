"""LoRA and its successors (sweeps/lora_variants.yaml, `make compare-variants`): LoRA, rsLoRA, DoRA, AdaLoRA (and
QLoRA on a GPU) at an equal trainable-parameter budget (AdaLoRA starts at LoRA's rank), LoRA and rsLoRA also at a
high rank, with trainable parameters, peak memory and time per step, one row per (method, rank). No paper values
(the paper predates these methods); the successors' own claims (conf/paper/lora_variants_claims.yaml) are judged
by the verdict rule against LoRA."""

from __future__ import annotations

from typing import Any, Callable

import pandas as pd

from repro.cells import MISSING, fmt_cell
from repro.paper import paper_data
from repro.paper_tables.common import (BASELINE_LABEL, CONSTANT_BASELINE, COPY_BASELINE, NOT_STORED, baseline_notes,
                                       cells, fmt_baseline, in_sweep, label, row_claims, with_rising,
                                       with_generation_baselines)
from repro.paper_tables.spec import Claims, Layout, PaperTable
from repro.verdicts import Rule

VARIANTS_SWEEP = "lora_variants"
CLAIMS = "lora_variants_claims"  # conf/paper/lora_variants_claims.yaml

COLUMNS = ["scale", "model", "task", "method", "rank", "median", "std", "n", "trainable", "peak_memory_gib",
           "step_ms", "cpus", "baseline", "rising"]


def with_rank(runs: pd.DataFrame) -> pd.DataFrame:
    """Each run's rank: `method.r`, or AdaLoRA's `init_r` (the rank it trains before pruning)."""
    if runs.empty:
        return runs.assign(rank=pd.Series(dtype="Int64"))
    ranks = [r if pd.notna(r) else ((c or {}).get("method") or {}).get("init_r")
             for r, c in zip(runs["r"], runs["config"] if "config" in runs else [None] * len(runs))]
    return runs.assign(rank=pd.array([None if x is None or pd.isna(x) else int(x) for x in ranks], dtype="Int64"))


def row_label(method: str, rank) -> str:
    return method if rank is None or pd.isna(rank) else f"{method} r={int(rank)}"


def with_costs(runs: pd.DataFrame) -> pd.DataFrame:
    """Each run's peak memory (GiB), training time per optimizer step (ms) and saved weights (`adapter_bytes`, MB;
    NaN for runs recorded before result.json stored it)."""
    adapter = runs["adapter_bytes"] if "adapter_bytes" in runs else pd.Series(float("nan"), index=runs.index)
    return runs.assign(peak_memory_gib=runs["peak_memory_bytes"] / 2**30,
                       step_ms=1000 * runs["train_time_s"] / runs["optimizer_steps"].clip(lower=1),
                       adapter_mb=pd.to_numeric(adapter) / 1e6)


def short_cpu(described: str) -> str:
    """A run's CPU as a table cell says it: the model name without trademarks and the words every CPU has
    ("Intel Xeon", "AMD EPYC"), or the device of a GPU run."""
    name = described.split(",")[0].replace("(R)", "").replace("(TM)", "").replace(" Processor", "")
    return " ".join(name.split())


def cpus_of(described: pd.Series) -> str:
    """The CPUs behind one cell's runs: its timings and memory compare only with cells of the same CPU."""
    return " + ".join(sorted({short_cpu(str(d)) for d in described}))


def variants_long(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (scale, model, task, method, rank): main metric median/std over seeds, trainable parameters, peak memory and
    time per optimizer step (medians over seeds), and the trivial baseline on the main metric."""
    columns = COLUMNS
    runs = with_generation_baselines(runs)
    if runs.empty:
        return pd.DataFrame(columns=columns)
    runs = with_rising(with_costs(with_rank(runs)))
    grouped = runs.groupby(["scale", "model", "task", "method", "rank"], sort=False, dropna=False)
    long = grouped.agg(median=("value", "median"), std=("value", "std"), n=("seed", "nunique"),
                       trainable=("params.trainable", "median"), peak_memory_gib=("peak_memory_gib", "median"),
                       step_ms=("step_ms", "median"), cpus=("cpu", cpus_of), baseline=("baseline", "median"),
                       rising=("rising", "sum")).reset_index()[columns]
    from repro.methods import LORA_FAMILY  # here, not at the top: it imports torch and peft (seconds)

    order = {name: i for i, name in enumerate(LORA_FAMILY)}  # lora first, then its successors
    return long.sort_values(["scale", "model", "task", "method", "rank"],
                            key=lambda c: c.map(order) if c.name == "method" else c, kind="stable"
                            ).reset_index(drop=True)


# the cost columns of a row (a long row as a namedtuple) -> their text; `adapter_mb` where the long form has it
COSTS = {"trainable": lambda c: f"{c.trainable / 1e6:.3f}M", "peak memory (GiB)": lambda c: f"{c.peak_memory_gib:.2f}",
         "ms / step": lambda c: f"{c.step_ms:.0f}", "adapter (MB)": lambda c: fmt_baseline(c.adapter_mb, 2),
         "CPU": lambda c: c.cpus}


def cost_wide(long: pd.DataFrame, row: Callable[[Any], str]) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (scale, model): one row per long row (`row`: its label in the method column) with the main metric and the
    costs, each task's trivial-baseline row first."""
    costs = {k: f for k, f in COSTS.items() if k != "adapter (MB)" or "adapter_mb" in long}
    out = {}
    for (scale, model), part in long.groupby(["scale", "model"], sort=False):
        rows = []
        for task, cells_ in part.groupby("task", sort=False):
            rows.append({"task": task, "method": BASELINE_LABEL,
                         "main metric": fmt_baseline(cells_["baseline"].median()), **{k: "" for k in costs}})
            rows += [{"task": task, "method": row(c),
                      "main metric": fmt_cell(c.median, c.std, c.n, None, rising=c.rising).removesuffix(f" / {MISSING}"),
                      **{k: f(c) for k, f in costs.items()}} for c in cells_.itertuples()]
        out[(scale, model)] = pd.DataFrame(rows)
    return out


def variants_wide(long: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (scale, model): one row per (task, method, rank), each task's trivial-baseline row first."""
    return cost_wide(long, lambda c: row_label(c.method, c.rank))


def variants_notes(long: pd.DataFrame) -> list[str]:
    return baseline_notes(long.groupby("task", sort=False)["baseline"].median(),
                          long.groupby("task", sort=False)["n"].max() > 0, f"{CONSTANT_BASELINE}; {COPY_BASELINE}",
                          f"{NOT_STORED} (classification) or saved no outputs (generation)")


def variants_claims(runs: pd.DataFrame, rule: Rule) -> Claims:
    """Each successor against LoRA (conf/paper/lora_variants_claims.yaml), on the rows named by (method, rank),
    pooled over the tasks both have."""
    by_key = cells(with_rank(with_generation_baselines(runs)), ["method", "rank"], convergence=rule.convergence)
    return row_claims(paper_data(CLAIMS)["claims"], lambda row: (row_label(row["method"], row["r"]),
                                                                 by_key.get((row["method"], row["r"]))), rule)


TABLE = PaperTable(
    name=VARIANTS_SWEEP, title="LoRA and its successors (equal trainable budget)",
    note="Main metric: the task's (GLUE x100, generation on its printed scale); memory: the run's peak (CPU: resident "
         "set; CUDA: torch's max allocated); ms / step: training time per optimizer step. No paper values: the paper "
         "predates these methods.",
    select=in_sweep(VARIANTS_SWEEP), long=variants_long,
    layout=Layout(rows=("task", "method"), wide=variants_wide, columns=tuple(COLUMNS),
                  cell=lambda r: ((label(r["task"]), row_label(r["method"], r["rank"])), "main metric"),
                  run_keys=tuple((c, c) for c in ("scale", "model", "task", "method", "rank")), keyed=with_rank),
    notes=lambda long, tables: variants_notes(long), claims=variants_claims, cell_text="median±std [seeds]")
