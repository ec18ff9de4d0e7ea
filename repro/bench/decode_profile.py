"""`python -m repro.bench.decode_profile [--arch gpt2-small] [--inputs 16] [--beams 1,4,10] [--threads 1]`

Why batched beam search gains what it gains on a CPU. `repro.bench.decode` measures the speed-up of decoding a batch
of inputs over decoding them one at a time; this profile says where the time goes, so the ratio can be explained
rather than only reported. On a random-weight GPT-2 with fixed-length prompts and a fixed number of new tokens
(no padding, no early end: the two modes do the same arithmetic), for each beam size it times `generate` both ways
and splits the time into the model's forward passes and everything else `generate` does (beam bookkeeping, logits
processors, cache reordering). Then it times one cached decoding step at growing row counts, which gives the cost
per row: one input at a time already runs `num_beams` rows per step, so the forward speed-up of batching B inputs
is bounded by cost_per_row(num_beams) / cost_per_row(B * num_beams). On one CPU thread a step at 10 rows is already
a matrix-matrix product near the core's peak, so that bound is small; on a GPU a step costs nearly the same up to
hundreds of rows (latency-bound), so batching approaches B times (`make gpu-check` measures it there).
Writes `results/bench/decode_profile.{csv,md}` and `results/bench/decode_step_cost.{csv,md}`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from transformers import DynamicCache, GPT2LMHeadModel

from repro.bench import hardware_label, latency, write_and_show
from repro.errors import ReproError, exit_on_user_error


class ForwardTimer:
    """Wraps a model's `forward` (an instance attribute, which `nn.Module.__call__` uses) and sums its wall time."""

    def __init__(self, model: nn.Module):
        self.model, self.inner, self.seconds, self.calls = model, model.forward, 0.0, 0
        model.forward = self

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.inner(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


def parse_ints(value: str, what: str) -> list[int]:
    try:
        items = [int(v) for v in value.split(",")]
    except ValueError:
        raise ReproError(f"{what} wants comma-separated integers, got {value!r}") from None
    if not items or min(items) < 1:
        raise ReproError(f"{what} wants positive integers, got {value!r}")
    return items


@torch.inference_mode()
def generate_split(model: nn.Module, prompts: torch.Tensor, num_beams: int, new_tokens: int,
                   no_repeat_ngram_size: int) -> list[dict]:
    """Both modes for one beam size: wall time, time in forward passes, the rest, and the outputs' agreement."""
    timer = model.forward if isinstance(model.forward, ForwardTimer) else ForwardTimer(model)
    kwargs = dict(num_beams=num_beams, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  pad_token_id=0, no_repeat_ngram_size=no_repeat_ngram_size)
    model.generate(input_ids=prompts[:1], **kwargs)  # warm-up
    rows, outputs = [], {}
    n = len(prompts)
    for mode, size in (("one_at_a_time", 1), ("batched", n)):
        timer.reset()
        start = time.perf_counter()
        outputs[mode] = torch.cat([model.generate(input_ids=prompts[i:i + size], **kwargs)
                                   for i in range(0, n, size)])
        total = time.perf_counter() - start
        rows.append({"num_beams": num_beams, "mode": mode, "rows_per_step": size * num_beams, "total_s": total,
                     "forward_s": timer.seconds, "other_s": total - timer.seconds, "forward_calls": timer.calls})
    same = bool(torch.equal(outputs["batched"], outputs["one_at_a_time"]))
    one, batched = rows
    for row in rows:
        row["speedup_total"] = one["total_s"] / batched["total_s"]
        row["speedup_forward"] = one["forward_s"] / batched["forward_s"]
        row["speedup_other"] = one["other_s"] / batched["other_s"]
        row["identical_outputs"] = same
    return rows


@torch.inference_mode()
def step_cost(model: nn.Module, rows: int, context: int, steps: int) -> float:
    """Milliseconds of one cached decoding step (one new token per row) with `context` tokens in the cache."""
    vocab = model.config.vocab_size
    cache = DynamicCache()
    out = model(input_ids=torch.randint(0, vocab, (rows, context)), past_key_values=cache, use_cache=True)
    token = torch.randint(0, vocab, (rows, 1))
    timings = []
    for _ in range(steps):
        start = time.perf_counter()
        out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
        timings.append(time.perf_counter() - start)
        out.past_key_values.crop(-1)  # drop the new token: every step sees the same context
    timings.sort()
    return 1000 * timings[len(timings) // 2]


def profile(arch: str, n_inputs: int, beams: list[int], prompt_len: int, new_tokens: int, no_repeat: int,
            step_rows: list[int], steps: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(latency.gpt2_config(arch)).eval()
    prompts = torch.randint(0, model.config.vocab_size, (n_inputs, prompt_len))
    split = pd.DataFrame([row for b in beams for row in generate_split(model, prompts, b, new_tokens, no_repeat)])
    model.forward = model.forward.inner  # the step timings below time the plain forward
    cost = pd.DataFrame([{"rows": r, "step_ms": step_cost(model, r, prompt_len + new_tokens // 2, steps)}
                         for r in step_rows])
    cost["us_per_row"] = 1000 * cost.step_ms / cost.rows
    cost["per_row_vs_1_row"] = cost.us_per_row / cost.us_per_row.iloc[0]
    split.insert(0, "arch", arch)
    cost.insert(0, "arch", arch)
    return split, cost


@exit_on_user_error
def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m repro.bench.decode_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="gpt2-small", help=f"one of {', '.join(latency.ARCHS)}")
    parser.add_argument("--inputs", type=int, default=16, help="inputs per batch (default 16, E2E's decode batch)")
    parser.add_argument("--beams", default="1,4,10", help="beam sizes (default 1,4,10; E2E uses 10)")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--no-repeat-ngram", type=int, default=4, help="E2E's no_repeat_ngram_size (0: off)")
    parser.add_argument("--step-rows", default="1,10,40,160", help="row counts for the per-step cost")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row count (median)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    if min(args.inputs, args.prompt_tokens, args.new_tokens, args.steps, args.threads) < 1:
        raise ReproError("--inputs, --prompt-tokens, --new-tokens, --steps and --threads must be at least 1")
    latency.gpt2_config(args.arch)  # validates --arch before any work
    torch.set_num_threads(args.threads)
    split, cost = profile(args.arch, args.inputs, parse_ints(args.beams, "--beams"), args.prompt_tokens,
                          args.new_tokens, args.no_repeat_ngram, parse_ints(args.step_rows, "--step-rows"), args.steps)
    hardware = hardware_label(torch.device("cpu"))
    command = (f"python -m repro.bench.decode_profile --arch {args.arch} --inputs {args.inputs} --beams {args.beams} "
               f"--threads {args.threads}")
    written = write_and_show(split, args.out / "decode_profile",
                             f"Beam search time split: model forward vs the rest of generate, one input at a time vs "
                             f"{args.inputs} per batch; random-weight {args.arch}, {args.prompt_tokens}-token prompts,"
                             f" {args.new_tokens} new tokens ({hardware}). Command: {command}", "%.3f")
    written += write_and_show(cost, args.out / "decode_step_cost",
                              f"One cached decoding step vs rows (inputs x beams): cost per row falls only until "
                              f"the matrix products fill the core; {args.arch}, random weights ({hardware}). "
                              f"Command: {command}", "%.3f")
    return written


if __name__ == "__main__":
    main()
