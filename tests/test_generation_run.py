"""End to end through `repro.train.run`: a tiny E2E run writes a result with all five metrics and the decoded
outputs; bad input fails with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.config import check_group_overrides
from repro.errors import ConfigError, DataError
from repro.generation import metrics
from repro.train import run

TINY = ("model=tiny-gpt2", "method=lora", "data.max_train_samples=16", "data.max_eval_samples=3", "train.epochs=1",
        "train.batch_size=8", "task.decode.num_beams=2", "task.decode.max_new_tokens=6", "task.recipe.warmup_steps=1",
        "data.max_seq_len=64")


@pytest.mark.skipif(not metrics.HAS_JAVA, reason="METEOR needs Java")
def test_tiny_e2e_run_writes_all_five_metrics(compose, data_root):
    record = run(compose("task=e2e", f"data.root={data_root}", *TINY))
    assert record["status"] == "complete" and record["task"] == "e2e"
    assert {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"} <= set(record["best_metrics"])
    run_dir = Path(record["config"]["output_root"]) / record["run_id"]
    stored = json.loads((run_dir / "result.json").read_text())
    outputs = [json.loads(line) for line in (run_dir / stored["best_outputs"]["test"]).read_text().splitlines()]
    assert len(outputs) == 3 and all(o["references"] and "hypothesis" in o for o in outputs)
    assert stored["params"]["trainable"] == 2 * 2 * 2 * 8 * 32  # L layers x {q, v} x (A + B) x r x d


def test_unknown_task_is_rejected():
    with pytest.raises(ConfigError, match="unknown task 'e2e_nlg'.*e2e"):
        check_group_overrides(["task=e2e_nlg"])


def test_malformed_e2e_line_fails_the_run(compose, tmp_path):
    (tmp_path / "e2e").mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        (tmp_path / "e2e" / name).write_text("name : A | food : Thai||A serves Thai food.\n", encoding="utf-8")
    (tmp_path / "e2e" / "test.txt").write_text("name : A||ok\nno separator here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test\.txt:2: expected '<meaning representation>\|\|<reference text>'"):
        run(compose("task=e2e", f"data.root={tmp_path}", *TINY))
