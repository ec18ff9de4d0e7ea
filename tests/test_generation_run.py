"""End to end through `repro.runner.run`: a tiny E2E run writes a result with all five metrics and the decoded
outputs; bad input fails with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.config import check_group_overrides
from repro.errors import ConfigError, DataError
from repro.generation import metrics
from repro.runner import run

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


def test_early_stopping_ends_a_run_whose_dev_metric_stops_improving(compose, data_root):
    """train.early_stopping_patience on a real (tiny) model: a learning rate too small to move the weights leaves
    every epoch's decoded outputs, so its dev metric, where epoch 1 put them; with a patience of 1 the run stops
    after epoch 2 of 4, says so in its log, and keeps epoch 1 as its best."""
    tiny = [o for o in TINY if not o.startswith("train.epochs=")]
    record = run(compose("task=e2e", f"data.root={data_root}", *tiny, "train.epochs=4",
                         "train.early_stopping_patience=1", "train.learning_rate=1e-12"))
    main = record["main_metric"]
    assert [e["epoch"] for e in record["epochs"]] == [1, 2] and record["best_epoch"] == 1
    assert record["epochs"][1]["metrics"][main] == record["epochs"][0]["metrics"][main]
    log = (Path(record["config"]["output_root"]) / record["run_id"] / "train.log").read_text()
    assert f"early stop after epoch 2: {main} not improved since epoch 1" in log


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


def test_interrupted_generation_run_resumes_and_matches_uninterrupted(compose, data_root, tmp_path, monkeypatch,
                                                                     capsys):
    from repro.generation.causal import CausalFormat

    overrides = ("task=e2e", f"data.root={data_root}", *TINY, "data.max_train_samples=40", "train.batch_size=4",
                 "train.epochs=2", "train.checkpoint_every_steps=3", "task.metric_set=samsum", "task.main_metric=ROUGE_L")
    reference = run(compose(*overrides, f"output_root={tmp_path / 'reference'}"))
    interrupted = compose(*overrides, f"output_root={tmp_path / 'interrupted'}")
    loss, calls = CausalFormat.loss, {"n": 0}

    def failing_loss(self, model, batch, label_smoothing):
        calls["n"] += 1
        if calls["n"] == 15 and model.training:  # epoch 2, batch 5: after the step-12 checkpoint
            raise RuntimeError("simulated crash")
        return loss(self, model, batch, label_smoothing)

    monkeypatch.setattr(CausalFormat, "loss", failing_loss)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(interrupted)
    monkeypatch.setattr(CausalFormat, "loss", loss)
    capsys.readouterr()
    resumed = run(interrupted)
    assert "resumed from checkpoint: epoch 2, batch 2, step 12" in capsys.readouterr().out
    assert resumed["status"] == "complete" and resumed["optimizer_steps"] == reference["optimizer_steps"] == 20
    assert resumed["best_metrics"] == pytest.approx(reference["best_metrics"])
    assert [e["train_loss"] for e in resumed["epochs"]] == pytest.approx([e["train_loss"] for e in reference["epochs"]])
