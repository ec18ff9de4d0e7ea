"""LoRA through peft, on the attention matrices named by the paper (q, k, v, o)."""

from __future__ import annotations

from omegaconf import DictConfig
from peft import LoraConfig, TaskType, get_peft_model
from torch import nn

from repro.errors import ConfigError
from repro.methods.base import Adapted

# method config `init` -> peft's `init_lora_weights`
LORA_INIT = {"gaussian": "gaussian", "peft_default": True}


def lora_config(method_cfg: DictConfig, model_cfg: DictConfig, task_type: TaskType | None) -> LoraConfig:
    if method_cfg.init not in LORA_INIT:
        raise ConfigError(f"method.init must be one of {', '.join(LORA_INIT)}, got {method_cfg.init!r}")
    return LoraConfig(
        task_type=task_type,
        r=method_cfg.r,
        lora_alpha=method_cfg.alpha,
        lora_dropout=method_cfg.dropout,
        target_modules=[model_cfg.matrices[t] for t in method_cfg.targets],
        init_lora_weights=LORA_INIT[method_cfg.init],
        # the head trains under every method; peft keeps a trainable copy of these modules
        modules_to_save=[h.split(".")[-1] for h in model_cfg.head],
        bias="none",
    )


def apply_lora(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig) -> Adapted:
    peft_model = get_peft_model(model, lora_config(method_cfg, model_cfg, TaskType.SEQ_CLS))
    return Adapted(peft_model, is_peft=True)
