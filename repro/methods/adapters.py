"""Bottleneck adapters (Adapter^H, Adapter^L, Adapter^P, Adapter^D): our own implementation, since peft has
none and the `adapters` package pins transformers 4.x.

An adapter maps h -> h + W_up act(W_down LN?(h)). It is placed right after a sublayer's output projection
(`adapter_sites` of the model config), before that sublayer's residual connection, as in Houlsby et al.
Trainable parameters per adapter: 2 d r + r + d, plus 2 d for its LayerNorm when it has one (the paper's
Section 5.1 formula).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from repro.methods.base import Adapted, make_activation, train_only


class BottleneckAdapter(nn.Module):
    def __init__(self, d_model: int, bottleneck: int, layer_norm: bool = False, activation: str = "relu"):
        super().__init__()
        self.layer_norm = nn.LayerNorm(d_model) if layer_norm else None
        self.down = nn.Linear(d_model, bottleneck)
        self.act = make_activation(activation)
        self.up = nn.Linear(bottleneck, d_model)
        # near-identity at the start: the up-projection is zero, so the pre-trained function is unchanged
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(h) if self.layer_norm is not None else h
        return h + self.up(self.act(self.down(x)))


class WithAdapter(nn.Module):
    """A sublayer's output projection followed by an adapter."""

    def __init__(self, base: nn.Module, adapter: BottleneckAdapter):
        super().__init__()
        self.base = base
        self.adapter = adapter

    def forward(self, *args, **kwargs):
        return self.adapter(self.base(*args, **kwargs))


def insert_adapters(model: nn.Module, model_cfg: DictConfig, sites: list[str], bottleneck: int,
                    layer_norm: bool = False, drop_lowest_layers: int = 0, activation: str = "relu") -> list[str]:
    """Wrap each site's module in every layer from `drop_lowest_layers` up; returns the adapter module names."""
    names = []
    for index, layer in enumerate(model.get_submodule(model_cfg.layers)):
        if index < drop_lowest_layers:
            continue
        for site in sites:
            path = model_cfg.adapter_sites[site]
            parent_path, _, child = path.rpartition(".")
            parent = layer.get_submodule(parent_path) if parent_path else layer
            base = getattr(parent, child)
            # on the wrapped module's device: a model already on a GPU (the latency benchmark) stays on one device
            device = next(base.parameters()).device
            adapter = BottleneckAdapter(model_cfg.d_model, bottleneck, layer_norm, activation).to(device)
            setattr(parent, child, WithAdapter(base, adapter))
            names.append(f"{model_cfg.layers}.{index}.{path}.adapter")
    return names


def apply_adapters(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig) -> Adapted:
    insert_adapters(model, model_cfg, list(method_cfg.sites), method_cfg.bottleneck, method_cfg.layer_norm,
                    method_cfg.drop_lowest_layers, method_cfg.activation)
    train_only(model, lambda name, p: ".adapter." in name, list(model_cfg.head))
    return Adapted(model)
