"""Learning curves (sweeps/learning_curve.yaml, `make learning-curve CURVE_TASK=glue/<task>`): LoRA and full
fine-tuning from 500 examples to the whole training set, one file set per task (learning_curve_<task>.*), each with
its figure. Table 2's runs of the same recipe are the curve's point at Table 2's own training size."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from repro.cells import MISSING, fmt_cell
from repro.config import identity_tree
from repro.paper import paper_data
from repro.paper_tables.common import (BASELINE_LABEL, aggregate, fmt_baseline, get, in_sweep, label, reproduced,
                                       run_budgets, task_baseline_notes, with_generation_baselines, write_tables)
from repro.paper_tables.spec import Layout, PaperTable
from repro.verdicts import Rule

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
    curve = with_generation_baselines(in_sweep(CURVE_SWEEP)(frame))
    if curve.empty:
        return curve.assign(from_table2=False)

    def recipe(config: dict) -> str:  # identity_tree: a knob added later equals its absence at the old value
        tree = identity_tree(config)
        return repr([get(tree, key) for key in CURVE_RECIPE_KEYS])

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
    return [*task_baseline_notes(long), *([f"Points from Table 2's runs (the same recipe at its own training size): "
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


TITLE = "Learning curves (main metric vs training examples)"
NOTE = "Each task's cpu recipe otherwise; whether a number below its target is still rising with more data."
CELL = "median±std [seeds]"


def write_curves(table: PaperTable, frame: pd.DataFrame, out: Path, rule: Rule) -> list[Path]:
    """Each task's curve in its own files (building from one task's runs leaves the others' committed curves as
    they are), then one figure per task."""
    curve = curve_runs(frame)
    long = curve_long(curve)
    written = []
    for task, part in long.groupby("task"):
        written += write_tables(curve_wide(part), part, out, curve_name(task), table.title, table.note,
                                notes=lambda s, m, part: curve_notes(part),
                                budgets=run_budgets(curve[curve["task"] == task], train_size=False),
                                cell=table.cell_text)
    return written + plot_curves(long, out)


# its own writer: the curve's runs are the sweep's and Table 2's runs of the same recipe (`curve_runs`)
TABLE = PaperTable(
    name=CURVE_SWEEP, title=TITLE, note=NOTE, select=in_sweep(CURVE_SWEEP), long=curve_long,
    layout=Layout(rows=("task", "method"), wide=curve_wide, columns=tuple(CURVE_COLUMNS),
                  cell=lambda r: ((label(r["task"]), label(r["method"])), f"{label(r['train_examples'])} examples"),
                  run_keys=tuple((c, c) for c in ("scale", "model", "task", "method", "train_examples"))),
    notes=lambda long, tables: curve_notes(long), cell_text=CELL, per_task=True, write=write_curves)
