"""Tables 3 (E2E), 13 (DART) and 14 (WebNLG), and a SAMSum table, from generation runs.

Same conventions as Table 2 (`repro.tables`): runs map to paper rows by the experiment's `paper_row`
(conf/experiment/table3), each table section names the model and scale that produced it, and missing cells say
so. Differences that follow the paper: a cell is the *mean* over seeds (Table 3's protocol: mean over 3 seeds,
best epoch), metrics keep their printed scales (BLEU x100, NIST raw, MET/TER fractions ...), and Table 14 has
one column per metric and category split (U unseen, S seen, A all). Runs without a `paper_row` (a method run
directly, or a LoRA variant) are extra rows labelled by method, with no paper value. SAMSum: the paper has
GPT-3 numbers only, so that table has no paper column values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from repro.paper import paper_data
from repro.tables import MISSING, fmt_cell

GENERATION_CELL = "mean±std [seeds] / paper (difference), the paper's printed scales"
# the long (CSV) form of every table here: one row per (scale, model, row, column)
LONG_COLUMNS = ["scale", "model", "row", "column", "mean", "std", "n_seeds", "trainable", "paper", "paper_params",
                "diff"]


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
    """`repro.tables.fmt_cell` with two decimals for values printed below 10 (NIST, CIDEr, MET, TER)."""
    ref = paper if paper is not None else mean
    digits = 2 if ref is not None and not math.isnan(ref) and abs(ref) < 10 else 1
    return fmt_cell(mean, std, n, paper, digits)


def generation_long(frame: pd.DataFrame, spec: GenerationTable) -> pd.DataFrame:
    """One row per (scale, model, row, column): mean, std (ddof 1) and seed count over runs, and the paper's
    value. Every paper row appears for each (scale, model) that has runs of this task."""
    # sweep runs have their own tables (Table 18, lora_variants)
    runs = frame[(frame["task"] == spec.task) & frame["sweep"].isna()] if not frame.empty else frame
    if runs.empty:
        return pd.DataFrame(columns=LONG_COLUMNS)
    runs = runs.assign(row=[r if isinstance(r, str) else m for r, m in zip(runs["paper_row"], runs["method"])])
    paper_rows = paper_data(spec.paper)["rows"] if spec.paper else {}
    out = []
    for (scale, model), part in runs.groupby(["scale", "model"], sort=False):
        labels = list(paper_rows) + sorted(set(part["row"]) - set(paper_rows))
        for label in labels:
            hits = part[part["row"] == label]
            for metric in spec.metrics:
                for split in spec.splits:
                    key = f"best.{column_name(metric, split)}"
                    values = hits[key].dropna() if key in hits else pd.Series(dtype=float)
                    paper = paper_value(paper_rows.get(label, {}), metric, split)
                    out.append({"scale": scale, "model": model, "row": label, "column": column_name(metric, split),
                                "mean": values.mean() if len(values) else math.nan,
                                "std": values.std() if len(values) > 1 else math.nan,
                                "n_seeds": int(hits.loc[values.index, "seed"].nunique()) if len(values) else 0,
                                "trainable": hits["params.trainable"].median() if len(hits) else math.nan,
                                "paper": paper, "paper_params": paper_rows.get(label, {}).get("params_M")})
    long = pd.DataFrame(out, columns=LONG_COLUMNS[:-1])
    long["diff"] = long["mean"] - pd.to_numeric(long["paper"], errors="coerce")
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
        out[(scale, model)] = pd.DataFrame(rows)
    return out


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
        for column, key in (("val_loss", VALIDATION_LOSS), *((m, m) for m in metrics)):
            values = hits[f"best.{key}"].dropna() if f"best.{key}" in hits else pd.Series(dtype=float)
            ref = reference.get(column)
            out.append({"scale": scale, "model": model, "row": f"r={int(r)}", "column": column,
                        "mean": values.mean() if len(values) else math.nan,
                        "std": values.std() if len(values) > 1 else math.nan, "n_seeds": len(values),
                        "trainable": hits["params.trainable"].median(),
                        "paper": None if ref is None else ref * (100 if column in percent else 1),
                        "paper_params": None})
    long = pd.DataFrame(out, columns=LONG_COLUMNS[:-1])
    long["diff"] = long["mean"] - pd.to_numeric(long["paper"], errors="coerce")
    return long
