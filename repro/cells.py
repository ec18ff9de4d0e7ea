"""How a table cell prints a measured value against the paper's (shared by repro.tables and
repro.generation.tables)."""

from __future__ import annotations

import math

MISSING = "—"
NOT_AVAILABLE = "n/a"  # a baseline that cannot be computed from what the runs saved
# the row label of records written by `repro.evaluate` (result.json `source: imported`): a released (or any other
# imported) checkpoint scored without training, shown beside the reproduced row and counted in no claim
RELEASED_LABEL = "released checkpoint"


def fmt_cell(median: float | None, std: float | None, n: int | None, paper: float | None, digits: int = 1,
             rising: int = 0) -> str:
    """`median±std [seeds] / paper (difference)`; `rising`: how many of the runs were still improving at their
    last epoch (the verdict rule's convergence), shown as `[3, 2 rising]` so a reader sees an unfinished cell."""
    paper_s = MISSING if paper is None else f"{paper:.{digits}f}"
    if median is None or (isinstance(median, float) and math.isnan(median)):
        return f"{MISSING} / {paper_s}"
    std_s = "" if std is None or math.isnan(std) else f"±{std:.{digits}f}"
    diff = "" if paper is None else f" ({median - paper:+.{digits}f})"
    seeds = f"{n}, {rising} rising" if rising else f"{n}"
    return f"{median:.{digits}f}{std_s} [{seeds}] / {paper_s}{diff}"
