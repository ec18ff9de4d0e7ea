"""`python -m repro.bench.latency [--arch gpt2-medium] [--trials N] [--settings 32x512,16x256,1x128] [--out DIR]`

Inference latency of one forward pass (Table 1, Section 3 and 4.1): the base model (what full fine-tuning
serves), LoRA merged into W (the same architecture, so no added latency), LoRA unmerged (peft on c_attn, the
extra B A path evaluated at every call), and Adapter^L / Adapter^H sized to the paper's |Theta| per setting.

Weights are random (latency does not depend on their values). Variants share the frozen weights (only what a
variant changes is copied), so GPT-2 medium fits five times in memory; trials run round-robin across variants
so that a change in machine load hits every variant alike. Timing: time.perf_counter on CPU, CUDA events on GPU.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from repro.paper import paper_data
from repro.bench import hardware_label, write_and_show
from repro.config import load_group_config
from repro.errors import ReproError, exit_on_user_error
from repro.methods.adapters import insert_adapters

# GPT-2 family architectures (n_layer, n_embd, n_head); the paper's Table 1 model is gpt2-medium.
ARCHS: dict[str, dict[str, int]] = {
    "gpt2-medium": {"n_layer": 24, "n_embd": 1024, "n_head": 16},
    "gpt2-small": {"n_layer": 12, "n_embd": 768, "n_head": 12},
    "gpt2-tiny": {"n_layer": 2, "n_embd": 64, "n_head": 4},
}
PAPER_ARCH = "gpt2-medium"
VARIANTS = ("base", "lora_merged", "lora_unmerged", "adapter_l", "adapter_h")
# GPT-2 module layout for `insert_adapters`: adapters after the attention and the MLP output projections.
GPT2_SITES = {"attn": "attn.c_proj", "ffn": "mlp.c_proj"}


@dataclass(frozen=True)
class Setting:
    batch_size: int
    seq_len: int

    @property
    def label(self) -> str:
        return f"{self.batch_size}x{self.seq_len}"


def parse_settings(value: str) -> list[Setting]:
    """`32x512,16x256,1x128` -> settings (batch x sequence length)."""
    settings = []
    for item in value.split(","):
        try:
            batch, seq = (int(v) for v in item.strip().lower().split("x"))
        except ValueError:
            raise ReproError(f"--settings wants BATCHxSEQ items like 32x512, got {item!r}") from None
        if batch <= 0 or seq <= 0:
            raise ReproError(f"--settings: batch and sequence length must be positive, got {item!r}")
        settings.append(Setting(batch, seq))
    return settings


def gpt2_config(arch: str) -> GPT2Config:
    if arch not in ARCHS:
        raise ReproError(f"unknown --arch {arch!r}; choose one of: {', '.join(ARCHS)}")
    return GPT2Config(**ARCHS[arch])


def count_params(config: GPT2Config) -> int:
    """Parameters of the model for `config`, counted on the meta device (no memory, no init)."""
    with torch.device("meta"):
        return sum(p.numel() for p in GPT2LMHeadModel(config).parameters())


def gpt2_model_cfg(config: GPT2Config) -> DictConfig:
    """The slice of a model config that `insert_adapters` reads, for GPT-2."""
    return OmegaConf.create({"layers": "transformer.h", "adapter_sites": GPT2_SITES, "d_model": config.n_embd})


def method_cfg(name: str) -> DictConfig:
    return load_group_config("method", name)


def adapter_bottleneck(budget: float, d_model: int, n_adapters: int, layer_norm: bool) -> int:
    """Bottleneck r whose adapters total about `budget` parameters: each has 2 d r + r + d (+ 2 d with LN)."""
    per_adapter = budget / n_adapters - d_model - (2 * d_model if layer_norm else 0)
    return max(1, round(per_adapter / (2 * d_model + 1)))


def paper_budget(setting: Setting, table1: dict, arch_params: int, paper_params: int) -> float:
    """The paper's adapter |Theta| for this setting (the nearest paper setting by token count when it is not
    one of the paper's), scaled by model size when the architecture is not GPT-2 medium."""
    tokens = setting.batch_size * setting.seq_len
    nearest = min(table1["settings"], key=lambda s: abs(s["batch_size"] * s["seq_len"] - tokens))
    return nearest["adapter_params_m"] * 1e6 * arch_params / paper_params


def shared_copy(model: nn.Module, clone: Callable[[str], bool] = lambda name: False) -> nn.Module:
    """A copy of the module tree whose parameters are the original tensors, except those `clone` selects."""
    memo = {id(p): p for name, p in model.named_parameters() if not clone(name)}
    return copy.deepcopy(model, memo)


def build_variants(base: nn.Module, config: GPT2Config, budget: float, lora_r: int) -> dict[str, tuple[nn.Module, int]]:
    """Each variant and the parameters it adds to the base model."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=lora_r, lora_alpha=lora_r, target_modules=["c_attn"], fan_in_fan_out=True,
                      init_lora_weights="gaussian")
    unmerged = get_peft_model(shared_copy(base), lora)
    merged = get_peft_model(shared_copy(base, lambda n: "c_attn" in n), lora).merge_and_unload()
    lora_params = sum(p.numel() for n, p in unmerged.named_parameters() if "lora_" in n)
    variants = {"base": (base, 0), "lora_merged": (merged, 0), "lora_unmerged": (unmerged, lora_params)}
    model_cfg = gpt2_model_cfg(config)
    for name in ("adapter_l", "adapter_h"):
        m = method_cfg(name)
        r = adapter_bottleneck(budget, config.n_embd, config.n_layer * len(m.sites), m.layer_norm)
        model = shared_copy(base)
        insert_adapters(model, model_cfg, list(m.sites), r, m.layer_norm, 0, m.activation)
        variants[name] = (model, sum(p.numel() for n, p in model.named_parameters() if ".adapter." in n))
    return variants


def time_once(model: nn.Module, input_ids: torch.Tensor) -> float:
    """One forward pass in milliseconds."""
    if input_ids.is_cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model(input_ids=input_ids)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)
    start_s = time.perf_counter()
    model(input_ids=input_ids)
    return (time.perf_counter() - start_s) * 1e3


@torch.inference_mode()
def time_variants(variants: dict[str, nn.Module], input_ids: torch.Tensor, trials: int,
                  warmup: int) -> dict[str, list[float]]:
    """Per variant, `trials` latencies (ms) after `warmup` untimed passes, round-robin across variants."""
    for model in variants.values():
        model.eval()
        for _ in range(warmup):
            model(input_ids=input_ids)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(trials):
        for name, model in variants.items():
            times[name].append(time_once(model, input_ids))
    return times


def paper_cells(setting: Setting, variant: str, table1: dict) -> dict[str, float | None]:
    """Table 1's value for this setting and variant (base and merged LoRA share the Fine-Tune/LoRA row)."""
    row = {"base": "ft_or_lora", "lora_merged": "ft_or_lora"}.get(variant, variant)
    for s in table1["settings"]:
        if (s["batch_size"], s["seq_len"]) == (setting.batch_size, setting.seq_len) and row in s["latency_ms"]:
            cell = s["latency_ms"][row]
            return {"paper_ms": cell["value"], "paper_pm": cell["pm"], "paper_overhead_pct": cell.get("overhead_pct")}
    return {"paper_ms": None, "paper_pm": None, "paper_overhead_pct": None}


def benchmark(arch: str, settings: list[Setting], trials: int, warmup: int, lora_r: int,
              device: torch.device, seed: int = 0) -> pd.DataFrame:
    """The latency table: one row per setting and variant."""
    table1 = paper_data("table1_latency")
    config = gpt2_config(arch)
    arch_params, paper_params = count_params(config), count_params(gpt2_config(PAPER_ARCH))
    torch.manual_seed(seed)
    base = GPT2LMHeadModel(config).to(device)
    rows = []
    for setting in settings:
        if setting.seq_len > config.n_positions:
            raise ReproError(f"sequence length {setting.seq_len} exceeds the model's {config.n_positions} positions")
        budget = paper_budget(setting, table1, arch_params, paper_params)
        variants = build_variants(base, config, budget, lora_r)
        input_ids = torch.randint(0, config.vocab_size, (setting.batch_size, setting.seq_len), device=device)
        times = time_variants({n: m for n, (m, _) in variants.items()}, input_ids, trials, warmup)
        base_mean, base_median = statistics.fmean(times["base"]), statistics.median(times["base"])
        for name, (_, added) in variants.items():
            mean = statistics.fmean(times[name])
            median = statistics.median(times[name])
            rows.append({"setting": setting.label, "variant": name, "added_params": added, "mean_ms": mean,
                         "std_ms": statistics.stdev(times[name]) if trials > 1 else 0.0, "median_ms": median,
                         "overhead_pct": 100 * (mean / base_mean - 1) if name != "base" else None,
                         "overhead_median_pct": 100 * (median / base_median - 1) if name != "base" else None,
                         **paper_cells(setting, name, table1)})
        del variants
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], prog="python -m repro.bench.latency")
    parser.add_argument("--arch", default=PAPER_ARCH, help=f"one of {', '.join(ARCHS)}")
    parser.add_argument("--trials", type=int, default=paper_data("table1_latency")["trials"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--settings", default=",".join(f"{s['batch_size']}x{s['seq_len']}"
                                                       for s in paper_data("table1_latency")["settings"]))
    parser.add_argument("--lora-r", type=int, default=int(method_cfg("lora").r))
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    if args.trials < 1 or args.warmup < 0 or args.lora_r < 1:
        raise ReproError("--trials and --lora-r must be positive, --warmup non-negative")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    settings = parse_settings(args.settings)
    table = benchmark(args.arch, settings, args.trials, args.warmup, args.lora_r, device)
    hw = hardware_label(device)
    caption = (f"Forward-pass latency (ms), random-weight {args.arch} ({ARCHS[args.arch]}), {hw}, "
               f"mean and std over {args.trials} trials after {args.warmup} warm-up passes, round-robin over "
               f"variants; settings (batch x seq) {args.settings}; LoRA r={args.lora_r} on c_attn; adapters sized "
               f"to the paper's |Theta| per setting (scaled by model size off GPT-2 medium), added_params = what "
               f"was built. Paper columns: GPT-2 medium on a Quadro RTX8000, 100 trials (Table 1); "
               f"overhead_pct: mean vs base mean; overhead_median_pct: the same on medians (robust to load spikes on a "
               f"shared machine).")
    return write_and_show(table, args.out / f"latency_{args.arch}", caption, ".3g")


if __name__ == "__main__":
    exit_on_user_error(main)()
