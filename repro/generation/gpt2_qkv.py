"""The paper's LoRA on GPT-2: W_q and W_v adapted inside the fused `c_attn`, each with its own A and B.

GPT-2 computes q, k, v with one Conv1D (`c_attn`, weight d x 3d). peft targeting `c_attn` would add one A
(r x d) and one B (3d x r) shared by q, k and v, which is not the paper's model (loralib's MergedLinear with
enable_lora=[True, False, True] keeps a separate A and B for q and for v). We split `c_attn` into three
nn.Linear modules `c_attn.q`, `c_attn.k`, `c_attn.v` (same function, same parameters), let peft adapt `q` and
`v` separately, and fuse back into a Conv1D after merging, so the saved merged model is plain GPT-2.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn
from transformers.pytorch_utils import Conv1D

from repro.errors import ConfigError


class SplitQKV(nn.Module):
    """`x -> cat(q(x), k(x), v(x))`, numerically the fused Conv1D it was built from."""

    def __init__(self, fused: Conv1D):
        super().__init__()
        d_in, d_out3 = fused.weight.shape
        d = d_out3 // 3
        self.q, self.k, self.v = (nn.Linear(d_in, d) for _ in range(3))
        with torch.no_grad():
            for i, linear in enumerate((self.q, self.k, self.v)):
                linear.weight.copy_(fused.weight[:, i * d:(i + 1) * d].T)
                linear.bias.copy_(fused.bias[i * d:(i + 1) * d])
        for p in self.parameters():
            p.requires_grad_(fused.weight.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)

    def fused(self) -> Conv1D:
        """The equivalent Conv1D (needs plain Linear q/k/v, i.e. after peft's merge_and_unload)."""
        parts = (self.q, self.k, self.v)
        if not all(type(m) is nn.Linear for m in parts):
            raise ValueError("merge the LoRA weights (merge_and_unload) before fusing c_attn")
        conv = Conv1D(3 * self.q.out_features, self.q.in_features)
        with torch.no_grad():
            conv.weight.copy_(torch.cat([m.weight.T for m in parts], dim=1))
            conv.bias.copy_(torch.cat([m.bias for m in parts]))
        return conv


def _sites(model: nn.Module, model_cfg: DictConfig):
    parent_path, _, child = model_cfg.fused_qkv.rpartition(".")
    for layer in model.get_submodule(model_cfg.layers):
        yield (layer.get_submodule(parent_path) if parent_path else layer), child


def split_fused_qkv(model: nn.Module, model_cfg: DictConfig) -> None:
    """Replace every layer's fused q/k/v Conv1D by a SplitQKV (in place)."""
    for parent, child in _sites(model, model_cfg):
        module = getattr(parent, child)
        if not isinstance(module, Conv1D):
            raise ConfigError(f"{model_cfg.fused_qkv} is {type(module).__name__}, not GPT-2's fused Conv1D")
        setattr(parent, child, SplitQKV(module))


def fuse_split_qkv(model: nn.Module, model_cfg: DictConfig) -> None:
    """Inverse of split_fused_qkv, after the LoRA weights were merged."""
    for parent, child in _sites(model, model_cfg):
        setattr(parent, child, getattr(parent, child).fused())
