"""LoRA and its successors through peft, on the attention matrices named by the paper (q, k, v, o).

One entry point, `apply_peft_lora(model, method_cfg, model_cfg, task_type)`, for every task kind (the task type is
peft's SEQ_CLS, CAUSAL_LM or SEQ_2_SEQ_LM). The variants are options of the same adapter:
- lora: W0 + (alpha / r) B A (Section 4);
- rslora: scaling alpha / sqrt(r) (Kalajdzievski 2023), `use_rslora`;
- dora: the weight split into magnitude and direction, LoRA on the direction (Liu et al. 2024), `use_dora`;
- adalora: SVD-form adapters whose ranks are pruned to a budget during training (Zhang et al. 2023), adalora.py;
- qlora: LoRA on a 4-bit NormalFloat base model (Dettmers et al. 2023), qlora.py (the quantised loading).
"""

from __future__ import annotations

from omegaconf import DictConfig
from peft import LoraConfig, TaskType, get_peft_model
from torch import nn

from repro.errors import ConfigError
from repro.methods.adalora import apply_adalora
from repro.methods.base import Adapted, saved_head, target_modules
from repro.methods.qlora import prepare, qlora_hooks

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
        target_modules=target_modules(method_cfg, model_cfg),
        init_lora_weights=LORA_INIT[method_cfg.init],
        use_rslora=bool(method_cfg.get("use_rslora", False)),
        use_dora=bool(method_cfg.get("use_dora", False)),
        modules_to_save=saved_head(model_cfg),
        bias="none",
    )


def apply_peft_lora(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig, task_type: TaskType) -> Adapted:
    if method_cfg.name == "adalora":
        return apply_adalora(model, method_cfg, model_cfg, task_type)
    if not method_cfg.get("quantization"):
        return Adapted(get_peft_model(model, lora_config(method_cfg, model_cfg, task_type)), is_peft=True)
    peft_model = get_peft_model(prepare(model), lora_config(method_cfg, model_cfg, task_type))
    return Adapted(peft_model, is_peft=True, hooks=qlora_hooks(method_cfg))


def apply_lora(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig) -> Adapted:
    return apply_peft_lora(model, method_cfg, model_cfg, TaskType.SEQ_CLS)
