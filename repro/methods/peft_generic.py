"""Any tuner peft provides, from one YAML under conf/method/ (`defaults: [peft, _self_]`):

    name: vera
    peft_config: VeraConfig          # one of peft's config classes
    options: {r: 256, d_initial: 0.1}  # its arguments, passed as they are (they win over what is derived below)
    targets: [q, v]                  # the paper's matrix names -> `target_modules`, as for LoRA; absent: peft's own
                                     # default for the architecture (or `options.target_modules`)

Derived for every tuner that has the field: the task type (SEQ_CLS, CAUSAL_LM or SEQ_2_SEQ_LM, by the task kind)
and the task head as `modules_to_save`, so the head trains under every method and is counted apart. A prompt
tuner's virtual tokens are reserved in the input (`Adapted.reserved_tokens`). `lr_ratio_b` (LoRA+, Hayou et al.
2024) trains LoRA's B matrices at that multiple of the learning rate (their own optimizer groups, through the
method's `make_optimizer` hook). A tuner that cannot adapt the model (an unknown class or option, a module type it
does not support, no module matched) is a ConfigError of one line.
"""

from __future__ import annotations

import dataclasses

import peft
import torch
from omegaconf import DictConfig, OmegaConf
from peft import PeftConfig, PeftType, PromptLearningConfig, TaskType, get_peft_model
from torch import nn

from repro.errors import ConfigError
from repro.methods.base import Adapted, TrainingHooks, adamw, is_head, saved_head, target_modules

B_MATRICES = ("lora_B.", "lora_embedding_B.")  # what LoRA+'s `lr_ratio_b` speeds up (peft's parameter names)


def first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def peft_config(method_cfg: DictConfig, model_cfg: DictConfig, task_type: TaskType) -> PeftConfig:
    """`method.peft_config` built from `method.options`, the mapped `targets`, the task type and the head."""
    name, cls = method_cfg.name, getattr(peft, str(method_cfg.peft_config), None)
    if not (isinstance(cls, type) and issubclass(cls, PeftConfig)) or cls is PeftConfig:
        raise ConfigError(f"method {name}: peft {peft.__version__} has no config class {method_cfg.peft_config!r} "
                          f"(e.g. VeraConfig, LoHaConfig, IA3Config)")
    options = OmegaConf.to_container(method_cfg.options, resolve=True) if method_cfg.get("options") else {}
    fields = {f.name for f in dataclasses.fields(cls)}
    if unknown := sorted(set(options) - fields):
        raise ConfigError(f"method {name}: {cls.__name__} has no option {', '.join(unknown)}")
    derived = {"task_type": task_type}
    if "modules_to_save" in fields:
        derived["modules_to_save"] = saved_head(model_cfg)
    if "targets" in method_cfg and "target_modules" in fields:
        derived["target_modules"] = target_modules(method_cfg, model_cfg)
    try:
        return cls(**{**derived, **options})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"method {name}: {cls.__name__}: {first_line(exc)}") from None


def lr_ratio_optimizer(model: nn.Module, ratio: float, name: str):
    """LoRA+: the optimizer over the loop's groups, each split so that LoRA's B matrices get `ratio` x the rate."""
    b_ids = {id(p) for n, p in model.named_parameters() if p.requires_grad and any(b in n for b in B_MATRICES)}
    if not b_ids:
        raise ConfigError(f"method {name}: lr_ratio_b scales LoRA's B matrices, and this method has none")

    def make_optimizer(groups: list[dict], lr: float) -> torch.optim.Optimizer:
        split = []
        for group in groups:
            b = [p for p in group["params"] if id(p) in b_ids]
            split += [{**group, "params": [p for p in group["params"] if id(p) not in b_ids]},
                      {**group, "params": b, "lr": lr * ratio}]
        return adamw([g for g in split if g["params"]], lr)

    return make_optimizer


def apply_peft(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig, task_type: TaskType) -> Adapted:
    config = peft_config(method_cfg, model_cfg, task_type)
    try:
        peft_model = get_peft_model(model, config)
    except (TypeError, ValueError, NotImplementedError, KeyError) as exc:
        raise ConfigError(f"method {method_cfg.name} ({type(config).__name__}) cannot adapt model {model_cfg.name}: "
                          f"{first_line(exc)}") from None
    named = list(peft_model.named_parameters())
    for head in model_cfg.head:  # every head module the model has must train (peft's modules_to_save copy)
        params = [p for n, p in named if is_head(n, [head])]
        if params and not any(p.requires_grad for p in params):
            raise ConfigError(f"method {method_cfg.name}: {type(config).__name__} leaves the task head {head} frozen")
    hooks = TrainingHooks()
    if method_cfg.get("lr_ratio_b"):
        hooks.make_optimizer = lr_ratio_optimizer(peft_model, method_cfg.lr_ratio_b, method_cfg.name)
    prompt = isinstance(config, PromptLearningConfig) and config.peft_type != PeftType.PREFIX_TUNING
    return Adapted(peft_model, is_peft=True, reserved_tokens=config.num_virtual_tokens if prompt else 0, hooks=hooks)


def apply_peft_classifier(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig) -> Adapted:
    return apply_peft(model, method_cfg, model_cfg, TaskType.SEQ_CLS)
