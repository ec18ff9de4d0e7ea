"""What Tables 5 (weight types, `targets`) and 6 (rank, `rank`) share: both are LoRA sweeps (`sweep_name`) on a GLUE
task, aggregated per (task, method, weights, rank), laid out as the paper lays its GPT-3 sweep, and judged by one
claim of conf/paper/verdict_rule.yaml `sweep_claims`. The paper's sweeps are on GPT-3 (WikiSQL, MultiNLI), so their
MultiNLI row is shown as the reference for any GLUE task."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from repro.cells import MISSING, fmt_cell
from repro.paper import paper_data
from repro.paper_tables.common import (BASELINE_LABEL, aggregate, cells, fmt_baseline, with_generation_baselines)
from repro.paper_tables.spec import Claims, Figures, Judged
from repro.verdicts import Cell, Rule, tolerance_from_gap

# the paper's sweep dataset shown as reference for our GLUE task (Tables 5 and 6 are GPT-3 on WikiSQL/MultiNLI)
SWEEP_REFERENCE_DATASET = "MultiNLI"
REFERENCE_NOTE = f"Paper: GPT-3 175B on {SWEEP_REFERENCE_DATASET} (the reference, not the same task or model)."
SWEEP_COLUMNS = ["scale", "model", "task", "method", "targets", "r", "median", "std", "n", "paper", "diff", "baseline", "rising"]
RUN_KEYS = tuple((c, c) for c in ("scale", "model", "task", "method", "targets", "r"))

Reference = Callable[[], dict[tuple[str, int], float]]  # the paper's value per (targets "q,v", rank)
Judge = Callable[[dict[tuple, dict[str, Cell]], dict, Rule], Judged]  # (cells by key, criterion, rule) -> verdicts


def sweep_long(runs: pd.DataFrame, reference: Reference) -> pd.DataFrame:
    """Per (scale, model, task, method, targets, r): median over seeds, the paper's value and the baseline."""
    runs = with_generation_baselines(runs)
    if runs.empty:
        return pd.DataFrame(columns=SWEEP_COLUMNS)
    # by method too: the rank sweep also compares scaling rules (method=lora,rslora)
    agg = aggregate(runs, ["scale", "model", "task", "method", "targets", "r"])
    agg["r"] = agg["r"].astype("Int64")  # a rank, not a measurement: "r=8", not "r=8.0"
    values = reference()
    agg["paper"] = [values.get((t, int(r))) for t, r in zip(agg["targets"], agg["r"])]
    agg["diff"] = agg["median"] - agg["paper"].astype(float)
    return agg[SWEEP_COLUMNS]


def sweep_wide(long: pd.DataFrame, index: list[str], column: str,
               column_label: Callable[[pd.DataFrame], list[str]] | None = None) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (scale, model): the paper's layout (rows `index`, columns the values of `column`, relabelled by
    `column_label`), and per task a trivial-baseline row (the task's baseline in every column that has runs) above
    the task's rows."""
    out = {}
    for (scale, model), part in long.groupby(["scale", "model"], sort=False):
        part = part.assign(cell=[fmt_cell(m, s, n, p, rising=k) for m, s, n, p, k in
                                 zip(part["median"], part["std"], part["n"], part["paper"], part["rising"])])
        if column_label is not None:
            part = part.assign(**{column: column_label(part)})
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


def sweep_judged(runs: pd.DataFrame, name: str, keys: list[str], judge: Judge, rule: Rule) -> Claims:
    """The claim of a sweep table (conf/paper/verdict_rule.yaml `sweep_claims`) on the runs of one (scale, model),
    their cells grouped by `keys`."""
    runs = with_generation_baselines(runs)
    crit = paper_data("verdict_rule")["sweep_claims"][name]
    if not runs.empty and "r" in keys:
        runs = runs[runs["r"].notna()]
        runs = runs.assign(r=runs["r"].astype(int))
    tolerance = tolerance_from_gap(crit["max_gap_points"])
    return [(f"{crit['text']} (tolerance {tolerance:+.1f}: the difference must be above it)",
             judge(cells(runs, keys, convergence=rule.convergence), crit, rule))]


def sweep_figures(name: str, by_rank: bool) -> Figures:
    """The sweep table's figure, `<name>.png` beside it."""
    def plot(long: pd.DataFrame, out: Path) -> list[Path]:
        plot_sweep(long, name, out / f"{name}.png", by_rank)
        return [out / f"{name}.png"]
    return plot


def plot_sweep(long: pd.DataFrame, name: str, path: Path, by_rank: bool) -> None:
    """The sweep's figure: rank on a log axis (Table 6), or one bar per weight set (Table 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (scale, model, task, method, targets), part in long.groupby(["scale", "model", "task", "method", "targets"]):
        label = f"{task} {method} {{{targets}}} ({model}, {scale})"
        if by_rank:
            part = part.sort_values("r")
            ax.errorbar(part["r"], part["median"], yerr=part["std"].fillna(0), marker="o", capsize=3, label=label)
        else:
            ax.bar(label.replace(" (", "\n("), part["median"].iloc[0], yerr=part["std"].fillna(0).iloc[0])
    if by_rank:
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

