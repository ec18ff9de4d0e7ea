"""`make gpu-check`: one line and exit 0 without CUDA; with `--device cpu` the same measurements at toy sizes write
the three tables (training fp32 vs bf16 per method, latency, batched vs one-at-a-time beam search)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from repro.bench import gpu_check

REPO = Path(__file__).resolve().parent.parent


def test_without_cuda_it_says_so_in_one_line_and_exits_0(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "repro.bench.gpu_check", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == gpu_check.NO_CUDA and not list(tmp_path.iterdir())


def test_cpu_run_writes_training_latency_and_decoding_tables(tmp_path):
    written = gpu_check.main(["--device", "cpu", "--model", "tiny-bert", "--out", str(tmp_path)])
    assert {p.name for p in written} >= {"gpu_train.md", "gpu_latency_gpt2-tiny.md", "gpu_decode.md"}
    train = pd.read_csv(tmp_path / "gpu_train.csv")
    assert sorted(zip(train.method, train.precision)) == [("full_ft", "bf16"), ("full_ft", "fp32"),
                                                         ("lora", "bf16"), ("lora", "fp32")]
    assert (train.tokens_per_s > 0).all() and (train.peak_memory_bytes > 0).all()
    assert (train[train.precision == "fp32"].speedup_vs_fp32 == 1).all()
    decode = pd.read_csv(tmp_path / "gpu_decode.csv")
    assert bool(decode.identical_outputs.iloc[0]) and decode.speedup.iloc[0] > 0
    latency = pd.read_csv(tmp_path / "gpu_latency_gpt2-tiny.csv")
    assert {"base", "lora_merged", "lora_unmerged", "adapter_l", "adapter_h"} <= set(latency.variant)


def test_adapters_are_created_on_the_device_of_the_module_they_wrap():
    """The latency benchmark inserts adapters into a model already on the GPU; found on an H200 (2026-12-04): the
    adapters' LayerNorm stayed on the CPU. The meta device stands in for a GPU here."""
    from transformers import GPT2LMHeadModel

    from repro.bench import latency
    from repro.methods.adapters import insert_adapters

    config = latency.gpt2_config("gpt2-tiny")
    model = GPT2LMHeadModel(config).to("meta")
    names = insert_adapters(model, latency.gpt2_model_cfg(config), ["attn", "ffn"], 4, layer_norm=True)
    assert names and all(model.get_submodule(n).down.weight.is_meta and model.get_submodule(n).layer_norm.weight.is_meta
                         for n in names)
