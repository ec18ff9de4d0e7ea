"""The paper's numbers shipped with the project: `conf/paper/<name>.yaml` (numbers only, copied from the paper
and checked against the reference file by the tests). Code reads them here and never writes a paper number."""

from __future__ import annotations

from typing import Any

import yaml

from repro.config import CONF_DIR

PAPER_DIR = CONF_DIR / "paper"


def paper_data(name: str) -> dict[str, Any]:
    """One of conf/paper/<name>.yaml as plain Python data."""
    with open(PAPER_DIR / f"{name}.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)
