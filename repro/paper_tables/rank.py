"""Table 6 (rank r): LoRA at several ranks on the same weights (sweeps/rank.yaml, `sweep_name: rank`), rows (task,
method, weights) x columns rank, with the claim that a small rank is on par with the reference rank
(conf/paper/verdict_rule.yaml `sweep_claims.rank`) and a figure of the metric against the rank."""

from __future__ import annotations

from repro.paper import paper_data
from repro.paper_tables.common import in_sweep, label, task_baseline_notes
from repro.paper_tables.spec import Judged, Layout, PaperTable
from repro.paper_tables.sweeps import (REFERENCE_NOTE, RUN_KEYS, SWEEP_COLUMNS, SWEEP_REFERENCE_DATASET,
                                       sweep_figures, sweep_judged, sweep_long, sweep_wide)
from repro.verdicts import Cell, Rule, compare, tolerance_from_gap

NAME = "rank"
PAPER = "table6_rank"  # conf/paper/table6_rank.yaml
ROWS, COLUMN = ["task", "method", "targets"], "r"
CELL_KEYS = ["method", "targets", "r"]  # the claim's cells: pooled over tasks


def reference() -> dict[tuple[str, int], float]:
    """The paper's value per (targets "q,v", rank): Table 6's MultiNLI row."""
    return {(",".join(r["targets"]), int(k)): v for r in paper_data(PAPER)["rows"]
            if r["dataset"] == SWEEP_REFERENCE_DATASET for k, v in r["by_rank"].items()}


def rank_claims(by_key: dict[tuple, dict[str, Cell]], crit: dict, rule: Rule) -> Judged:
    """Table 6: each small rank against the reference rank, same method and weights, pooled over tasks."""
    ref = int(crit["reference_rank"])
    out: Judged = []
    tolerance = tolerance_from_gap(crit["max_gap_points"])
    for method, targets in dict.fromkeys((m, t) for m, t, _ in by_key):
        reference_cells = by_key.get((method, targets, ref))
        for r in crit["small_ranks"]:
            small = by_key.get((method, targets, int(r)))
            if reference_cells is not None and small is not None:
                verdict = compare(f"{method} {{{targets}}} r={r}", small, f"r={ref}", reference_cells, tolerance, rule)
                out.append(verdict)
    return out or [f"not testable: no runs at r={ref} and at r in {crit['small_ranks']} on the same weights"]


TABLE = PaperTable(
    name=NAME, title="Table 6 (rank r)", note=REFERENCE_NOTE, select=in_sweep(NAME),
    long=lambda runs: sweep_long(runs, reference),
    layout=Layout(rows=tuple(ROWS), wide=lambda long: sweep_wide(long, ROWS, COLUMN), columns=tuple(SWEEP_COLUMNS),
                  cell=lambda r: ((label(r["task"]), label(r["method"]), label(r["targets"])), label(r["r"])),
                  run_keys=RUN_KEYS, text_columns=("targets",)),
    notes=lambda long, tables: task_baseline_notes(long),
    claims=lambda runs, rule: sweep_judged(runs, NAME, CELL_KEYS, rank_claims, rule),
    paper=PAPER, figures=sweep_figures(NAME, by_rank=True))
