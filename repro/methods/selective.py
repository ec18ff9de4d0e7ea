"""Methods that train a subset of the existing weights: full fine-tuning, FT^Top2, BitFit; and `base`, which trains
none (the pre-trained model evaluated as it is: LongLoRA's "base model" rows)."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from repro.methods.base import Adapted, train_only


def apply_full_ft(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig) -> Adapted:
    train_only(model, lambda name, p: True, list(model_cfg.head))
    return Adapted(model)


def apply_ft_top2(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig) -> Adapted:
    """Only the last `top_layers` Transformer layers (and the head) train (Li & Liang 2021)."""
    first = model_cfg.n_layers - method_cfg.top_layers
    top = tuple(f"{model_cfg.layers}.{i}." for i in range(first, model_cfg.n_layers))
    train_only(model, lambda name, p: name.startswith(top), list(model_cfg.head))
    return Adapted(model)


def apply_bitfit(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig) -> Adapted:
    """Every bias vector trains, LayerNorm biases included (Zaken et al. 2021)."""
    train_only(model, lambda name, p: name.endswith(".bias"), list(model_cfg.head))
    return Adapted(model)


def apply_base(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig) -> Adapted:
    """Nothing trains: the task kind evaluates the pre-trained model only (`kinds` in conf/method/base.yaml)."""
    train_only(model, lambda name, p: False, [])
    return Adapted(model)
