"""`python -m repro.bench.train [--model minilm-l6] [--methods lora,full_ft] [--batch 32] [--seq 128] [--steps N]`

Training cost per method (Section 4.2's claims: less memory, a ~10,000x smaller checkpoint, a 25% speed-up):
step time, tokens/s, peak memory, optimizer-state bytes, checkpoint size, model FLOP utilisation against this
machine's measured fp32 matmul peak; and the harness's own overhead: `repro.kinds.classification.train_and_evaluate`
against a bare torch + peft loop on the same model and batch shape.

Each method runs in a fresh subprocess (`--worker`), so that peak memory (process RSS on CPU, torch's max
allocated on CUDA) is that method's alone. Inputs are random token ids of exactly `--seq` tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from repro.analysis.reference import write_table
from repro.paper import paper_data
from repro.bench import hardware_label
from repro.config import group_choices, load_group_config
from repro.distributed import resolve_device
from repro.errors import ReproError, exit_on_user_error
from repro.loop import optimizer_groups
from repro.methods import apply_method, load_kwargs
from repro.models import load_model, load_tokenizer
from repro.params import count_parameters, weights_in
from repro.precision import Precision, resolve_precision
from repro.provenance import peak_memory_bytes, reset_peak_memory

RESULT_PREFIX = "RESULT "
NUM_LABELS = 2
BYTES = {"TB": 1e12, "GB": 1e9, "MB": 1e6}


# ---------------------------------------------------------------------------- measurements


def load_group(group: str, name: str) -> DictConfig:
    """A model or method config as Hydra composes it (with its `defaults`, e.g. dora.yaml extends lora.yaml)."""
    if name not in group_choices(group):
        raise ReproError(f"unknown {group} '{name}'; choose one of: {', '.join(group_choices(group))}")
    return load_group_config(group, name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_flops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 FLOP/s of an n x n matmul: the machine peak that MFU is measured against."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def train_flops(model: nn.Module, model_cfg: DictConfig, batch: int, seq: int) -> float:
    """Model FLOPs of one training step: forward 2 P T (P = weights of Linear layers, T = tokens) plus
    attention 4 L s d T; backward to activations costs one forward again; weight gradients 2 P_trainable T.
    Full fine-tuning comes to the usual 3x forward; a frozen base saves most of the weight-gradient third."""
    tokens = batch * seq
    linear = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    p_all, p_train = sum(map(weights_in, linear)), sum(weights_in(w) for w in linear if w.requires_grad)
    forward = 2 * p_all * tokens + 4 * model_cfg.n_layers * seq * model_cfg.d_model * tokens
    return 2 * forward + 2 * p_train * tokens


def synthetic_batch(vocab: int, batch: int, seq: int, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(1000, vocab, (batch, seq), generator=generator).to(device),
            "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device),
            "labels": torch.randint(0, NUM_LABELS, (batch,), generator=generator).to(device)}


def build(model_name: str, method_name: str, device: torch.device):
    """(adapted, model config, method config, vocabulary size) with a fixed seed."""
    model_cfg, method_cfg = load_group("model", model_name), load_group("method", method_name)
    torch.manual_seed(0)
    extra = load_kwargs(method_cfg, model_cfg, device)  # QLoRA: 4-bit weights, placed by from_pretrained
    base = load_model(model_cfg, NUM_LABELS, **extra)
    vocab = base.config.vocab_size
    adapted = apply_method(base, method_cfg, model_cfg)
    if not extra:
        adapted.model.to(device)
    return adapted, model_cfg, method_cfg, vocab


def bare_steps(model: nn.Module, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, steps: int,
               device: torch.device, precision: Precision | None = None) -> list[float]:
    """A bare loop: forward (under `precision`'s autocast), backward, optimizer step; seconds per step."""
    precision = precision or resolve_precision("fp32", device)
    scaler = precision.grad_scaler()
    model.train()
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        with precision.autocast():
            loss = model(**batch).loss
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for state in optimizer.state.values()
               for t in state.values() if torch.is_tensor(t))


def checkpoint_bytes(adapted) -> int:
    """Size on disk of what `Adapted.save` writes (weights and peft's small config files)."""
    with tempfile.TemporaryDirectory() as tmp:
        adapted.save(Path(tmp))
        return sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())


def measure_method(model_name: str, method_name: str, batch: int, seq: int, steps: int, warmup: int,
                   device: torch.device, precision: str = "fp32") -> dict[str, Any]:
    """One method's training cost (run in its own process) in `precision` (train.precision's names)."""
    mixed = resolve_precision(precision, device)
    adapted, model_cfg, method_cfg, vocab = build(model_name, method_name, device)
    model = adapted.model
    memory_before = reset_peak_memory(device)
    seq_in = seq - adapted.reserved_tokens
    inputs = synthetic_batch(vocab, batch, seq_in, device)
    optimizer = adapted.hooks.make_optimizer(optimizer_groups(model, 0.0), method_cfg.learning_rate)
    bare_steps(model, inputs, optimizer, warmup, device, mixed)
    times = bare_steps(model, inputs, optimizer, steps, device, mixed)
    step_s = statistics.fmean(times)
    counts = count_parameters(model, list(model_cfg.head))
    return {"method": method_name, "precision": mixed.name, "trainable_params": counts.trainable, "head_params": counts.head,
            "total_params": counts.total, "step_ms": 1e3 * step_s,
            "step_std_ms": 1e3 * statistics.stdev(times) if len(times) > 1 else 0.0,
            "tokens_per_s": batch * seq / step_s, "peak_memory_bytes": peak_memory_bytes(device),
            "memory_before_train_bytes": memory_before, "optimizer_state_bytes": optimizer_state_bytes(optimizer),
            "checkpoint_bytes": checkpoint_bytes(adapted),
            "train_flops_per_step": train_flops(model, model_cfg, batch, seq)}


def harness_rows(tokenizer, n: int, seq: int) -> list[dict[str, Any]]:
    """Rows whose text tokenises to at least `seq` tokens, so truncation gives every batch exactly `seq`."""
    words = " ".join(tokenizer.convert_ids_to_tokens(list(range(2000, 2000 + seq))))
    return [{"text_a": words, "label": i % NUM_LABELS} for i in range(n)]


def measure_harness(model_name: str, batch: int, seq: int, steps: int, warmup: int,
                    device: torch.device) -> dict[str, Any]:
    """LoRA step time through `repro.kinds.classification.train_and_evaluate` (data loader, padding collate, clipping,
    schedule, loss checks) against the bare loop, same model and batch shape: bare, harness, bare again."""
    from repro.data import TaskData
    from repro.kinds.classification import train_and_evaluate

    adapted, model_cfg, method_cfg, vocab = build(model_name, "lora", device)
    model, tokenizer = adapted.model, load_tokenizer(model_cfg)
    rows = harness_rows(tokenizer, batch * steps, seq)
    optimizer = adapted.hooks.make_optimizer(optimizer_groups(model, 0.0), method_cfg.learning_rate)
    inputs = synthetic_batch(vocab, batch, seq, device)
    bare_steps(model, inputs, optimizer, warmup, device)
    bare = bare_steps(model, inputs, optimizer, steps, device)
    task = OmegaConf.create({"num_labels": NUM_LABELS, "metrics": ["accuracy"], "main_metric": "accuracy"})
    train = OmegaConf.create({"learning_rate": method_cfg.learning_rate, "epochs": 1, "batch_size": batch,
                              "eval_batch_size": batch, "grad_accum_steps": 1, "warmup_ratio": 0.0,
                              "weight_decay": 0.0, "max_grad_norm": 1.0})
    result = train_and_evaluate(model, tokenizer, TaskData(rows, {"validation": rows[:batch]}), task, train,
                                max_length=seq, token_type_ids=model_cfg.get("token_type_ids"), seed=0, device=device)
    bare += bare_steps(model, inputs, optimizer, steps, device)
    if result.train_tokens != batch * seq * steps:
        raise RuntimeError(f"harness saw {result.train_tokens} tokens, expected {batch * seq * steps}")
    return {"harness_step_ms": 1e3 * result.train_time_s / result.optimizer_steps,
            "bare_step_ms": 1e3 * statistics.fmean(bare), "steps": steps}


# ---------------------------------------------------------------------------- parent


def run_worker(args: list[str]) -> dict[str, Any]:
    """Run `--worker ...` in a fresh interpreter and return its result record."""
    proc = subprocess.run([sys.executable, "-m", "repro.bench.train", *args], capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ReproError(f"benchmark worker {' '.join(args)} failed: {tail}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def ratio_table(per_method: pd.DataFrame) -> pd.DataFrame:
    """LoRA vs full fine-tuning, ours beside the paper's GPT-3 175B claims."""
    claims = paper_data("claims")
    lora, ft = (per_method.set_index("method").loc[m] for m in ("lora", "full_ft"))
    added_ft = ft.peak_memory_bytes - ft.memory_before_train_bytes
    added_lora = max(lora.peak_memory_bytes - lora.memory_before_train_bytes, 1)
    tput = claims["training_throughput_tokens_per_s"]
    vram, ckpt = claims["training_vram"], claims["checkpoint"]
    def size(cell: dict) -> float:
        return cell["value"] * BYTES[cell["unit"]]
    return pd.DataFrame([
        {"quantity": "throughput gain LoRA vs FT (%)", "ours": 100 * (lora.tokens_per_s / ft.tokens_per_s - 1),
         "paper": claims["training_speedup_pct"],
         "paper_detail": 100 * (tput["lora"] / tput["full_ft"] - 1)},
        {"quantity": "peak memory FT / LoRA (x)", "ours": ft.peak_memory_bytes / lora.peak_memory_bytes,
         "paper": size(vram["full_ft"]) / size(vram["lora"]), "paper_detail": claims["gpu_memory_reduction_x"]},
        {"quantity": "memory added by training FT / LoRA (x)",
         "ours": added_ft / added_lora, "paper": None, "paper_detail": None},
        {"quantity": "optimizer state FT / LoRA (x)", "ours": ft.optimizer_state_bytes / lora.optimizer_state_bytes,
         "paper": None, "paper_detail": None},
        {"quantity": "checkpoint FT / LoRA (x)", "ours": ft.checkpoint_bytes / lora.checkpoint_bytes,
         "paper": claims["checkpoint"]["reduction_x"], "paper_detail": size(ckpt["full_ft"]) / size(ckpt["lora"])},
        {"quantity": "trainable params FT / LoRA (x)", "ours": ft.trainable_params / lora.trainable_params,
         "paper": claims["trainable_param_reduction_x"], "paper_detail": None},
    ])


def worker_main(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker == "harness":
        record = measure_harness(args.model, args.batch, args.seq, args.steps, args.warmup, device)
    else:
        record = measure_method(args.model, args.worker, args.batch, args.seq, args.steps, args.warmup, device,
                                args.precision)
    print(RESULT_PREFIX + json.dumps(record))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], prog="python -m repro.bench.train")
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--methods", default="lora,full_ft", help="comma-separated method configs")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--no-harness", action="store_true", help="skip the harness vs bare-loop comparison")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16, fp16 or auto (as train.precision)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compare-precisions", default=None, metavar="P,Q",
                        help="instead: each method's step in each precision (e.g. fp32,bf16), side by side, "
                             "into train_<model>_precision.md")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.batch, args.seq, args.steps) < 1 or args.warmup < 0:
        raise ReproError("--batch, --seq and --steps must be positive, --warmup non-negative")
    return args


def compare_precisions(args: argparse.Namespace, methods: list[str], job: list[str], hw: str) -> list[Path]:
    """Each method's training step in each precision of `--compare-precisions` (a fresh process each, the same
    job), and its speed-up over the first: whether bf16 pays on this CPU, measured rather than assumed."""
    precisions = [p.strip() for p in args.compare_precisions.split(",") if p.strip()]
    for p in precisions:
        try:
            resolve_precision(p, resolve_device(args.device))  # an unknown name stops here, before any worker
        except ValueError as exc:
            raise ReproError(str(exc)) from None
    rows = []
    for method in methods:
        for p in precisions:
            r = run_worker(["--worker", method, *job, "--precision", p])
            rows.append({"method": method, "precision": p, "step_ms": r["step_ms"], "step_std_ms": r["step_std_ms"],
                         "tokens_per_s": r["tokens_per_s"], "peak_memory_bytes": r["peak_memory_bytes"]})
    frame = pd.DataFrame(rows)
    first = frame[frame["precision"] == precisions[0]].set_index("method")["step_ms"]
    frame["speedup_vs_" + precisions[0]] = [first[m] / ms for m, ms in zip(frame["method"], frame["step_ms"])]
    written = write_table(frame, args.out / f"train_{args.model}_precision",
                          f"Training step per precision ({args.model}, batch {args.batch} x seq {args.seq}, "
                          f"{args.steps} timed steps after {args.warmup} warm-up, AdamW, random tokens; {hw}); "
                          f"each method and precision in a fresh process. Command: python -m repro.bench.train "
                          f"--compare-precisions {args.compare_precisions} --methods {args.methods} --batch "
                          f"{args.batch} --seq {args.seq} --steps {args.steps}"
                          + (f" --threads {args.threads}" if args.threads else ""), ".4g")
    for path in written:
        print(path)
    return written


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    if args.worker:
        worker_main(args)
        return []
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    load_group("model", args.model)
    for m in methods:
        load_group("method", m)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)  # the matmul peak is measured with the workers' thread count
    job = ["--model", args.model, "--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--device", args.device] + (["--threads", str(args.threads)] if args.threads
                                                                      else [])
    if args.compare_precisions:
        return compare_precisions(args, methods, job, hardware_label(device))
    common = [*job, "--precision", args.precision]
    peak = matmul_peak_flops(device)
    per_method = pd.DataFrame([run_worker(["--worker", m, *common]) for m in methods])
    per_method["achieved_gflops"] = per_method.train_flops_per_step / (per_method.step_ms / 1e3) / 1e9
    per_method["mfu_pct"] = 100 * per_method.achieved_gflops * 1e9 / peak
    hw = hardware_label(device)
    memory = "torch max allocated" if device.type == "cuda" else "process peak RSS"
    head = (f"{args.model}, batch {args.batch} x seq {args.seq}, {args.steps} timed steps after {args.warmup} "
            f"warm-up, AdamW, random tokens, precision {args.precision}; {hw}; measured fp32 matmul peak "
            f"{peak / 1e9:.1f} GFLOP/s")
    written = write_table(per_method, args.out / f"train_{args.model}",
                          f"Training cost per method ({head}). Memory: {memory}, each method in a fresh process; "
                          f"memory_before_train = in use after building the model, when the peak window starts. "
                          f"FLOPs: 2x forward + weight gradients "
                          f"of trainable Linear weights.", ".4g")
    if {"lora", "full_ft"} <= set(methods):
        written += write_table(ratio_table(per_method), args.out / f"train_{args.model}_vs_paper",
                               f"LoRA vs full fine-tuning ({head}). Paper: GPT-3 175B claims (Section 4.2, "
                               f"footnote 5); paper_detail: the gain implied by footnote 5's tokens/s per V100, "
                               f"the abstract's memory-reduction factor, the checkpoint size ratio.", ".5g")
    if not args.no_harness:
        h = run_worker(["--worker", "harness", *common])
        h["overhead_pct"] = 100 * (h["harness_step_ms"] / h["bare_step_ms"] - 1)
        written += write_table(pd.DataFrame([h]), args.out / f"train_{args.model}_harness",
                               f"Harness overhead, LoRA ({head}): repro.loop.train's training loop "
                               f"(DataLoader + padding collate, loss check, grad clipping, LR schedule) vs a bare "
                               f"forward/backward/AdamW loop on pre-built tensors; bare timed before and after.", ".4g")
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    exit_on_user_error(main)()
