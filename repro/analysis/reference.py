"""The paper's numbers that the analyses and benchmarks print beside ours, and the table writer they share.

Paper values live in `conf/paper/*.yaml` (checked against ../shared/paper/lora_paper.yaml by the tests), never
in Python, so a typo fix touches one data file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from repro.errors import ReproError
from repro.results import RESULT_FILE, read_result


def read_run(run_dir: Path) -> tuple[dict[str, Any], DictConfig]:
    """A finished run's result record and its resolved config."""
    record = read_result(run_dir)
    if record is None:
        raise ReproError(f"{run_dir} is not a run directory (no readable {RESULT_FILE})")
    if "config" not in record:
        raise ReproError(f"{run_dir / RESULT_FILE} has no 'config' key")
    return record, OmegaConf.create(record["config"])


def write_table(df: pd.DataFrame, stem: Path, caption: str, float_fmt: str = ".4g") -> list[Path]:
    """`<stem>.csv` (raw numbers) and `<stem>.md` (caption line + a markdown table); returns both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    df.to_csv(csv, index=False)
    shown = df.astype(object).where(df.notna(), None)  # blank cells, not "nan", where a value does not exist
    md.write_text(f"{caption}\n\n{shown.to_markdown(index=False, floatfmt=float_fmt, missingval='')}\n")
    return [csv, md]
