"""QLoRA (Dettmers et al. 2023): the frozen base model in 4-bit NormalFloat with double quantisation, computing in
bf16/fp16, LoRA on top, and a paged AdamW. bitsandbytes provides the 4-bit kernels and the paged optimizer; it
supports CUDA devices, so `check_backend` refuses any other device in one line before any work is done.
"""

from __future__ import annotations

import importlib.util

import torch
from omegaconf import DictConfig

from repro.errors import ConfigError
from repro.methods.base import TrainingHooks, adamw

COMPUTE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def check_backend(method_cfg: DictConfig, device: torch.device) -> None:
    if not method_cfg.get("quantization"):
        return
    if device.type != "cuda":
        raise ConfigError(f"method={method_cfg.name}: the 4-bit backend (bitsandbytes) does not support device "
                          f"'{device}'; run on a CUDA GPU (train.device=cuda) or use method=lora")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"method={method_cfg.name} needs bitsandbytes: pip install 'repro-lora[qlora]'")


def quantization_config(method_cfg: DictConfig):
    """transformers' BitsAndBytesConfig for loading the base model (`from_pretrained(quantization_config=...)`)."""
    from transformers import BitsAndBytesConfig

    q = method_cfg.quantization
    if q.bits != 4 or q.quant_type not in ("nf4", "fp4") or q.compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(f"method.quantization: bits must be 4, quant_type nf4|fp4, compute_dtype "
                          f"{'|'.join(COMPUTE_DTYPES)}; got {dict(q)}")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q.quant_type,
                              bnb_4bit_use_double_quant=q.double_quant,
                              bnb_4bit_compute_dtype=COMPUTE_DTYPES[q.compute_dtype])


def load_kwargs(method_cfg: DictConfig) -> dict:
    """Extra `from_pretrained` arguments a method needs (only QLoRA has any)."""
    if not method_cfg.get("quantization"):
        return {}
    return {"quantization_config": quantization_config(method_cfg), "device_map": {"": torch.cuda.current_device()}}


def prepare(model: torch.nn.Module) -> torch.nn.Module:
    """peft's preparation of a k-bit model for training (norms in fp32, input gradients for checkpointing)."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def paged_adamw(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    import bitsandbytes as bnb

    return bnb.optim.PagedAdamW32bit(groups, lr=lr)


def qlora_hooks(method_cfg: DictConfig) -> TrainingHooks:
    return TrainingHooks(make_optimizer=paged_adamw if method_cfg.get("paged_optimizer") else adamw)
