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


def _wandb_file_records(path: Path) -> list:
    """The records of an offline `.wandb` file, or None while the file does not yet end with the run's exit record.

    The file is a LevelDB-style log (wandb's own format; wandb ships no Python reader for it): a 7-byte header
    (`:W&B`, magic, version), then 32 KiB blocks of chunks, each `crc32 (4) | length (2) | type (1) | data`, type 1
    a whole record, 2/3/4 the first/middle/last piece of one split across blocks, and a block's tail under 7 bytes
    zero padding. Each record is a `wandb_internal_pb2.Record`."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32 * 1024
    if len(data) < 7:
        return None  # the header itself not yet flushed
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    out, pending, at = [], b"", 7
    while at + 7 <= len(data):
        left = block - at % block
        if left < 7:
            at += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[at:at + 7])
        if kind == 0:  # zero padding to the block's end
            at += left
            continue
        if at + 7 + length > len(data):
            return None  # a chunk still being written
        pending += data[at + 7:at + 7 + length]
        at += 7 + length
        if kind in (1, 4):
            out.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return out if out and out[-1].WhichOneof("record_type") == "exit" else None


class OfflineWandbRun:
    """What a test checks in an offline wandb run file: the run's config, the keys it logged, its chart axes."""

    def __init__(self, records: list):
        self.records = records

    def _of(self, kind: str) -> list:
        return [getattr(r, kind) for r in self.records if r.WhichOneof("record_type") == kind]

    def config(self) -> dict:
        """The config given to `wandb.init`: its items' keys and JSON values."""
        import json

        (run,) = self._of("run")
        return {item.key: json.loads(item.value_json) for item in run.config.update}

    def logged_keys(self) -> set[str]:
        """The keys logged (a history item names its key as `nested_key[0]`; a table's fields follow it)."""
        return {item.nested_key[0] if item.nested_key else item.key for h in self._of("history") for item in h.item}

    def axes(self) -> dict[str, str]:
        """`define_metric`'s x axes: metric name or glob -> its step metric."""
        return {(m.glob_name or m.name): m.step_metric for m in self._of("metric") if m.step_metric}


@pytest.fixture
def read_wandb_run():
    """Read an offline wandb run file back, waiting up to 60 s for wandb's service process, which writes the
    file, to flush the run's last record: `run.finish()` can return before it has."""
    import time

    def _read(path: Path) -> OfflineWandbRun:
        deadline = time.monotonic() + 60
        while (records := _wandb_file_records(path)) is None:
            assert time.monotonic() < deadline, f"{path} never got the run's exit record"
            time.sleep(0.2)
        return OfflineWandbRun(records)

    return _read
