"""The learning-rate search of the fair-budget protocol (sweeps/lr_search.yaml, `make lr-search`): each Table 2 row's
cpu-recipe rate times the same factors, one seed (the rank budget's search: three), scored on held-out training
data, so its runs are in no other table (`exclusive`) and its file exists only once such runs do. Not on the report
page: it chooses a recipe, it reproduces no paper number."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from repro.cells import MISSING
from repro.paper_tables.common import in_sweep, write_paper_table
from repro.paper_tables.spec import Layout, PaperTable
from repro.verdicts import Rule

LR_SEARCH = "lr_search"  # sweeps/lr_search.yaml: scored on held-out training data, so in no other table
LR_SEARCH_COLUMNS = ["scale", "model", "task", "paper_row", "lr_factor", "learning_rate", "mean", "median", "std",
                     "n", "best"]


def lr_search_long(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (task, Table 2 row, factor): the held-out score over seeds, and whether it is the row's best factor: the
    best mean, which a seed that collapses pulls down (a median over three seeds would hide one)."""
    runs = frame[frame["sweep"] == LR_SEARCH] if not frame.empty else frame
    if runs.empty:
        return pd.DataFrame(columns=LR_SEARCH_COLUMNS)
    runs = runs.assign(paper_row=runs["paper_row"].fillna(runs["search_row"]).fillna(runs["method"]))
    agg = runs.groupby(["scale", "model", "task", "paper_row", "lr_factor", "learning_rate"], dropna=False).agg(
        mean=("value", "mean"), median=("value", "median"), std=("value", "std"), n=("seed", "nunique")).reset_index()
    best = agg.groupby(["scale", "model", "task", "paper_row"])["mean"].transform("max")
    return agg.assign(best=agg["mean"] == best)[LR_SEARCH_COLUMNS]


def lr_search_wide(long: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    out = {}
    for (scale, model), part in long.groupby(["scale", "model"], sort=False):
        part = part.assign(cell=[f"{m:.1f} [{n}] (lr {lr:.3g}){' *' if b else ''}" for m, n, lr, b in
                                 zip(part["mean"], part["n"], part["learning_rate"], part["best"])],
                           factor=[f"x{f:g}" for f in part["lr_factor"]])
        out[(scale, model)] = part.pivot_table(index=["task", "paper_row"], columns="factor", values="cell",
                                               aggfunc="first", fill_value=MISSING).reset_index()
    return out


def write_if_run(table: PaperTable, frame: pd.DataFrame, out: Path, rule: Rule) -> list[Path]:
    """The usual files, and none at all (not even an empty table) before the search has run."""
    return write_paper_table(table, frame, out, rule) if not table.select(frame).empty else []


TABLE = PaperTable(
    name=LR_SEARCH, title="Learning-rate search (equal effort per method, scored on held-out training data)",
    note="Each row's cpu-recipe rate times the same factors, one seed (rows 'lora <weights> r=<rank>, rank budget', "
         "the rank budget's search, and the successors' rows on STS-B: x0.3 and x1 at seeds 0-2, factors ranked by "
         "their mean); the score is the main metric on "
         "`data.holdout_fraction` of the training subset held out, never the dev split of Table 2. "
         "* marks the best factor of each row among those run; a — is a factor not run (the rank budget's search "
         "runs x0.3 and x1: sweeps/lr_search_rank.yaml says why) or a search not finished.",
    select=in_sweep(LR_SEARCH), long=lr_search_long,
    layout=Layout(rows=("task", "paper_row"), wide=lr_search_wide, columns=tuple(LR_SEARCH_COLUMNS),
                  cell=lambda r: ((str(r["task"]), str(r["paper_row"])), f"x{r['lr_factor']:g}"),
                  run_keys=(("scale", "scale"), ("model", "model"), ("task", "task"), ("lr_factor", "lr_factor"))),
    notes=None, cell_text="held-out main metric, mean over seeds [seeds] (learning rate)", report=False, exclusive=True,
    write=write_if_run)
