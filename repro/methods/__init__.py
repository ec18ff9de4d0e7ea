"""Adaptation methods, keyed by their config name (`method=<name>`).

Each method takes the pre-trained model and returns an `Adapted` model in which exactly the method's
parameters and the task head require gradients. Methods speak the paper's matrix names (q, k, v, o); the
model config maps them to module names.
"""

from __future__ import annotations

from typing import Callable

from omegaconf import DictConfig
from torch import nn

from repro.config import group_choices, load_group_config
from repro.errors import ConfigError
from repro.methods.adapters import apply_adapters
from repro.methods.base import Adapted
from repro.methods.lora import apply_lora
from repro.methods.longlora import apply_longlora
from repro.methods.peft_generic import apply_peft_classifier
from repro.methods.qlora import check_backend, load_kwargs
from repro.methods.prefix import apply_prefix_embed, apply_prefix_layer
from repro.methods.selective import apply_base, apply_bitfit, apply_ft_top2, apply_full_ft

MethodFn = Callable[[nn.Module, DictConfig, DictConfig], Adapted]

# methods built by repro.methods.lora.apply_peft_lora (a peft task type per task kind)
LORA_FAMILY = ("lora", "rslora", "dora", "adalora", "qlora")


def _peft_family() -> tuple[str, ...]:
    """The methods of conf/method/ that name one of peft's config classes (`peft_config`): one YAML each, built by
    repro.methods.peft_generic.apply_peft (docs/peft_methods.md)."""
    configs = (load_group_config("method", name) for name in group_choices("method"))
    return tuple(cfg.name for cfg in configs if "peft_config" in cfg)


PEFT_FAMILY = _peft_family()

METHODS: dict[str, MethodFn] = {
    "base": apply_base,
    "full_ft": apply_full_ft,
    "ft_top2": apply_ft_top2,
    "bitfit": apply_bitfit,
    "lora": apply_lora,
    # LoRA's successors (peft): options of the same adapter, compared with it in sweeps/lora_variants.yaml
    "rslora": apply_lora,
    "dora": apply_lora,
    "adalora": apply_lora,
    "qlora": apply_lora,
    # LongLoRA (Chen et al. 2023): LoRA on q, k, v, o with embeddings and norms trained; decoders (CAUSAL_LM)
    "longlora": apply_longlora,
    "adapter_h": apply_adapters,
    "adapter_l": apply_adapters,
    "adapter_p": apply_adapters,
    "adapter_d": apply_adapters,
    "prefix_embed": apply_prefix_embed,
    "prefix_layer": apply_prefix_layer,
    # every other tuner peft provides (VeRA, PiSSA, IA3, LoHa, ...): conf/method/<name>.yaml, `method=peft` the base
    **{name: apply_peft_classifier for name in PEFT_FAMILY},
}


def apply_method(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig) -> Adapted:
    try:
        fn = METHODS[method_cfg.name]
    except KeyError:
        raise ConfigError(f"unknown method '{method_cfg.name}'; choose one of: {', '.join(sorted(METHODS))}") from None
    adapted = fn(model, method_cfg, model_cfg)
    adapted.head = tuple(model_cfg.head)
    return adapted


__all__ = ["Adapted", "LORA_FAMILY", "PEFT_FAMILY", "METHODS", "apply_method", "check_backend", "load_kwargs"]
