"""`python -m repro.bench.plan_memory [--model minilm-l6]`: the planner's training-memory estimate (`repro.plan`)
against the memory a training step really adds, for three configurations.

Measured in a fresh process per configuration (`repro.bench.train` workers): the resident set (CPU) or torch's
allocated memory (CUDA) after the model is built, and the peak over a few training steps; their difference is what
training adds. The planner's matching part is gradients + AdamW states of the trained parameters + activations
(its weights term is already resident before training). Writes results/bench/plan_memory.{md,csv} with the
relative error of each estimate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from repro.bench import train as bench_train
from repro.bench import hardware_label, write_and_show
from repro.errors import exit_on_user_error
from repro.params import ParamCounts
from repro.plan import ACT_EAGER_CPU_FACTOR, activation_bytes, architecture, memory_parts

# (method, batch, sequence length): LoRA and full fine-tuning at two batch sizes and three lengths
CONFIGS = tuple((method, batch, seq) for method in ("lora", "full_ft") for batch, seq in ((16, 128), (8, 256), (32, 64)))
GIB = 2**30


def row(model: str, method: str, batch: int, seq: int, device: str) -> dict:
    measured = bench_train.run_worker(["--worker", method, "--model", model, "--batch", str(batch), "--seq",
                                       str(seq), "--steps", "3", "--warmup", "1", "--device", device])
    model_cfg = bench_train.load_group("model", model)
    counts = ParamCounts(trainable=measured["trainable_params"], head=measured["head_params"],
                         total=measured["total_params"])
    parts = memory_parts(counts, activation_bytes(architecture(model_cfg), model_cfg, seq, batch,
                                                  eager_cpu=device == "cpu"))
    planned = (parts["grads"] + parts["adamw"] + parts["activations"]) * GIB
    added = measured["peak_memory_bytes"] - measured["memory_before_train_bytes"]
    return {"method": method, "batch": batch, "seq": seq, "planned_training_mib": planned / 2**20,
            "planned_activations_mib": parts["activations"] * GIB / 2**20,
            "measured_added_mib": added / 2**20, "error_pct": 100 * (planned / added - 1)}


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m repro.bench.plan_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    table = pd.DataFrame([row(args.model, m, b, s, args.device) for m, b, s in CONFIGS])
    memory = "resident set" if args.device == "cpu" else "torch allocated"
    return write_and_show(table, args.out / f"plan_memory_{args.model}",
                          f"Planner (repro.plan: grads + AdamW + activations by Korthikanti et al.'s count, x2 for "
                          f"fp32, x{ACT_EAGER_CPU_FACTOR:g} for eager PyTorch on a CPU; inputs at full length) on "
                          f"{hardware_label(torch.device(args.device))} vs what "
                          f"training measurably adds ({memory}: peak over 4 steps minus after building the model), "
                          f"{args.model}, fp32, {args.device}; error = planned / measured - 1. Command: python -m "
                          f"repro.bench.plan_memory --model {args.model}", ".3g")


if __name__ == "__main__":
    exit_on_user_error(main)()
