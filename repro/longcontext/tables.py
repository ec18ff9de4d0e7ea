"""`python -m repro.longcontext.tables [--runs results/runs] [--out results/tables]`: the LongLoRA comparison.

The table itself is declared in repro/paper_tables/longlora.py (one of the registered paper tables, so
`python -m repro.tables` builds it from the committed records and the report shows it); this command, run by
`make reproduce-longlora`, builds it from run folders, the comparison's runs only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from repro.paper_tables.longlora import BASELINE_ROW, long_context_runs, write
from repro.results import default_runs_root

__all__ = ["BASELINE_ROW", "long_context_runs", "main", "write"]


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m repro.longcontext.tables", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=None, help="default: $REPRO_RESULTS/runs or results/runs")
    parser.add_argument("--out", type=Path, default=Path("results/tables"))
    args = parser.parse_args(argv)
    records = long_context_runs(args.runs or default_runs_root())
    if not records:
        print(f"no complete LongLoRA comparison runs under {args.runs or default_runs_root()}")
        return []
    return write(records, args.out)


if __name__ == "__main__":
    main()
