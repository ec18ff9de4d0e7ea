"""The registry of paper tables: name -> PaperTable (repro/paper_tables/spec.py), in the order the report shows them.

Each table is declared once, in its own module here (table2.py, rank.py, targets.py, generation.py, ...): its file
stem, title, the runs it counts, its layout, notes (trivial baseline), claims, figures and conf/paper key.
`python -m repro.tables` builds every registered table, `python -m repro.report` shows every one with `report=True`,
`repro.tables.all_claims` (the verdicts `repro.decide` adds seeds for) judges every one with claims. A new table is
a new module and one line below; see docs/configuration.md ("Paper tables").
"""

from __future__ import annotations

import pandas as pd

from repro.paper_tables import (generation, learning_curve, longlora, lora_variants, lr_search, peft_methods, precision,
                                rank, table2, table18, targets)
from repro.paper_tables.spec import PaperTable

REGISTRY: dict[str, PaperTable] = {t.name: t for t in (
    table2.TABLE, rank.TABLE, targets.TABLE, *generation.TABLES, table18.TABLE, learning_curve.TABLE,
    lora_variants.TABLE, peft_methods.TABLE, lr_search.TABLE, longlora.TABLE, precision.TABLE)}


def tables() -> list[PaperTable]:
    """Every registered table, in the report's order."""
    return list(REGISTRY.values())


def build_order() -> list[PaperTable]:
    """The registered tables with each one after the tables it reads (`after`): Table 2's notes point to the
    learning curves' files."""
    done: dict[str, PaperTable] = {}

    def visit(table: PaperTable) -> None:
        for name in table.after:
            if name in REGISTRY and name not in done:
                visit(REGISTRY[name])
        done.setdefault(table.name, table)

    for table in REGISTRY.values():
        visit(table)
    return list(done.values())


def shared_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs the non-exclusive tables draw on: all but those of exclusive tables (the learning-rate search,
    scored on held-out training data, is counted in no other table)."""
    for table in REGISTRY.values():
        if table.exclusive and not frame.empty:
            frame = frame.drop(table.select(frame).index)
    return frame


def section_precision(frame: pd.DataFrame) -> pd.Series:
    """Per run, the one training precision its (scale, model) section is counted in: fp32 where the section has
    fp32 runs, else the precision most of its runs used."""
    def chosen(precisions: pd.Series) -> str:
        counts = precisions.value_counts()
        return "fp32" if "fp32" in counts else counts.index[0]

    return frame.groupby(["scale", "model"], dropna=False, sort=False)["precision"].transform(chosen)


def one_precision(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs of each (scale, model) section's one precision (`section_precision`). A table whose cells do not
    tell precisions apart never pools them (bf16 runs made on a bf16 CPU beside committed fp32 runs:
    repro/paper_tables/precision.py compares them)."""
    if frame.empty or frame["precision"].nunique() < 2:
        return frame
    return frame[frame["precision"] == section_precision(frame)]


def runs_for(table: PaperTable, frame: pd.DataFrame) -> pd.DataFrame:
    """The runs `table` may draw on (its `select` picks among them): one precision per section unless the table
    keeps precisions apart."""
    frame = frame if table.exclusive else shared_runs(frame)
    return frame if table.precisions else one_precision(frame)
