"""A real end-to-end run: the embedded MiniLM with LoRA on an SST-2 subset from the offline data learns,
writes a complete self-describing result, and a second invocation skips it."""

from __future__ import annotations

import json
import os

import pytest

from repro.results import RESULT_FILE, WEIGHTS_DIR, load
from repro.runner import run


@pytest.mark.slow
def test_minilm_lora_on_sst2_learns_and_writes_complete_result(compose, data_root, tmp_path, capsys):
    overrides = ["task=glue/sst2", "model=minilm-l6", "method=lora", "scale=smoke", f"data.root={data_root}",
                 "data.max_train_samples=1200", "data.max_eval_samples=400", "train.epochs=2", "seed=0"]
    record = run(compose(*overrides))

    run_dir = tmp_path / "runs" / record["run_id"]
    stored = json.loads((run_dir / RESULT_FILE).read_text())
    assert stored == json.loads(json.dumps(record, default=str))
    assert stored["status"] == "complete"
    assert stored["best_metrics"]["accuracy"] > 0.65  # chance is ~0.5 on SST-2 dev
    assert [e["epoch"] for e in stored["epochs"]] == [1, 2]
    assert stored["best_epoch"] == max(stored["epochs"], key=lambda e: e["metrics"]["accuracy"])["epoch"]
    params = stored["params"]
    assert params["trainable"] == 2 * 2 * 6 * 384 * 8  # 2 x L_LoRA x d_model x r, Wq and Wv in 6 layers
    assert params["head"] > 0 and params["total"] > 22_000_000
    for key in ("config", "versions", "hardware", "git_commit", "throughput", "peak_memory_bytes",
                "wall_time_s", "train_examples", "eval_examples"):
        assert stored[key] is not None, key
    assert stored["train_examples"] == 1200 and stored["eval_examples"] == {"validation": 400}
    assert stored["throughput"]["samples_per_s"] > 0 and stored["throughput"]["tokens_per_s"] > 0
    assert stored["config"]["method"]["r"] == 8 and stored["versions"]["peft"]
    assert (run_dir / WEIGHTS_DIR / "adapter_model.safetensors").is_file()
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (run_dir / WEIGHTS_DIR).iterdir()}
    assert modes and set(modes.values()) == {0o666 & ~umask}, modes  # like the rest of the folder, not 0600
    # what a reader needs to judge the number: the constant predictor's score on the same 400 dev examples, and
    # every epoch's dev predictions (for `repro.score`), one line per example in the split's order
    labels = [json.loads(line)["label"] for line in (run_dir / "predictions" / "validation.epoch1.jsonl").open()]
    assert len(labels) == 400 and stored["predictions"]["validation/epoch2"] == "predictions/validation.epoch2.jsonl"
    majority = max(labels.count(0), labels.count(1)) / len(labels)
    assert stored["trivial_baseline"]["accuracy"] == pytest.approx(majority)
    assert stored["best_metrics"]["accuracy"] > stored["trivial_baseline"]["accuracy"] + 0.1
    assert not list(run_dir.glob(".*.tmp"))

    capsys.readouterr()
    again = run(compose(*overrides))
    assert "skip " in capsys.readouterr().out
    assert again == stored
    frame = load(tmp_path / "runs")
    assert len(frame) == 1 and frame.loc[0, "best.accuracy"] == stored["best_metrics"]["accuracy"]
