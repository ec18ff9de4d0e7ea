"""QLoRA (Dettmers et al. 2023): the frozen base model in 4-bit NormalFloat with double quantisation, computing in
bf16/fp16, LoRA on top, and a paged AdamW. bitsandbytes provides the 4-bit kernels: on CUDA GPUs, and from 0.49 on
CPUs too; `check_backend` refuses anything else in one line before any work is done.

On a CPU, two things differ from a GPU, both for exactness rather than speed:
- bitsandbytes re-lays a layer's 4-bit weights for an AVX512-BF16 inference kernel on its first no-grad forward in
  eval mode (the first evaluation), and its training path then fails on the re-laid weights (0.50.2: "a view of a
  leaf Variable ... in-place operation"); re-laid weights are also saved back with rounded scales. `prepare` keeps
  the one layout that trains, so evaluation computes as training does and an export reloads the same weights.
- the paged optimizer pages optimizer state between GPU and host memory; on a CPU the state is in host memory
  already, so QLoRA uses AdamW there (the same 32-bit update).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Sequence

import torch
from omegaconf import DictConfig
from packaging.version import Version

from repro.errors import ConfigError
from repro.methods.base import TrainingHooks, adamw

COMPUTE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
CPU_SINCE = Version("0.49")  # the first bitsandbytes with 4-bit kernels for CPUs that this harness was tested with


def check_backend(method_cfg: DictConfig, device: torch.device, model_cfg: DictConfig | None = None) -> None:
    """One line, before any work, where the method cannot run: no bitsandbytes, a device it has no 4-bit kernels
    for, or (with `model_cfg`) a random-initialised model, which has no checkpoint to quantise."""
    if not method_cfg.get("quantization"):
        return
    name = method_cfg.name
    if model_cfg is not None and model_cfg.get("source") == "tiny":
        raise ConfigError(f"method={name} quantises a pre-trained checkpoint; model {model_cfg.name} is "
                          f"random-initialised (use e.g. model=minilm-l6)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"method={name} needs bitsandbytes: pip install 'repro-lora[qlora]'")
    version = Version(importlib.metadata.version("bitsandbytes"))
    if device.type == "cuda" or (device.type == "cpu" and version >= CPU_SINCE):
        return
    raise ConfigError(f"method={name}: the 4-bit backend (bitsandbytes {version}) does not support device "
                      f"'{device}'; run on a CUDA GPU, or on the CPU with bitsandbytes>={CPU_SINCE}, or use "
                      f"method=lora")


def quantization_config(method_cfg: DictConfig, unquantised: Sequence[str] = ()):
    """transformers' BitsAndBytesConfig for loading the base model (`from_pretrained(quantization_config=...)`);
    the modules named in `unquantised` (and below them) stay in full precision."""
    from transformers import BitsAndBytesConfig

    q = method_cfg.quantization
    if q.bits != 4 or q.quant_type not in ("nf4", "fp4") or q.compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(f"method.quantization: bits must be 4, quant_type nf4|fp4, compute_dtype "
                          f"{'|'.join(COMPUTE_DTYPES)}; got {dict(q)}")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q.quant_type,
                              bnb_4bit_use_double_quant=q.double_quant,
                              bnb_4bit_compute_dtype=COMPUTE_DTYPES[q.compute_dtype],
                              llm_int8_skip_modules=list(unquantised) or None)


def load_kwargs(method_cfg: DictConfig, model_cfg: DictConfig, device: torch.device) -> dict:
    """Extra `from_pretrained` arguments a method needs (only QLoRA has any): the 4-bit weights, placed on `device`
    as they load. The model's task head (`model.head`) stays in full precision: it trains under every method, and
    4-bit weights cannot."""
    if not method_cfg.get("quantization"):
        return {}
    place = torch.cuda.current_device() if device.type == "cuda" else device.type
    return {"quantization_config": quantization_config(method_cfg, model_cfg.get("head") or ()),
            "device_map": {"": place}}


def prepare(model: torch.nn.Module) -> torch.nn.Module:
    """peft's preparation of a k-bit model for training (norms in fp32, input gradients for checkpointing), and one
    weight layout on CPUs (`keep_training_layout`)."""
    from peft import prepare_model_for_kbit_training

    return keep_training_layout(prepare_model_for_kbit_training(model, use_gradient_checkpointing=False))


def keep_training_layout(model: torch.nn.Module) -> torch.nn.Module:
    """Turn off bitsandbytes' re-laying of 4-bit weights for its CPU inference kernel (module docstring)."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model


def paged_adamw(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """bitsandbytes' paged AdamW for parameters on a GPU; AdamW for parameters on a CPU (module docstring)."""
    if not any(p.device.type == "cuda" for group in groups for p in group["params"]):
        return adamw(groups, lr)
    import bitsandbytes as bnb

    return bnb.optim.PagedAdamW32bit(groups, lr=lr)


def qlora_hooks(method_cfg: DictConfig) -> TrainingHooks:
    return TrainingHooks(make_optimizer=paged_adamw if method_cfg.get("paged_optimizer") else adamw)
