"""Any PEFT method through the paper's protocol (sweeps/peft_methods.yaml, `make compare METHODS=vera,pissa,...`):
each method beside LoRA and full fine-tuning on the same tasks, recipe and seeds, one row per (task, method) under
each task's trivial baseline, with the method's trainable parameters, peak memory, time per optimizer step and the
size of its saved weights. Claims, for every method X but the references: "X on par with LoRA" and "X on par with
full fine-tuning" (conf/paper/peft_methods_claims.yaml), judged by the verdict rule. Figure: the main metric
against trainable parameters and against peak memory, each with its Pareto front (`peft_methods_pareto.png`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from repro.paper import paper_data
from repro.paper_tables.common import (aggregate, cells, in_sweep, label, row_claims, task_baseline_notes,
                                       with_generation_baselines)
from repro.paper_tables.lora_variants import cost_wide, cpus_of, with_costs
from repro.paper_tables.spec import Claims, Layout, PaperTable
from repro.verdicts import Rule

NAME = "peft_methods"
CLAIMS = "peft_methods_claims"  # conf/paper/peft_methods_claims.yaml
KEYS = ["scale", "model", "task", "method"]
COST_COLUMNS = ["peak_memory_gib", "step_ms", "adapter_mb"]
COLUMNS = [*KEYS, "median", "std", "n", "trainable", *COST_COLUMNS, "cpus", "baseline", "rising"]
REFERENCES = ("full_ft", "lora")  # first in the table, in this order
# the figure's two panels: (long column on the x axis, its label, log scale)
PARETO_AXES = (("trainable", "trainable parameters (head excluded)", True),
               ("peak_memory_gib", "peak memory (GiB)", False))


def method_order(methods: pd.Series) -> pd.Series:
    """A sort key: the references first, then the other methods by name."""
    return methods.map(lambda m: f"{REFERENCES.index(m)}" if m in REFERENCES else f"9{m}")


def compare_long(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (scale, model, task, method): the main metric's median/std over seeds and the trivial baseline, and the
    medians over seeds of trainable parameters, peak memory, time per optimizer step and saved weights."""
    runs = with_generation_baselines(runs)
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    runs = with_costs(runs)
    costs = runs.groupby(KEYS, dropna=False).agg(**{c: (c, "median") for c in COST_COLUMNS},
                                                  cpus=("cpu", cpus_of)).reset_index()
    long = aggregate(runs, KEYS).merge(costs, on=KEYS)[COLUMNS]
    return long.sort_values(KEYS, key=lambda c: method_order(c) if c.name == "method" else c,
                            kind="stable").reset_index(drop=True)


def compare_claims(runs: pd.DataFrame, rule: Rule) -> Claims:
    """Each compared method against each reference of the claims file, pooled over the tasks both have."""
    if runs.empty:
        return []
    references = paper_data(CLAIMS)["references"]
    methods = sorted(set(runs["method"]) - {ref["than"] for ref in references})
    claims = [{"text": ref["text"].format(method=method), "better": method, "than": ref["than"],
               "max_gap_points": ref["max_gap_points"]} for method in methods for ref in references]
    by_method = cells(with_generation_baselines(runs), ["method"], convergence=rule.convergence)
    return row_claims(claims, lambda method: (method, by_method.get((method,))), rule)


def pareto_front(costs: Sequence[float], values: Sequence[float]) -> list[int]:
    """Indices of the points that no point of lower or equal cost matches or beats, in order of cost."""
    front, best = [], -math.inf
    for i in sorted(range(len(costs)), key=lambda i: (costs[i], -values[i])):
        if values[i] > best:
            front.append(i)
            best = values[i]
    return front


def label_shifts(anchors: Sequence[tuple[float, float]], widths: Sequence[float], height: float) -> list[float]:
    """Upward shifts (pixels) for labels set right of their points so that no two overlap: each label, lowest
    first, moves up past every label already placed that it would cover (methods of one size, as LoRA, PiSSA,
    OLoRA and LoRA+, or of one memory, would otherwise print over each other)."""
    placed: list[tuple[float, float, float]] = []  # each placed label's left, right and bottom
    shifts = [0.0] * len(anchors)
    for i in sorted(range(len(anchors)), key=lambda i: anchors[i][1]):
        (left, bottom), right = anchors[i], anchors[i][0] + widths[i]
        while clash := [b for a0, a1, b in placed if left < a1 and a0 < right and abs(bottom - b) < height]:
            bottom = max(clash) + height
        shifts[i] = bottom - anchors[i][1]
        placed.append((left, right, bottom))
    return shifts


def plot_pareto(long: pd.DataFrame, out: Path) -> list[Path]:
    """One row of panels per (scale, model, task): the main metric (median, std over seeds as a bar) against each
    cost of PARETO_AXES, every method a labelled point, the Pareto front a step line. The y axis spans the methods'
    medians, so that differences of a point or two show; the trivial baseline is a dotted line where it falls inside,
    and named with its value in the legend where it does not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dpi, font = 120, 7
    sections = list(long.groupby(["scale", "model", "task"], sort=False))
    fig, axes = plt.subplots(len(sections), len(PARETO_AXES), figsize=(11, 3.8 * len(sections)), squeeze=False,
                             dpi=dpi)
    labelled = []
    for row, ((scale, model, task), part) in zip(axes, sections):
        for ax, (column, x_label, log) in zip(row, PARETO_AXES):
            points = part.dropna(subset=[column, "median"]).reset_index(drop=True)
            ax.errorbar(points[column], points["median"], yerr=points["std"].fillna(0), fmt="o", ms=4, lw=0.8,
                        capsize=2)
            front = points.iloc[pareto_front(list(points[column]), list(points["median"]))]
            ax.step(front[column], front["median"], where="post", color="tab:red", lw=1, label="Pareto front")
            low, high = points["median"].min(), points["median"].max()
            pad = max(0.15 * (high - low), 1.0)
            bottom, top = low - pad, high + 2.5 * pad  # room above for labels moved up
            ax.set_ylim(bottom, top)
            if pd.notna(baseline := part["baseline"].median()):
                if bottom <= baseline <= top:
                    ax.axhline(baseline, ls=":", color="grey", label="trivial baseline")
                else:  # far below the methods: named in the legend, not drawn
                    ax.plot([], [], ls=":", color="grey", label=f"trivial baseline {baseline:.1f} (off the axis)")
            ax.set_xscale("log" if log else "linear")
            ax.margins(x=0.08)
            ax.set(xlabel=x_label, ylabel="main metric x 100 (median, std over seeds)",
                   title=f"{task} ({model}, {scale})")
            ax.legend(fontsize=font, loc="best")
            labelled.append((ax, points, column))
    fig.tight_layout()  # the axes' final places first: the labels are laid out in pixels
    text_h, char_w = font * dpi / 72 * 1.2, font * dpi / 72 * 0.6
    for ax, points, column in labelled:
        anchors = [(x + 4, y + 2) for x, y in ax.transData.transform(points[[column, "median"]].to_numpy(float))]
        shifts = label_shifts(anchors, [char_w * len(m) for m in points["method"]], text_h)
        for point, shift in zip(points.itertuples(), shifts):
            ax.annotate(point.method, (getattr(point, column), point.median), fontsize=font,
                        xytext=(4, 2 + shift), textcoords="offset pixels",
                        arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "grey"} if shift else None)
    path = out / f"{NAME}_pareto.png"
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return [path]


TABLE = PaperTable(
    name=NAME, title="PEFT methods through the paper's protocol (beside LoRA and full fine-tuning)",
    note="Main metric: the task's (GLUE x100); memory: the run's peak (CPU: resident set; CUDA: torch's max "
         "allocated); ms / step: training time per optimizer step; adapter: the saved trainable weights (the head "
         "included; every weight under full fine-tuning). At cpu scale each method's learning rate comes from the "
         "same search as LoRA's and full fine-tuning's (conf/cpu_recipe/glue.yaml; trials: lr_search.md). No paper "
         "values: the LoRA paper compares none of these methods.",
    select=in_sweep(NAME), long=compare_long,
    layout=Layout(rows=("task", "method"), wide=lambda long: cost_wide(long, lambda c: c.method),
                  columns=tuple(COLUMNS), cell=lambda r: ((label(r["task"]), r["method"]), "main metric"),
                  run_keys=tuple((c, c) for c in KEYS)),
    notes=lambda long, tables: task_baseline_notes(long), claims=compare_claims, figures=plot_pareto,
    cell_text="median±std [seeds]")
