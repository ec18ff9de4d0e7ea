"""What every paper table shares: per-seed aggregation, the verdicts' cells, trivial-baseline notes, the claims
summary, the training-budget header and the writer of a table's .md/.csv/.tex (`write_paper_table`). The per-table
modules beside this one use these; repro.tables and repro.report read the tables through the registry."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import pandas as pd

from repro.cells import MISSING
from repro.generation.tables import run_copy_baseline
from repro.kinds import traits
from repro.paper_tables.spec import MEDIAN_CELL, Claims, PaperTable, Select
from repro.results import SOURCE_IMPORTED
from repro.verdicts import Cell, Convergence, Rule, Verdict, compare, decide, load_rule, tolerance_from_gap

BASELINE_LABEL = "trivial baseline"
SCALE_PERCENT = 100  # results store fractions; the paper prints 0-100


def get(config: dict, dotted: str):
    """`config["a"]["b"]` for "a.b", None where any part is absent."""
    for part in dotted.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def label(value) -> str:
    """A key as text, so that a CSV's `8` and a run's `8.0` (or NaN and None) compare equal."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def in_sweep(name: str) -> Select:
    """The select of a sweep's table: the runs of `sweep_name` `name`."""
    return lambda frame: frame[frame["sweep"] == name] if not frame.empty else frame


def reproduced(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs trained here (not imported): what claims and training-budget headers are about."""
    return frame[frame["source"] != SOURCE_IMPORTED] if len(frame) and "source" in frame else frame


def section(frame: pd.DataFrame, scale: str, model: str) -> pd.DataFrame:
    """The rows of one (scale, model) section of a table."""
    return frame[(frame["scale"] == scale) & (frame["model"] == model)] if not frame.empty else frame


def aggregate(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Median, standard deviation (over seeds, ddof 1; undefined for one seed) and seed count per group, the
    median trivial baseline of the group's runs (NaN when none stored it), and how many runs were still rising
    (not converged by the verdict rule's convergence)."""
    frame = with_rising(frame if "baseline" in frame else frame.assign(baseline=math.nan))
    grouped = frame.groupby(keys, dropna=False)
    return grouped.agg(median=("value", "median"), std=("value", "std"), n=("seed", "nunique"),
                       trainable=("params.trainable", "median"), baseline=("baseline", "median"),
                       rising=("rising", "sum")).reset_index()


def with_rising(runs: pd.DataFrame) -> pd.DataFrame:
    """`rising`: whether each run was still improving at its last epoch (not converged by the verdict rule's
    convergence; False where the run does not say)."""
    flags = converged(runs, load_rule().convergence) if len(runs) else None
    return runs.assign(rising=[flag is False for flag in flags] if flags is not None else False)


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


# a claim's row spec -> (its label, its cells by task, or None where the row has no runs)
FindRow = Callable[[object], tuple[str, "dict[str, Cell] | None"]]


def row_claims(claims: list[dict], find: FindRow, rule: Rule, unit: str = "") -> Claims:
    """Claims of a claims file, each "row `better` beats row `than` by more than -max_gap_points", judged on the
    rows' cells (`find`), or not testable where a row has no runs. `unit`: what the points are, for the text."""
    out: Claims = []
    for claim in claims:
        (name_a, a), (name_b, b) = find(claim["better"]), find(claim["than"])
        tolerance = tolerance_from_gap(claim["max_gap_points"])
        missing = [name for name, found in ((name_a, a), (name_b, b)) if found is None]
        out.append((f"{claim['text']} ({unit}tolerance {tolerance:+.1f}: the difference must be above it)",
                    [f"not testable: no runs of {' or '.join(missing)}"] if missing else
                    [compare(name_a, a, name_b, b, tolerance, rule)]))
    return out


def with_generation_baselines(runs: pd.DataFrame) -> pd.DataFrame:
    """`baseline` of generation runs (a sweep or the variants may run on E2E...): the input copied as the output,
    scored on the run's main metric from its saved outputs (repro.generation.tables.copy_input_baseline)."""
    if runs.empty or "kind" not in runs:
        return runs
    generation = runs["kind"].map(lambda kind: traits(kind).copy_input_baseline)
    if not generation.any():
        return runs
    scores = [run_copy_baseline(row) or {} for _, row in runs[generation].iterrows()]
    runs = runs.copy()
    runs.loc[generation, "baseline"] = [s.get(m, math.nan) for s, m in zip(scores, runs.loc[generation, "main_metric"])]
    return runs


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


def task_baseline_notes(long: pd.DataFrame) -> list[str]:
    """`baseline_notes` of a table with one trivial baseline per task (long columns `task`, `baseline`, `n`)."""
    return baseline_notes(long.groupby("task", sort=False)["baseline"].median(),
                          long.groupby("task", sort=False)["n"].max() > 0)


# --- claims ---------------------------------------------------------------------------------------------------

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


# --- writing --------------------------------------------------------------------------------------------------

def _header(title: str, scale: str, model: str, note: str, budget: str = "", cell: str = MEDIAN_CELL) -> str:
    return (f"{title}\n\nReproduced numbers: model `{model}` at scale `{scale}`{budget}. Cell: {cell}; "
            f"{MISSING} = no run. {note}")


def run_budgets(frame: pd.DataFrame, train_size: bool = True) -> dict[tuple[str, str], str]:
    """(scale, model) -> the training budgets of its runs and their learning rates, so a table says how much data
    and training it saw (without the training-set size where the table's columns give it: the learning curves)."""
    def describe(c: dict, used: float | None) -> str:
        train, dev = get(c, "data.max_train_samples"), get(c, "data.max_eval_samples")
        if train and used is not None and not pd.isna(used) and used < train:  # a cap above the task's size
            train = f"{int(used)} (all)"
        size = f"{train or 'all'} train / " if train_size else ""
        return (f"{get(c, 'task.name')}: {size}{dev or 'all'} eval examples, "
                f"{get(c, 'train.epochs')} epochs, batch {get(c, 'train.batch_size')}, "
                f"length {get(c, 'data.max_seq_len')}")

    def with_rates(part: pd.DataFrame) -> str:
        """Each budget with the learning rates its runs used (methods, and tasks within a table, differ)."""
        rates = part.groupby("budget")["rate"].agg(lambda r: sorted({float(x) for x in r if not pd.isna(x)}))
        return "; ".join(budget + (", learning rate " + "/".join(f"{x:g}" for x in lrs) if lrs else "")
                         for budget, lrs in sorted(rates.items()))

    frame = reproduced(frame)  # an imported checkpoint was not trained on these budgets
    if frame.empty:
        return {}
    used = frame["train_examples"] if "train_examples" in frame else [None] * len(frame)
    frame = frame.assign(budget=[describe(c, n) for c, n in zip(frame["config"], used)],
                         rate=[get(c, "train.learning_rate") for c in frame["config"]])
    if "code" not in frame:
        frame = frame.assign(code="unknown", cpu="CPU not recorded")
    out = {}
    for key, part in frame.groupby(["scale", "model"]):
        out[key] = (" (" + with_rates(part) + "). Runs from code " +
                    ", ".join(sorted(set(part["code"]))) + " on " + "; ".join(sorted(set(part["cpu"]))))
    return out


NO_RUNS = "no complete runs for this table"
STALE_BANNER = ("> **Stale: not rebuilt from the committed records.** No record under results/records holds this "
                "table's runs; what follows was built earlier from run folders, by older code, and may use an older "
                "verdict rule. Re-run its experiments (README, \"Reproducing each table\") and add their records "
                "(python -m repro.records add) to rebuild it.")


def keep_stale(path: Path) -> list[Path]:
    """A committed table none of whose runs is among the records: kept (not blanked), with `STALE_BANNER` under
    its title so no reader takes it for evidence the records back. Nothing is written when the banner is there."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if any(NO_RUNS in line for line in lines):
        print(f"kept {path}: no runs for it")
        return []
    if STALE_BANNER not in lines:
        path.write_text("\n".join([lines[0], "", STALE_BANNER, *lines[1:]]), encoding="utf-8")
    print(f"kept {path}: no runs for it here (marked stale)")
    return []


SectionNotes = Callable[[str, str, pd.DataFrame], list[str]]  # (scale, model, that section's long rows) -> lines


def write_tables(wide: dict, long: pd.DataFrame, out: Path, name: str, title: str, note: str,
                 notes: SectionNotes | None = None,
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
            return keep_stale(paths[0])
        md = [f"## {title}", "", f"{NO_RUNS} ({MISSING} everywhere)."]
    paths[0].write_text("\n".join(md) + "\n", encoding="utf-8")
    long.to_csv(paths[1], index=False)
    paths[2].write_text("\n".join(tex) + "\n", encoding="utf-8")
    return paths


def write_paper_table(table: PaperTable, frame: pd.DataFrame, out: Path, rule: Rule) -> list[Path]:
    """The usual table: its runs -> long (the CSV) -> the paper's layout per (scale, model), each section followed
    by its notes and its claims judged by the rule; then its figures."""
    runs = table.select(frame)
    long = table.long(runs)

    def notes(scale: str, model: str, part: pd.DataFrame) -> list[str]:
        lines = table.notes(part, out) if table.notes else []
        if table.claims is not None:
            lines = [*lines, "", *judged_lines(table.claims(section(runs, scale, model), rule), rule)]
        return lines

    written = write_tables(table.layout.wide(long), long, out, table.name, table.title, table.note,
                           notes if table.notes or table.claims else None,
                           budgets=run_budgets(runs), cell=table.cell_text)
    if table.figures is not None and not long.empty:
        written += table.figures(long, out)
    return written
