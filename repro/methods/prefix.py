"""PreEmbed and PreLayer (Section 5.1 of the paper).

PreEmbed inserts l_p prefix and l_i infix tokens whose word embeddings are trainable: |Theta| = d (l_p + l_i).
PreLayer makes the activations of those tokens trainable at the input of every Transformer layer (the first
one being the embedding output): |Theta| = L d (l_p + l_i).

The prefix goes right after the first token (the [CLS]/<s> the head reads), the infix right before each
sequence's last token (the final separator), so the head's position is untouched. `impl=peft` uses peft's
prompt tuning (PreEmbed) or prefix tuning (Li & Liang key/value prefixes, 2 L d l_p) instead; peft has no infix.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from repro.errors import ConfigError
from repro.methods.base import Adapted, train_only


class PromptTokens(nn.Module):
    """Wraps a sequence classifier; forward takes the usual batch and inserts the trainable tokens."""

    def __init__(self, model: nn.Module, model_cfg: DictConfig, n_prefix: int, n_infix: int, per_layer: bool):
        super().__init__()
        self.base = model
        self.n_prefix, self.n_infix = n_prefix, n_infix
        n_sets = model_cfg.n_layers if per_layer else 1
        self.prompts = nn.Parameter(torch.randn(n_sets, n_prefix + n_infix, model_cfg.d_model) * 0.02)
        self._word_embeddings = [model.get_submodule(model_cfg.word_embeddings)]  # not a submodule of ours
        self._slots: tuple[torch.Tensor, torch.Tensor] | None = None
        if per_layer:
            for index, layer in enumerate(model.get_submodule(model_cfg.layers)):
                layer.register_forward_pre_hook(self._layer_hook(index), with_kwargs=True)

    def _fill(self, hidden: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        is_slot, slot = self._slots
        return torch.where(is_slot[..., None], prompt[slot.clamp(min=0)], hidden)

    def _layer_hook(self, index: int):
        def hook(module, args, kwargs):
            if self._slots is None:
                return None
            if args:
                return (self._fill(args[0], self.prompts[index]), *args[1:]), kwargs
            kwargs["hidden_states"] = self._fill(kwargs["hidden_states"], self.prompts[index])
            return args, kwargs

        return hook

    def _insert(self, input_ids, attention_mask):
        """New positions [first] prefix... tokens[1:-1] infix... [last] padding: the slot mask, each slot's
        vector index (-1 elsewhere), and a function placing a (batch, length, ...) tensor into that layout."""
        batch, length = input_ids.shape
        n = self.n_prefix + self.n_infix
        lengths = attention_mask.sum(1, keepdim=True)
        pos = torch.arange(length, device=input_ids.device).expand(batch, length)
        dest = torch.where(pos == 0, pos, torch.where(pos < lengths - 1, pos + self.n_prefix, pos + n))
        is_slot = torch.ones(batch, length + n, dtype=torch.bool, device=input_ids.device)
        is_slot.scatter_(1, dest, False)
        slot = is_slot.long().cumsum(1) - 1
        slot = torch.where(is_slot, slot, torch.full_like(slot, -1))

        def scatter(x: torch.Tensor, fill: torch.Tensor | int) -> torch.Tensor:
            shape = (batch, length + n, *x.shape[2:])
            out = torch.zeros(shape, dtype=x.dtype, device=x.device)
            index = dest if x.dim() == 2 else dest[..., None].expand(-1, -1, x.shape[-1])
            out.scatter_(1, index, x)
            return torch.where(is_slot if x.dim() == 2 else is_slot[..., None], fill, out)

        return is_slot, slot, scatter

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None, **kwargs):
        is_slot, slot, scatter = self._insert(input_ids, attention_mask)
        self._slots = (is_slot, slot)
        embeds = scatter(self._word_embeddings[0](input_ids), 0.0)
        if self.prompts.shape[0] == 1:  # PreEmbed: the slots' word embeddings are the trainable vectors
            embeds = self._fill(embeds, self.prompts[0])
        inputs = {"inputs_embeds": embeds, "attention_mask": scatter(attention_mask, 1), "labels": labels}
        if token_type_ids is not None:
            last_type = token_type_ids.gather(1, attention_mask.sum(1, keepdim=True) - 1)
            inputs["token_type_ids"] = scatter(token_type_ids, last_type.expand(-1, is_slot.shape[1]))
        try:
            return self.base(**inputs, **kwargs)
        finally:
            self._slots = None


def _apply(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig, per_layer: bool) -> Adapted:
    if method_cfg.get("init_text"):
        raise ConfigError("method.init_text (a prefix initialised from real words) is implemented for decoders only")
    if method_cfg.impl == "peft":
        from peft import PrefixTuningConfig, PromptTuningConfig, TaskType, get_peft_model

        if method_cfg.infix_length:
            raise ConfigError("method.infix_length > 0 needs impl=paper (peft has no infix tokens)")
        config_cls = PrefixTuningConfig if per_layer else PromptTuningConfig
        config = config_cls(task_type=TaskType.SEQ_CLS, num_virtual_tokens=method_cfg.prefix_length,
                            modules_to_save=[h.split(".")[-1] for h in model_cfg.head])
        return Adapted(get_peft_model(model, config), is_peft=True,
                       reserved_tokens=0 if per_layer else method_cfg.prefix_length)
    if method_cfg.impl != "paper":
        raise ConfigError(f"method.impl must be paper or peft, got {method_cfg.impl!r}")
    wrapped = PromptTokens(model, model_cfg, method_cfg.prefix_length, method_cfg.infix_length, per_layer)
    train_only(wrapped, lambda name, p: name == "prompts", list(model_cfg.head))
    return Adapted(wrapped, reserved_tokens=method_cfg.prefix_length + method_cfg.infix_length)


def apply_prefix_embed(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig) -> Adapted:
    return _apply(model, method_cfg, model_cfg, per_layer=False)


def apply_prefix_layer(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig) -> Adapted:
    return _apply(model, method_cfg, model_cfg, per_layer=True)
