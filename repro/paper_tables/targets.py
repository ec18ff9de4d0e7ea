"""Table 5 (weight types, equal budget): LoRA on different weight sets at the same number of trainable parameters
(sweeps/targets.yaml, `sweep_name: targets`), rows (task, method) x columns "weights (r=rank)", with the claim that
several weight types beat one (conf/paper/verdict_rule.yaml `sweep_claims.targets`) and a bar figure."""

from __future__ import annotations

import pandas as pd

from repro.paper import paper_data
from repro.paper_tables.common import in_sweep, label, task_baseline_notes
from repro.paper_tables.spec import Judged, Layout, PaperTable
from repro.paper_tables.sweeps import (REFERENCE_NOTE, RUN_KEYS, SWEEP_COLUMNS, SWEEP_REFERENCE_DATASET,
                                       sweep_figures, sweep_judged, sweep_long, sweep_wide)
from repro.verdicts import Cell, Rule, compare, tolerance_from_gap

NAME = "targets"
PAPER = "table5_weight_types"  # conf/paper/table5_weight_types.yaml
ROWS, COLUMN = ["task", "method"], "targets"
CELL_KEYS = ["method", "targets"]  # the claim's cells: pooled over tasks


def reference() -> dict[tuple[str, int], float]:
    """The paper's value per (targets "q,v", rank): Table 5's MultiNLI row."""
    return {(",".join(c["targets"]), c["rank"]): c["results"][SWEEP_REFERENCE_DATASET]
            for c in paper_data(PAPER)["columns"]}


def column_label(part: pd.DataFrame) -> list[str]:
    """A column of the paper's Table 5: the weights and the rank that keeps the budget equal."""
    return [f"{t} (r={r})" for t, r in zip(part["targets"], part["r"])]


def targets_claims(by_key: dict[tuple, dict[str, Cell]], crit: dict, rule: Rule) -> Judged:
    """Table 5: several weight types against one, same method, equal budget, pooled over tasks."""
    out: Judged = []
    tolerance = tolerance_from_gap(crit["max_gap_points"])
    for method in dict.fromkeys(m for m, _ in by_key):
        for pair in crit["compare"]:
            better, than = ",".join(pair["better"]), ",".join(pair["than"])
            a, b = by_key.get((method, better)), by_key.get((method, than))
            if a is not None and b is not None:
                out.append(compare(f"{method} {{{better}}}", a, f"{{{than}}}", b, tolerance, rule))
    pairs = "; ".join(f"{{{','.join(p['better'])}}} vs {{{','.join(p['than'])}}}" for p in crit["compare"])
    return out or [f"not testable: none of the compared weight sets has runs ({pairs})"]


TABLE = PaperTable(
    name=NAME, title="Table 5 (weight types, equal budget)", note=REFERENCE_NOTE, select=in_sweep(NAME),
    long=lambda runs: sweep_long(runs, reference),
    layout=Layout(rows=tuple(ROWS), wide=lambda long: sweep_wide(long, ROWS, COLUMN, column_label),
                  columns=tuple(SWEEP_COLUMNS), run_keys=RUN_KEYS, text_columns=("targets",),
                  cell=lambda r: ((label(r["task"]), label(r["method"])), f"{r['targets']} (r={label(r['r'])})")),
    notes=lambda long, tables: task_baseline_notes(long),
    claims=lambda runs, rule: sweep_judged(runs, NAME, CELL_KEYS, targets_claims, rule),
    paper=PAPER, figures=sweep_figures(NAME, by_rank=False))
