"""Golden runs: tiny GLUE, tiny E2E (causal LM) and tiny SAMSum (seq2seq) runs through `repro.train.run` give
exactly the metrics recorded in tests/data/golden.json before the training loops were merged into one.

Regenerate (only when a change of numbers is intended, and say why in the commit):
  REPRO_WRITE_GOLDEN=1 python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from repro.train import run

GOLDEN = Path(__file__).with_name("data") / "golden.json"
GEN = ("data.max_train_samples=16", "data.max_eval_samples=3", "train.epochs=2", "train.batch_size=4",
       "task.decode.num_beams=2", "task.decode.max_new_tokens=6", "task.recipe.warmup_steps=1", "data.max_seq_len=64",
       "seed=1")
RUNS = {
    "glue_sst2_tiny-bert_lora": ("task=glue/sst2", "model=tiny-bert", "method=lora", "scale=smoke",
                                 "data.max_train_samples=64", "data.max_eval_samples=32", "train.batch_size=8",
                                 "train.epochs=2", "seed=1"),
    "e2e_tiny-gpt2_lora": ("task=e2e", "model=tiny-gpt2", "method=lora", *GEN),
    "samsum_tiny-bart_lora": ("task=samsum", "model=tiny-bart", "method=lora",
                              "task.local.files.train=[{path:samsum/validation.jsonl,format:jsonl}]", *GEN),
}


@pytest.fixture(autouse=True)
def recorded_thread_count():
    """The numbers were recorded with 2 torch threads (this 2-core machine's default); the last bits of a reduction
    depend on the thread count, and a test before this one may leave the process at 1 (`train.num_threads=1`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def summary(record: dict) -> dict:
    """What must not move when code is reorganised: per-epoch train loss and metrics, best epoch, step count, and
    the decoded text (the tiny random models score 0 on every generation metric; their outputs still differ)."""
    run_dir = Path(record["config"]["output_root"]) / record["run_id"]
    outputs = {split: [json.loads(line)["hypothesis"] for line in (run_dir / path).read_text().splitlines()]
               for split, path in sorted(record.get("outputs", {}).items())}
    return {"outputs": outputs, "optimizer_steps": record["optimizer_steps"], "best_epoch": record["best_epoch"],
            "best_metrics": record["best_metrics"], "params": record["params"],
            "epochs": [{"train_loss": e["train_loss"], "metrics": e["metrics"]} for e in record["epochs"]]}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_tiny_run_matches_golden_numbers(name, compose, data_root):
    got = json.loads(json.dumps(summary(run(compose(f"data.root={data_root}", *RUNS[name])))))
    if os.environ.get("REPRO_WRITE_GOLDEN"):
        golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
        GOLDEN.write_text(json.dumps({**golden, name: got}, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())[name]
    # same code path on the same machine: bit-identical; a tolerance would hide a reordered reduction
    assert got == golden
