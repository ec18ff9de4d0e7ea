"""Golden runs: tiny GLUE, tiny E2E (causal LM) and tiny SAMSum (seq2seq) runs through `repro.runner.run` give
exactly the metrics recorded in tests/data/golden.json before the training loops were merged into one.

The last bits of a float32 result depend on the CPU kernels torch dispatches to (AVX2 and AVX512 differ in the 7th
significant digit), so golden.json holds the numbers per `torch.backends.cpu.get_cpu_capability()`: bit-identical
where this machine's kernels were recorded, and within float32 rounding of every other recorded set.

Regenerate (only when a change of numbers is intended, and say why in the commit; on each kind of CPU):
  REPRO_WRITE_GOLDEN=1 python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from repro.runner import run

GOLDEN = Path(__file__).with_name("data") / "golden.json"  # {cpu capability: {run name: summary}}
CAPABILITY = torch.backends.cpu.get_cpu_capability()  # e.g. AVX2, AVX512: the kernels whose rounding is recorded
REL_TOL = 1e-5  # float32 rounding of a loss near 10, across kernels (measured: AVX2 vs AVX512 differ by ~1e-7)
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


def differences(got, want, path: str = "") -> list[str]:
    """Where `got` and `want` differ beyond float32 rounding (floats within REL_TOL; all else exactly: text, step
    counts, best epoch, parameter counts)."""
    if isinstance(want, dict) and isinstance(got, dict):
        return [d for key in sorted(set(got) | set(want))
                for d in differences(got.get(key), want.get(key), f"{path}/{key}")]
    if isinstance(want, list) and isinstance(got, list) and len(got) == len(want):
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in differences(g, w, f"{path}[{i}]")]
    if isinstance(want, float) and isinstance(got, float) and math.isclose(got, want, rel_tol=REL_TOL, abs_tol=1e-9):
        return []
    return [] if got == want else [f"{path}: {got!r} != {want!r}"]


def test_float32_rounding_is_the_only_slack():
    assert differences({"loss": [10.806147575378418]}, {"loss": [10.806148529052734]}) == []
    assert differences({"loss": 10.80}, {"loss": 10.81}) == ["/loss: 10.8 != 10.81"]
    assert differences({"outputs": ["a"], "steps": 8}, {"outputs": ["b"], "steps": 8}) == ["/outputs[0]: 'a' != 'b'"]


@pytest.mark.parametrize("name", sorted(RUNS))
def test_tiny_run_matches_golden_numbers(name, compose, data_root):
    got = json.loads(json.dumps(summary(run(compose(f"data.root={data_root}", *RUNS[name])))))
    recorded = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    if os.environ.get("REPRO_WRITE_GOLDEN"):
        recorded.setdefault(CAPABILITY, {})[name] = got
        GOLDEN.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    if name in recorded.get(CAPABILITY, {}):
        # the same code path on the same kernels: bit-identical; a tolerance would hide a reordered reduction
        assert got == recorded[CAPABILITY][name]
    others = {cap: runs[name] for cap, runs in recorded.items() if cap != CAPABILITY and name in runs}
    assert others or name in recorded.get(CAPABILITY, {}), f"{name}: no golden numbers (REPRO_WRITE_GOLDEN=1)"
    for cap, want in others.items():
        assert not differences(got, want), f"{name} on {CAPABILITY} vs recorded on {cap}: {differences(got, want)}"
