"""`python -m repro.bench.longlora [--model tiny-llama] [--lengths 256 512 1024]`: training step time and peak memory
of LongLoRA (LoRA q/k/v/o + embeddings + norms) at several context lengths, with S²-Attn and with full attention.

The paper's efficiency claim (abstract): attention cost grows with the square of the context (8192 tokens cost 16x
the self-attention compute of 2048), and S²-Attn, attending within groups of a quarter of the context, cuts that
term to a quarter while the rest of the step (projections, MLP, embeddings) is unchanged; so its savings grow with
the context length. The table gives, per length, the measured step time and memory of both, their ratio, and the
attention term's ratio the pattern implies (`group / length`).

Each configuration runs in a fresh subprocess (`--worker`), so that the peak memory (process resident-set
high-water mark on CPU, torch's max allocated on CUDA) is its own: peak over the timed steps minus what was in use
after building the model. Random tokens, batch 1, AdamW, fp32, sdpa kernels for both. Writes
results/bench/longlora_<model>.{md,csv}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from repro.bench import write_and_show
from repro.errors import ConfigError, exit_on_user_error

ATTENTIONS = ("s2", "full")


def measure(model_name: str, attention: str, length: int, steps: int, warmup: int, ratio: float,
            device: torch.device) -> dict[str, Any]:
    """One configuration in this process: build, warm up, time `steps` optimizer steps."""
    from repro.config import load_group_config
    from repro.generation.methods import apply_decoder_method
    from repro.generation.models import load_causal_lm
    from repro.kinds.long_context import lm_loss
    from repro.longcontext.attention import FULL_ATTN, set_attention, use_s2_attn
    from repro.methods.base import adamw
    from repro.provenance import peak_memory_bytes, reset_peak_memory

    model_cfg, method_cfg = load_group_config("model", model_name), load_group_config("method", "longlora")
    torch.manual_seed(0)
    adapted = apply_decoder_method(load_causal_lm(model_cfg), method_cfg, model_cfg)
    model = adapted.model.to(device)
    use_s2_attn(model, ratio) if attention == "s2" else set_attention(model, FULL_ATTN)
    vocab = model.get_output_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(0)).to(device)
    optimizer = adamw([{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": 0.0}], 1e-5)
    model.train()

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        lm_loss(model, ids).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    before = reset_peak_memory(device)
    for _ in range(warmup):
        step()
    times = [step() for _ in range(steps)]
    return {"attention": attention, "length": length, "step_s": statistics.median(times),
            "tokens_per_s": length / statistics.median(times),
            "added_memory_mib": (peak_memory_bytes(device) - before) / 2**20}


def run_worker(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "repro.bench.longlora", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(rows: list[dict[str, Any]], ratio: float) -> pd.DataFrame:
    """One line per length: both attentions' step time and added memory, S² / full, and the attention-score
    term's ratio implied by the pattern (group / length)."""
    frame = pd.DataFrame(rows)
    out = []
    for length, part in frame.groupby("length"):
        s2, full = (part[part.attention == a].iloc[0] for a in ATTENTIONS)
        out.append({"length": length, "step_s_s2": s2.step_s, "step_s_full": full.step_s,
                    "time_s2/full": s2.step_s / full.step_s,
                    "added_mib_s2": s2.added_memory_mib, "added_mib_full": full.added_memory_mib,
                    "memory_s2/full": s2.added_memory_mib / max(full.added_memory_mib, 1e-9),
                    "attention_term_s2/full (pattern)": ratio})
    return pd.DataFrame(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m repro.bench.longlora", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--group-size-ratio", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--worker", choices=ATTENTIONS, help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path] | None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(args.model, args.worker, args.length, args.steps, args.warmup,
                                 args.group_size_ratio, torch.device(args.device))))
        return None
    for length in args.lengths:  # fail before any worker starts
        from repro.longcontext.attention import group_size

        if group_size(length, args.group_size_ratio) == length:
            raise ConfigError(f"length {length} gives one S²-Attn group at ratio {args.group_size_ratio}")
    common = ["--model", args.model, "--steps", str(args.steps), "--warmup", str(args.warmup), "--group-size-ratio",
              str(args.group_size_ratio), "--threads", str(args.threads), "--device", args.device]
    rows = [run_worker(["--worker", a, "--length", str(n), *common]) for n in args.lengths for a in ATTENTIONS]
    table = compare(rows, args.group_size_ratio)
    memory = "process peak RSS" if args.device == "cpu" else "torch max allocated"
    lengths = " ".join(map(str, args.lengths))
    caption = (f"LongLoRA training step (LoRA q/k/v/o + embeddings + norms, batch 1, AdamW, fp32) with S²-Attn "
               f"(groups of {args.group_size_ratio:g} x length, half the heads shifted) vs full attention, "
               f"{args.model} on {args.device}, {args.threads} thread(s), median of {args.steps} steps after "
               f"{args.warmup} warm-up; memory = {memory} added over building the model. The paper's claim: the "
               f"attention term falls to the group share (last column); projections and MLP are unchanged. Command: "
               f"python -m repro.bench.longlora --model {args.model} --lengths {lengths} --threads {args.threads}")
    return write_and_show(table, args.out / f"longlora_{args.model}", caption, ".3g")


if __name__ == "__main__":
    exit_on_user_error(main)()
