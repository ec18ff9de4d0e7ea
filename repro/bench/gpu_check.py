"""`python -m repro.bench.gpu_check [--out results/bench]` (`make gpu-check`): the GPU path in one command.

On one CUDA GPU, in a few minutes and with no network (embedded MiniLM, random-weight GPT-2): training steps of
LoRA and full fine-tuning in fp32 and bf16 (tokens/s and peak memory each, and their ratio), Table 1's latency
settings timed with CUDA events, beam search batched vs one input at a time, and a QLoRA step where bitsandbytes
is installed. Writes results/bench/gpu_train.md, gpu_latency_<arch>.md, gpu_decode.md (and .csv).

Without CUDA it prints one line and exits 0, so CI and laptops can call it. `--device cpu` runs the same
measurements on the CPU at toy sizes (what the tests do).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from repro.analysis.reference import write_table
from repro.paper import paper_data
from repro.bench import hardware_label, latency
from repro.bench import train as bench_train
from repro.errors import ReproError, exit_on_user_error

NO_CUDA = "gpu-check: no CUDA device here; nothing to check (run `make gpu-check` on a machine with a GPU)"


def training_rows(model: str, methods: list[str], precisions: list[str], batch: int, seq: int, steps: int,
                  device: str) -> pd.DataFrame:
    """Each (method, precision) in a fresh process (its own peak memory), with tokens/s and memory relative to
    the same method in fp32."""
    rows = []
    for method in methods:
        for precision in precisions:
            rows.append(bench_train.run_worker(
                ["--worker", method, "--model", model, "--batch", str(batch), "--seq", str(seq), "--steps",
                 str(steps), "--warmup", "2", "--device", device, "--precision", precision]))
    table = pd.DataFrame(rows)[["method", "precision", "step_ms", "tokens_per_s", "peak_memory_bytes"]]
    fp32 = table[table.precision == "fp32"].set_index("method")
    table["speedup_vs_fp32"] = table.tokens_per_s / table.method.map(fp32.tokens_per_s)
    table["memory_vs_fp32"] = table.peak_memory_bytes / table.method.map(fp32.peak_memory_bytes)
    return table


@torch.inference_mode()
def decode_rows(arch: str, n_inputs: int, prompt_len: int, new_tokens: int, num_beams: int,
                device: torch.device) -> pd.DataFrame:
    """Beam search on a random-weight GPT-2: all inputs in one batch vs one at a time (same outputs: greedy-length
    decoding with a fixed number of new tokens, so that padding is the only difference)."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    config = latency.gpt2_config(arch)
    model = GPT2LMHeadModel(config).to(device).eval()
    prompts = torch.randint(0, config.vocab_size, (n_inputs, prompt_len), device=device)
    kwargs = dict(num_beams=num_beams, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  pad_token_id=0)
    model.generate(input_ids=prompts[:1], **kwargs)  # warm-up (kernels, allocator)
    timings, outputs = {}, {}
    for name, size in (("batched", n_inputs), ("one_at_a_time", 1)):
        bench_train.sync(device)
        start = time.perf_counter()
        outputs[name] = torch.cat([model.generate(input_ids=prompts[i:i + size], **kwargs)
                                   for i in range(0, n_inputs, size)])
        bench_train.sync(device)
        timings[name] = time.perf_counter() - start
    return pd.DataFrame([{"arch": arch, "inputs": n_inputs, "prompt_tokens": prompt_len, "new_tokens": new_tokens,
                          "num_beams": num_beams, "batched_s": timings["batched"],
                          "one_at_a_time_s": timings["one_at_a_time"],
                          "speedup": timings["one_at_a_time"] / timings["batched"],
                          "identical_outputs": bool(torch.equal(outputs["batched"], outputs["one_at_a_time"]))}])


def qlora_row(model: str, batch: int, seq: int, steps: int, device: str) -> pd.DataFrame | None:
    """One QLoRA training measurement on the GPU where bitsandbytes imports; None otherwise."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        print("gpu-check: bitsandbytes not installed; QLoRA step skipped (pip install 'repro-lora[qlora]')")
        return None
    row = bench_train.run_worker(["--worker", "qlora", "--model", model, "--batch", str(batch), "--seq", str(seq),
                                  "--steps", str(steps), "--warmup", "1", "--device", device])
    return pd.DataFrame([row])[["method", "precision", "step_ms", "tokens_per_s", "peak_memory_bytes"]]


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m repro.bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (toy sizes, for tests)")
    parser.add_argument("--model", default="minilm-l6", help="classification model for the training steps")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    if args.device not in ("cuda", "cpu"):
        raise ReproError(f"--device must be cuda or cpu, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA)
        return []
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    # GPU sizes: Table 1's settings and a real batch; CPU: the smallest that exercise every code path
    batch, seq, steps = (32, 128, 20) if on_gpu else (2, 16, 2)
    arch, trials = ("gpt2-medium", 20) if on_gpu else ("gpt2-tiny", 2)
    hw = hardware_label(device)
    written = []

    train = training_rows(args.model, ["lora", "full_ft"], ["fp32", "bf16"], batch, seq, steps, args.device)
    qlora = qlora_row(args.model, batch, seq, steps, args.device) if on_gpu else None
    if qlora is not None:
        train = pd.concat([train, qlora], ignore_index=True)
    written += write_table(train, args.out / "gpu_train",
                           f"Training steps, {args.model}, batch {batch} x seq {seq}, {steps} timed steps, random "
                           f"tokens; {hw}. Memory: torch max allocated (CUDA) / process peak RSS (CPU); ratios vs "
                           f"the same method in fp32. Command: python -m repro.bench.gpu_check", ".4g")

    table1 = ",".join(f"{s['batch_size']}x{s['seq_len']}" for s in paper_data("table1_latency")["settings"])
    settings = latency.parse_settings(table1 if on_gpu else "1x8")
    lat = latency.benchmark(arch, settings, trials, 3 if on_gpu else 0, int(latency.method_cfg("lora").r), device)
    written += write_table(lat, args.out / f"gpu_latency_{arch}",
                           f"Forward latency (ms), random-weight {arch}, {trials} trials, "
                           f"{'CUDA events' if on_gpu else 'wall clock'}; {hw}. Command: python -m "
                           f"repro.bench.gpu_check", ".4g")

    dec = decode_rows("gpt2-small" if on_gpu else "gpt2-tiny", 16 if on_gpu else 3, 32 if on_gpu else 4,
                      32 if on_gpu else 3, 4 if on_gpu else 2, device)
    written += write_table(dec, args.out / "gpu_decode",
                           f"Beam search, batched vs one input at a time, random-weight GPT-2; {hw}. Command: "
                           f"python -m repro.bench.gpu_check", ".4g")
    lora = train[(train.method == "lora") & (train.precision == "bf16")]
    print(f"gpu-check on {hw}: LoRA bf16 {lora.speedup_vs_fp32.iloc[0]:.2f}x fp32 tokens/s; batched beam search "
          f"{dec.speedup.iloc[0]:.2f}x one at a time; wrote {', '.join(str(p) for p in written)}")
    return written


if __name__ == "__main__":
    exit_on_user_error(main)()
