"""Shared fixtures. Tests never touch the network (HF_HUB_OFFLINE=1, WANDB_MODE=offline).

Tests that read `../shared` (offline datasets, the paper's reference numbers) skip, saying why, only where it
is absent, as on a user's machine; `.ci/run` fails when it is absent so CI never skips them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("REPRO_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = Path(os.environ.get("REPRO_DATA_ROOT") or SHARED / "datasets")
    if not (root / "glue").is_dir():
        pytest.skip(f"offline datasets not found at {root} (set REPRO_DATA_ROOT); hub-only machine")
    return root


@pytest.fixture(scope="session")
def paper_reference() -> dict:
    """The paper's numbers as published in ../shared/paper/lora_paper.yaml (for cross-checking our copies)."""
    path = SHARED / "paper" / "lora_paper.yaml"
    if not path.is_file():
        pytest.skip(f"paper reference file not found at {path}; only the shipped copies are available")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture
def compose(tmp_path):
    """Compose the training config with Hydra's compose API, results going to a temporary folder."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from repro.config import CONF_DIR

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose("train", overrides=[f"output_root={tmp_path}/runs", *overrides])

    return _compose
