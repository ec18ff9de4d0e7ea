"""Tables 3 (E2E), 13 (DART) and 14 (WebNLG), and a SAMSum table, from generation runs.

Same conventions as Table 2 (`repro.tables`): runs map to paper rows by the experiment's `paper_row`
(conf/experiment/table3), each table section names the model and scale that produced it, and missing cells say
so. Differences that follow the paper: a cell is the *mean* over seeds (Table 3's protocol: mean over 3 seeds,
best epoch), metrics keep their printed scales (BLEU x100, NIST raw, MET/TER fractions ...), and Table 14 has
one column per metric and category split (U unseen, S seen, A all). Runs without a `paper_row` (a method run
directly, or a LoRA variant) are extra rows labelled by method, with no paper value. SAMSum: the paper has
GPT-3 numbers only, so that table has no paper column values.

Trivial baseline: each table has a row "trivial baseline (copy the input)": every test input (its linearised
meaning representation, triples or dialogue) copied as the output and scored like a hypothesis against its
references with the task's scorer. It is computed from what a run saved, `outputs/<split>.epoch<k>.jsonl` (one line
per input: `source`, `hypothesis`, `references`; the first split of `best_outputs` is the headline one), so it
needs no model; runs without saved outputs leave it missing. WebNLG's seen/unseen columns are n/a: which categories
are seen is not saved with the outputs; so are a validation loss and, without Java, METEOR.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from repro.paper import paper_data
from repro.cells import MISSING, NOT_AVAILABLE, RELEASED_LABEL, fmt_cell
from repro.results import SOURCE_IMPORTED

GENERATION_CELL = "mean±std [seeds] / paper (difference), the paper's printed scales"
BASELINE_ROW = "trivial baseline (copy the input)"
# the long (CSV) form of every table here: one row per (scale, model, row, column); `baseline`: the copy-the-input
# score of that cell's runs' test inputs (median over runs), `baseline_runs`: how many runs it could be computed from
LONG_COLUMNS = ["scale", "model", "row", "column", "mean", "std", "n_seeds", "trainable", "paper", "paper_params",
                "diff", "baseline", "baseline_runs"]


@dataclass(frozen=True)
class GenerationTable:
    name: str          # output file stem
    title: str
    task: str          # task.name of the runs
    paper: str | None  # conf/paper/<paper>.yaml
    metrics: tuple[str, ...]
    splits: tuple[str, ...] = ("",)  # "" = all inputs; WebNLG adds _U / _S columns


GENERATION_TABLES = (
    GenerationTable("table3", "Table 3 (E2E NLG)", "e2e", "table3_e2e", ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")),
    GenerationTable("table13", "Table 13 (DART)", "dart", "table13_dart", ("BLEU", "MET", "TER")),
    GenerationTable("table14", "Table 14 (WebNLG)", "webnlg", "table14_webnlg", ("BLEU", "MET", "TER"),
                    ("U", "S", "")),
    GenerationTable("samsum", "SAMSum summarisation", "samsum", None, ("ROUGE_1", "ROUGE_2", "ROUGE_L")),
)


def column_name(metric: str, split: str) -> str:
    """Result-record key and table column: `BLEU_U`, `BLEU_S`, `BLEU` (all)."""
    return f"{metric}_{split}" if split else metric


def paper_value(row: dict, metric: str, split: str) -> float | None:
    value = row.get(metric)
    if isinstance(value, dict):  # Table 14: {U, S, A}
        value = value.get(split or "A")
    return value


def fmt(mean: float, std: float, n: int, paper: float | None) -> str:
    """`repro.cells.fmt_cell` with two decimals for values printed below 10 (NIST, CIDEr, MET, TER)."""
    return fmt_cell(mean, std, n, paper, _digits(paper if paper is not None else mean))


def _digits(ref: float | None) -> int:
    return 2 if ref is not None and not math.isnan(ref) and abs(ref) < 10 else 1


# --- the trivial baseline: copy the input ----------------------------------------------------------------------

_COPY_SCORES: dict[tuple[str, str], dict[str, float]] = {}  # (metric set, digest of inputs and references) -> scores


def copy_input_baseline(run_dir: str | Path | None, best_outputs: dict | None, metric_set: str
                        ) -> dict[str, float] | None:
    """Scores of the input copied as the output on the run's headline eval split (the first of `best_outputs`, whose
    metrics are the unprefixed ones), from the outputs file the run saved; each line holds the input (`source`) and
    its `references`. None when the run saved no readable outputs. Keys as the run's metrics (`BLEU`, `NIST`, ...),
    on the same printed scales; no `_S`/`_U` keys (the seen categories are not saved). Scored once per distinct
    set of inputs and references."""
    if run_dir is None or not isinstance(best_outputs, dict) or not best_outputs:
        return None
    relative = next(iter(best_outputs.values()))
    if not relative:
        return None
    try:
        lines = [json.loads(line) for line in (Path(run_dir) / relative).read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    except (OSError, ValueError):
        return None
    if not lines or any(not isinstance(line.get("source"), str) or not line.get("references") for line in lines):
        return None
    sources, references = [line["source"] for line in lines], [list(line["references"]) for line in lines]
    key = (metric_set, hashlib.sha256(json.dumps([sources, references]).encode()).hexdigest())
    if key not in _COPY_SCORES:
        from repro.generation.metrics import score  # sacrebleu, pycocoevalcap: only when there is something to score

        _COPY_SCORES[key] = score(metric_set, sources, references)
    return _COPY_SCORES[key]


def run_copy_baseline(row: pd.Series) -> dict[str, float] | None:
    """`copy_input_baseline` of one row of `repro.tables.runs_frame`."""
    config = row.get("config") or {}
    task = config.get("task") or {}
    metric_set = task.get("metric_set") or task.get("name") or row.get("task")
    return copy_input_baseline(row.get("run_dir"), row.get("best_outputs"), metric_set)


def _baselines(hits: pd.DataFrame) -> list[dict[str, float]]:
    """The copy-the-input scores of the runs in `hits` that saved outputs."""
    return [b for _, row in hits.iterrows() if (b := run_copy_baseline(row)) is not None]


def _baseline_cell(scores: list[dict[str, float]], key: str) -> tuple[float, int]:
    values = [s[key] for s in scores if key in s]
    return (float(pd.Series(values).median()) if values else math.nan), len(scores)


RELEASED_SUFFIX = f" [{RELEASED_LABEL}]"


def row_label(row: str, source: str) -> str:
    """A run's row: its paper row (or method), with " [released checkpoint]" for an imported checkpoint, which then
    sits beside the reproduced row and is compared with the same paper values."""
    return row + RELEASED_SUFFIX if source == SOURCE_IMPORTED else row


def generation_long(frame: pd.DataFrame, spec: GenerationTable) -> pd.DataFrame:
    """One row per (scale, model, row, column): mean, std (ddof 1) and seed count over runs, and the paper's
    value. Every paper row appears for each (scale, model) that has runs of this task."""
    # sweep runs have their own tables (Table 18, lora_variants)
    runs = frame[(frame["task"] == spec.task) & frame["sweep"].isna()] if not frame.empty else frame
    if runs.empty:
        return pd.DataFrame(columns=LONG_COLUMNS)
    sources = runs["source"] if "source" in runs else pd.Series("trained", index=runs.index)
    runs = runs.assign(row=[row_label(r if isinstance(r, str) else m, source)
                            for r, m, source in zip(runs["paper_row"], runs["method"], sources)])
    paper_rows = paper_data(spec.paper)["rows"] if spec.paper else {}
    out = []
    for (scale, model), part in runs.groupby(["scale", "model"], sort=False):
        # each paper row, then its released checkpoint's row when one was imported; then rows without a paper row
        released = set(part["row"])
        labels = [label for row in paper_rows for label in (row, row_label(row, SOURCE_IMPORTED))
                  if label == row or label in released]
        labels += sorted(set(part["row"]) - set(labels))
        for label in labels:
            hits = part[part["row"] == label]
            scores = _baselines(hits)
            reference = paper_rows.get(label.removesuffix(RELEASED_SUFFIX), {})
            for metric in spec.metrics:
                for split in spec.splits:
                    key = f"best.{column_name(metric, split)}"
                    values = hits[key].dropna() if key in hits else pd.Series(dtype=float)
                    paper = paper_value(reference, metric, split)
                    baseline, baseline_runs = _baseline_cell(scores, column_name(metric, split))
                    out.append({"scale": scale, "model": model, "row": label, "column": column_name(metric, split),
                                "mean": values.mean() if len(values) else math.nan,
                                "std": values.std() if len(values) > 1 else math.nan,
                                "n_seeds": int(hits.loc[values.index, "seed"].nunique()) if len(values) else 0,
                                "trainable": hits["params.trainable"].median() if len(hits) else math.nan,
                                "paper": paper, "paper_params": reference.get("params_M"),
                                "baseline": baseline, "baseline_runs": baseline_runs})
    return _with_diff(out)


def _with_diff(rows: list[dict]) -> pd.DataFrame:
    long = pd.DataFrame(rows, columns=[c for c in LONG_COLUMNS if c != "diff"])
    long.insert(LONG_COLUMNS.index("diff"), "diff", long["mean"] - pd.to_numeric(long["paper"], errors="coerce"))
    return long


def generation_wide(long: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (scale, model): rows x metric columns, formatted cells, parameters ours beside the paper's."""
    out = {}
    for (scale, model), part in long.groupby(["scale", "model"], sort=False):
        rows = []
        for label, cells in part.groupby("row", sort=False):
            params = cells["trainable"].dropna()
            paper_params = cells["paper_params"].iloc[0]
            record = {"row": label,
                      "params (paper)": MISSING if paper_params is None or pd.isna(paper_params) else f"{paper_params}M",
                      "params (ours)": f"{params.iloc[0] / 1e6:.2f}M" if len(params) else MISSING}
            for cell in cells.itertuples():
                paper = None if cell.paper is None or pd.isna(cell.paper) else float(cell.paper)
                record[cell.column] = fmt(cell.mean, cell.std, cell.n_seeds, paper)
            rows.append(record)
        out[(scale, model)] = pd.DataFrame([baseline_row(part), *rows])
    return out


def baseline_row(part: pd.DataFrame) -> dict[str, str]:
    """The copy-the-input row of one (scale, model): per column the median over the cells' baselines; n/a where it
    cannot be computed from the saved outputs, missing where no run saved outputs."""
    record = {"row": BASELINE_ROW, "params (paper)": "", "params (ours)": ""}
    for column, cells in part.groupby("column", sort=False):
        value, runs = cells["baseline"].median(), cells["baseline_runs"].sum()
        if pd.notna(value):
            papers = pd.to_numeric(cells["paper"], errors="coerce").dropna()
            record[column] = f"{value:.{_digits(float(papers.iloc[0]) if len(papers) else value)}f}"
        else:
            record[column] = NOT_AVAILABLE if runs else MISSING
    return record


def generation_notes(part: pd.DataFrame) -> list[str]:
    """Under a generation table: what its baseline row is, and where it is n/a or missing."""
    lines = [f"Row \"{BASELINE_ROW}\": every test input copied as the output and scored against its "
             "references with the task's scorer, from the outputs file each run saved "
             "(`outputs/<split>.epoch<k>.jsonl`: input, hypothesis, references); median over runs. No claim is "
             "judged on this table."]
    with_runs = part[part["n_seeds"] > 0]
    if with_runs.empty:
        return lines
    without = list(dict.fromkeys(with_runs.loc[with_runs["baseline_runs"] == 0, "row"]))
    if len(without) == with_runs["row"].nunique():
        lines.append(f"Trivial baseline missing ({MISSING}): no run saved readable outputs.")
        return lines
    if without:
        lines.append(f"Runs of {', '.join(without)} saved no readable outputs: the baseline row comes from the "
                     "other rows' runs.")
    na = [c for c, cells in part.groupby("column", sort=False)
          if cells["baseline"].isna().all() and cells["baseline_runs"].sum() > 0]
    if na:
        why = {"seen/unseen split": "the training categories that define it are not saved with the outputs",
               "validation loss": "copying has no loss",
               "METEOR": "METEOR needs Java, not found", "other": "the task's scorer gave no value"}
        kinds = dict.fromkeys("seen/unseen split" if c.endswith(("_U", "_S")) else "validation loss" if c == "val_loss"
                              else "METEOR" if c in ("METEOR", "MET") else "other" for c in na)
        lines.append(f"{NOT_AVAILABLE} for {', '.join(na)}: not computable from what runs saved ("
                     + "; ".join(f"{k}: {why[k]}" for k in kinds) + ").")
    return lines


# --- Table 18: the GPT-2 rank sweep (sweeps/gpt2_rank.yaml) -------------------------------------------------------

RANK_SWEEP = "gpt2_rank"
# our record key for Table 18's validation loss; the metrics are the test split's headline ones
VALIDATION_LOSS = "validation/loss"


def rank_sweep_long(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (scale, model, r, column) of the rank sweep: mean/std over seeds beside Table 18. Table 18 prints
    METEOR and ROUGE_L as fractions; they are put on Table 3's x100 scale, as our records keep them."""
    runs = frame[frame["sweep"] == RANK_SWEEP] if not frame.empty else frame
    if runs.empty:
        return pd.DataFrame(columns=LONG_COLUMNS)
    paper = paper_data("table18_gpt2_rank")
    metrics = paper_data("table3_e2e")["metrics"]
    percent = set(metrics) & {"METEOR", "ROUGE_L"}
    out = []
    for (scale, model, r), hits in runs.groupby(["scale", "model", "r"], sort=True):
        reference = paper["rows"].get(int(r), {})
        scores = _baselines(hits)
        for column, key in (("val_loss", VALIDATION_LOSS), *((m, m) for m in metrics)):
            values = hits[f"best.{key}"].dropna() if f"best.{key}" in hits else pd.Series(dtype=float)
            ref = reference.get(column)
            baseline, baseline_runs = _baseline_cell(scores, key)
            out.append({"scale": scale, "model": model, "row": f"r={int(r)}", "column": column,
                        "mean": values.mean() if len(values) else math.nan,
                        "std": values.std() if len(values) > 1 else math.nan, "n_seeds": len(values),
                        "trainable": hits["params.trainable"].median(),
                        "paper": None if ref is None else ref * (100 if column in percent else 1),
                        "paper_params": None, "baseline": baseline, "baseline_runs": baseline_runs})
    return _with_diff(out)
