"""Bad input, one case per kind: `python -m repro.train` refuses it with one line `error: ...` and exit status 2
before anything is written (no results folder, no `.hydra/`, no run folder, no lock). The checks run before Hydra
starts, so the matrix runs in-process (`repro.train._main`); one case also goes through a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repro.train import _main

REPO = Path(__file__).resolve().parent.parent
SST2 = "glue/sst2"


def _data_root(tmp_path: Path, real_root: Path, train_bytes: bytes | None) -> Path:
    """A data root whose SST-2 dev file is the real one and whose train file holds `train_bytes`."""
    root = tmp_path / "data"
    (root / SST2).mkdir(parents=True)
    (root / SST2 / "dev.tsv").write_bytes((real_root / SST2 / "dev.tsv").read_bytes())
    (root / SST2 / "train.tsv").write_bytes(train_bytes)
    return root


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")

# (overrides, train file content or None for the real data, start of the expected message after "error: ")
CASES = [
    pytest.param(["train.learning_rate=abc"], None, "train.learning_rate must be a positive number, got 'abc'",
                 id="learning-rate-text"),
    pytest.param(["train.learning_rate=-0.1"], None, "train.learning_rate must be a positive number, got -0.1",
                 id="learning-rate-negative"),
    pytest.param(["train.batch_size=abc"], None, "train.batch_size must be a positive integer, got 'abc'",
                 id="batch-size-text"),
    pytest.param(["train.batch_size=2.5"], None, "train.batch_size must be a positive integer, got 2.5",
                 id="batch-size-float"),
    pytest.param(["train.epochs=0"], None, "train.epochs must be a positive integer, got 0", id="epochs-zero"),
    pytest.param(["train.warmup_ratio=1.5"], None, "train.warmup_ratio must be a number in [0, 1), got 1.5",
                 id="warmup-ratio"),
    pytest.param(["train.group_by_length=maybe"], None, "train.group_by_length must be true or false",
                 id="boolean"),
    pytest.param(["seed=abc"], None, "seed must be a non-negative integer, got 'abc'", id="seed-text"),
    pytest.param(["data.max_train_samples=0"], None, "data.max_train_samples must be a positive integer or null",
                 id="max-train-samples-zero"),
    pytest.param(["method.alpha=0"], None, "method.alpha must be a positive number (the update is scaled by "
                                           "alpha / r), got 0", id="lora-alpha-zero"),
    pytest.param(["method.r=-1"], None, "method.r must be a positive integer, got -1", id="lora-rank"),
    pytest.param(["train.device=cuda"], None, "train.device=cuda but CUDA is not available on this machine",
                 id="cuda-without-cuda", marks=NO_CUDA),
    pytest.param(["train.device=tpu"], None, "train.device must be auto, cpu, cuda or cuda:<index>, got 'tpu'",
                 id="unknown-device"),
    pytest.param(["model=tiny-bert", "task=e2e"], None, "model tiny-bert is an encoder (bert) and cannot run the "
                 "generation task e2e; use a decoder or encoder-decoder: ", id="encoder-on-generation-tiny"),
    pytest.param(["model=minilm-l6", "task=e2e"], None, "model minilm-l6 is an encoder (bert) and cannot run the "
                 "generation task e2e; use a decoder or encoder-decoder: ", id="encoder-on-generation"),
    pytest.param(["method=lorax"], None, "unknown method 'lorax'; choose one of: adalora", id="unknown-method"),
    pytest.param(["model=gpt5"], None, "unknown model 'gpt5'", id="unknown-model"),
    pytest.param(["data.root=/nonexistent"], None, "missing data file /nonexistent/glue/sst2/train.tsv",
                 id="missing-data"),
    pytest.param([], b"", "{root}/glue/sst2/train.tsv: empty file", id="empty-train-file"),
    pytest.param([], b"sentence\tlabel\n", "{root}/glue/sst2/train.tsv: no examples (header only?)",
                 id="header-only-train-file"),
    pytest.param([], bytes(range(256)) * 8, "{root}/glue/sst2/train.tsv: not UTF-8 text", id="binary-train-file"),
    pytest.param(["task.name=../../../escape_task"], None, "task.name must be a plain name (letters, digits, _ . + -; "
                 "no '/' or '..'), got '../../../escape_task'", id="task-name-traversal"),
    pytest.param(["task.name=/tmp/abs"], None, "task.name must be a plain name", id="task-name-absolute"),
    pytest.param(["model.name=../../escape_model"], None, "model.name must be a plain name", id="model-name-traversal"),
    pytest.param(["method.name=a/b"], None, "method.name must be a plain name", id="method-name-separator"),
    pytest.param(["method.targets=[q,q]"], None, "method.targets lists q more than once: ['q', 'q']",
                 id="duplicate-targets"),
    pytest.param(["train.early_stopping_patience=0"], None, "train.early_stopping_patience must be a positive "
                 "integer or null (no early stopping), got 0", id="early-stopping-zero"),
    pytest.param(["scale=cpu", "model=minilm-l6", "method.learning_rate=5e-4"], None,
                 "method.learning_rate=0.0005 does not apply here: scale=cpu sets train.learning_rate=0.0009 for task "
                 "sst2 and method lora (its recipe); override train.learning_rate instead", id="overridden-by-recipe"),
    pytest.param(["-m", "method.r=4,0"], None, "method.r must be a positive integer, got 0 (sweep job 1: model=tiny-bert scale=smoke "
                                               "method.r=0)", id="one-bad-job-in-a-sweep"),
]


@pytest.mark.parametrize("overrides, train_file, message", CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(overrides, train_file, message, data_root, tmp_path,
                                                          monkeypatch, capsys):
    root = data_root if train_file is None else _data_root(tmp_path, data_root, train_file)
    results = tmp_path / "results"
    monkeypatch.setenv("REPRO_RESULTS", str(results))
    monkeypatch.setenv("REPRO_DATA_ROOT", str(root))
    with pytest.raises(SystemExit) as exit_:
        flags = [o for o in overrides if o.startswith("-")]  # Hydra's flags come before the overrides
        _main([*flags, "model=tiny-bert", "scale=smoke", *(o for o in overrides if o not in flags)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: " + message.format(root=root)), err
    assert not results.exists()


def test_uncached_hub_model_offline_is_refused_before_anything_is_written(data_root, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("REPRO_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("REPRO_DATA_ROOT", str(data_root))
    with pytest.raises(SystemExit) as exit_:
        _main(["model=gpt2-medium", "task=e2e", "scale=smoke"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err
    assert err.startswith("error: model gpt2-medium (openai-community/gpt2-medium) is not in the local Hugging Face "
                          "cache and HF_HUB_OFFLINE=1")
    assert not (tmp_path / "results").exists()


def test_full_disk_at_start_is_one_line_and_writes_nothing(data_root, tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**30, 10 * 2**30 - 2**20, 2**20))
    monkeypatch.setenv("REPRO_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("REPRO_DATA_ROOT", str(data_root))
    with pytest.raises(SystemExit) as exit_:
        _main(["model=tiny-bert", "scale=smoke"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err
    assert err.endswith("its disk is full (1 MiB free, at least 64 MiB needed)")
    assert not (tmp_path / "results").exists()


def test_results_folder_that_cannot_be_written(data_root, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the results folder should be")
    monkeypatch.setenv("REPRO_RESULTS", str(blocker / "results"))
    monkeypatch.setenv("REPRO_DATA_ROOT", str(data_root))
    with pytest.raises(SystemExit) as exit_:
        _main(["model=tiny-bert", "scale=smoke"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2
    assert err == f"error: results folder {blocker}/results/runs cannot be created: {blocker} is not a folder"


def test_bad_input_through_the_real_command_line(data_root, tmp_path):
    env = {**os.environ, "REPRO_RESULTS": str(tmp_path / "results"), "REPRO_DATA_ROOT": str(data_root),
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "repro.train", "model=tiny-bert", "seed=abc"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: seed must be a non-negative integer, got 'abc'"
    assert not (tmp_path / "results").exists()
