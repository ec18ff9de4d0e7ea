"""What a paper table is, declared once: `PaperTable`. One module per table under repro/paper_tables/ makes one (or a
few, for tables of the same kind) and repro/paper_tables/__init__.py registers it; `repro.tables` builds every
registered table, `repro.report` shows them, `repro.tables.all_claims` (and so `repro.decide`) judges their claims.
Why one declaration: a new table used to touch five dicts in two modules; now it is one module and its conf/paper
YAML."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Union

import pandas as pd

if TYPE_CHECKING:
    from repro.verdicts import Rule, Verdict

MEDIAN_CELL = ("median±std [seeds, and how many were still rising: improving at their last epoch by the verdict "
               "rule's convergence] / paper (difference), 0-100 scale")

Judged = list[Union["Verdict", str]]  # a claim's verdicts (statistical ones get the table's Holm correction) or lines
Claims = list[tuple[str, Judged]]     # (claim text, its verdicts) of one table section

Select = Callable[[pd.DataFrame], pd.DataFrame]  # repro.tables.runs_frame rows -> the runs a table counts
Wide = Callable[[pd.DataFrame], dict]            # long rows -> {(scale, model): the paper's layout, formatted cells}
Notes = Callable[[pd.DataFrame, Path], list[str]]  # (one (scale, model) section's long rows, tables folder) -> lines
Judge = Callable[[pd.DataFrame, "Rule"], Claims]   # (one section's runs, verdict rule) -> its claims, undecided
Figures = Callable[[pd.DataFrame, Path], list[Path]]  # (long rows, tables folder) -> the figures it wrote


@dataclass(frozen=True)
class Layout:
    """The paper's layout of a table and how one long (CSV) row maps onto it: `repro.tables` writes `wide`, the
    report colours it cell by cell and finds each cell's runs by `run_keys`."""

    rows: tuple[str, ...]                             # the wide frame's row-label columns
    wide: Wide
    cell: Callable[[pd.Series], tuple[tuple[str, ...], str]]  # long row -> (row labels, column label) in `wide`
    columns: tuple[str, ...]                          # the long CSV's columns (older CSVs lack some: read as missing)
    run_keys: tuple[tuple[str, str], ...]             # (long column, runs column) pairs that select one cell's runs
    value: str = "median"                             # the long column with the reproduced number
    n: str = "n"                                      # ... and with its seed count
    text_columns: tuple[str, ...] = ()                # long columns read as text (empty = "")
    keyed: Select | None = None                       # adds runs columns that `run_keys` need (generation: `row`)


# (the table, the runs it may draw on: every run, less those of exclusive tables unless it is one; the tables folder;
# the verdict rule) -> the files written
Writer = Callable[["PaperTable", pd.DataFrame, Path, "Rule"], list[Path]]


@dataclass(frozen=True)
class PaperTable:
    """One table of the paper (or of its successors): its files, title, the runs it counts, its layout, the lines
    under it (trivial baseline, targets), its claims, figures and paper values, and how the report shows it."""

    name: str                       # registry key and file stem: <name>.md / .csv / .tex (per_task: <name>_<task>.*)
    title: str
    note: str                       # one line under the title: how runs map to rows, what the paper's numbers are
    select: Select                  # the runs it counts (also what `all_runs` lists it for)
    long: Callable[[pd.DataFrame], pd.DataFrame] | None  # its runs -> the long form (the CSV), paper values beside
    layout: Layout | None           # None: the CSV is the table itself, shown as it is (LongLoRA)
    notes: Notes | None             # lines under each section: the trivial-baseline row and where it is missing
    claims: Judge | None = None     # its claims, judged by conf/paper/verdict_rule.yaml; None: none judged here
    paper: str | None = None        # conf/paper/<paper>.yaml: the paper's values (None: the paper has none)
    cell_text: str = MEDIAN_CELL    # what a cell shows (the header's caption)
    figures: Figures | None = None  # PNGs written beside the table
    headline: Notes | None = None   # lines for the report's "At a glance"
    report: bool = True             # shown on the report page
    exclusive: bool = False         # its runs are in no other table (scored on held-out training data)
    after: tuple[str, ...] = ()     # tables built first: their files are read by this one's notes
    per_task: bool = False          # one file set per task, <name>_<task>.* (each task's curve is its own experiment)
    write: Writer | None = None     # its own writer; None: repro.paper_tables.common.write_paper_table
    precisions: bool = False        # its cells keep training precisions apart (Table 2: a row per precision);
                                    # otherwise it counts one precision per (scale, model) section (`one_precision`)

    def stem(self, task: str) -> str:
        """The file stem that holds a run of `task`."""
        return f"{self.name}_{task}" if self.per_task else self.name
