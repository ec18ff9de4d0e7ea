"""Tables 3 (E2E NLG), 13 (DART), 14 (WebNLG) and a SAMSum table: one PaperTable per
repro.generation.tables.GENERATION_TABLES entry (its task, metrics and conf/paper file), laid out and noted by
repro/generation/tables.py (mean over seeds, the paper's printed scales, the copy-the-input baseline row). A table
with a claims file (conf/paper/<name>_claims.yaml: Table 3) judges the paper's claims on its rows by the verdict
rule, on the file's metric per run."""

from __future__ import annotations

import pandas as pd

from repro.generation.tables import (GENERATION_CELL, GENERATION_TABLES, LONG_COLUMNS, GenerationTable,
                                     generation_long, generation_notes, generation_wide)
from repro.paper import PAPER_DIR, paper_data
from repro.paper_tables.common import cells, label, row_claims, with_generation_baselines
from repro.paper_tables.spec import Claims, Judge, Layout, PaperTable
from repro.verdicts import Rule

NOTE = "Rows map by the experiment's `paper_row`; rows without one are labelled by method."


def by_row(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs with the `row` their cells are keyed by: the paper row, or the method for runs without one."""
    return runs.assign(row=[r if isinstance(r, str) else m for r, m in zip(runs["paper_row"], runs["method"])])


# how a generation table (here and Table 18) maps a long row onto its layout and its runs
LAYOUT = Layout(rows=("row",), wide=generation_wide, columns=tuple(LONG_COLUMNS),
                cell=lambda r: ((label(r["row"]),), label(r["column"])),
                run_keys=(("scale", "scale"), ("model", "model"), ("row", "row")),
                value="mean", n="n_seeds", text_columns=("row", "column"), keyed=by_row)


def claims_judge(name: str) -> Judge | None:
    """The judge of conf/paper/<name>_claims.yaml's claims (row vs row on its metric, pooled over the table's one
    task), or None where the table has no claims file."""
    if not (PAPER_DIR / f"{name}_claims.yaml").exists():
        return None

    def judge(runs: pd.DataFrame, rule: Rule) -> Claims:
        crit = paper_data(f"{name}_claims")
        if not runs.empty and (runs["main_metric"] != crit["metric"]).any():
            return [(c["text"], [f"not judged: the runs' main metric is not {crit['metric']}"])
                    for c in crit["claims"]]
        by_row_cells = cells(with_generation_baselines(by_row(runs)), ["row"], convergence=rule.convergence)
        return row_claims(crit["claims"], lambda row: (row, by_row_cells.get((row,))), rule, f"{crit['metric']}; ")
    return judge


def generation_table(spec: GenerationTable) -> PaperTable:
    """The table of one generation task: its runs outside any sweep (sweeps have their own tables)."""
    def select(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[(frame["task"] == spec.task) & frame["sweep"].isna()] if not frame.empty else frame

    return PaperTable(name=spec.name, title=spec.title, note=NOTE, select=select,
                      long=lambda runs: generation_long(runs, spec), layout=LAYOUT,
                      notes=lambda long, tables: generation_notes(long), claims=claims_judge(spec.name),
                      paper=spec.paper, cell_text=GENERATION_CELL)


TABLES = tuple(generation_table(spec) for spec in GENERATION_TABLES)
