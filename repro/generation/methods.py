"""The method registry on generation LMs: decoders, and encoder-decoders (`lm: seq2seq`).

Most methods of `repro.methods.METHODS` work on these models unchanged (full_ft, ft_top2, bitfit, adapters: they
only freeze parameters or wrap the modules named by the model config; on an encoder-decoder `layers` names the
decoder's). Three need a generation variant:
- the LoRA family and the other peft tuners (PEFT_FAMILY): peft's task type must be CAUSAL_LM or SEQ_2_SEQ_LM (the
  shared apply_lora and apply_peft_classifier use SEQ_CLS), and on GPT-2 the fused c_attn is split first so that q
  and v each get their own adapter (gpt2_qkv.py);
- prefix_embed / prefix_layer (impl=paper): the shared PromptTokens places the prefix after an encoder's
  [CLS]; a decoder has no such token, so the l_p trainable tokens go first (DecoderPromptTokens), and
  generation must feed them too. Decoder-only: an encoder-decoder gets a ConfigError.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from peft import TaskType
from torch import nn
from transformers import PreTrainedTokenizerBase

from repro.errors import ConfigError
from repro.generation.gpt2_qkv import split_fused_qkv
from repro.generation.models import is_seq2seq
from repro.methods import LORA_FAMILY, PEFT_FAMILY, Adapted, apply_method
from repro.methods.base import train_only
from repro.methods.lora import apply_peft_lora
from repro.methods.peft_generic import apply_peft


class DecoderPromptTokens(nn.Module):
    """l_p trainable tokens before every input of a causal LM (PreEmbed: their embeddings; PreLayer: their
    activations at the input of every layer, the first being the embedding output). `forward` returns the
    base model's output for the real positions only; `generate` feeds the prefix during the first step."""

    def __init__(self, model: nn.Module, model_cfg: DictConfig, n_prefix: int, per_layer: bool):
        super().__init__()
        self.base = model
        self.n_prefix = n_prefix
        n_sets = model_cfg.n_layers if per_layer else 1
        self.prompts = nn.Parameter(torch.randn(n_sets, n_prefix, model_cfg.d_model) * 0.02)
        self._word_embeddings = [model.get_submodule(model_cfg.word_embeddings)]  # not a submodule of ours
        self._prefill = False
        if per_layer:
            for index, layer in enumerate(model.get_submodule(model_cfg.layers)):
                layer.register_forward_pre_hook(self._layer_hook(index), with_kwargs=True)
        model.register_forward_hook(self._after_forward)

    def _after_forward(self, module, args, output):
        self._prefill = False  # only the first forward of a generate call sees the prefix positions

    def _layer_hook(self, index: int):
        def replace(hidden: torch.Tensor) -> torch.Tensor:
            prompt = self.prompts[index].to(hidden.dtype).expand(hidden.shape[0], -1, -1)
            return torch.cat([prompt, hidden[:, self.n_prefix:]], dim=1)

        def hook(module, args, kwargs):
            if not self._prefill:
                return None
            if args:
                return (replace(args[0]), *args[1:]), kwargs
            kwargs["hidden_states"] = replace(kwargs["hidden_states"])
            return args, kwargs

        return hook

    def _inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        embeds = self._word_embeddings[0](input_ids)
        prefix = self.prompts[0].to(embeds.dtype).expand(len(input_ids), -1, -1)
        ones = attention_mask.new_ones(len(input_ids), self.n_prefix)
        return {"inputs_embeds": torch.cat([prefix, embeds], dim=1),
                "attention_mask": torch.cat([ones, attention_mask], dim=1)}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs):
        self._prefill = True
        try:
            out = self.base(**self._inputs(input_ids, attention_mask), **kwargs)
        finally:
            self._prefill = False
        out.logits = out.logits[:, self.n_prefix:]
        return out

    @torch.no_grad()
    def init_from_activations(self, ids: list[int]) -> None:
        """Start from the model's own activations of real words (Li & Liang 2021: random prefixes train unstably;
        on Llama-style models a small random first position also removes the attention sink the model relies on).
        The words are repeated if shorter than the prefix."""
        if not ids:
            raise ConfigError("method.init_text encodes to no tokens")
        ids = (ids * -(-self.n_prefix // len(ids)))[:self.n_prefix]
        input_ids = torch.tensor([ids], device=self.prompts.device)
        if len(self.prompts) == 1:  # PreEmbed: word embeddings (inputs_embeds, before any position embedding)
            hidden = [self._word_embeddings[0](input_ids)]
        else:  # PreLayer: hidden_states[l] is the input of layer l
            hidden = self.base(input_ids=input_ids, output_hidden_states=True).hidden_states
        for index in range(len(self.prompts)):
            self.prompts[index].copy_(hidden[index][0].to(self.prompts.dtype))

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> torch.Tensor:
        """New tokens only (HF generate from inputs_embeds returns no prompt tokens)."""
        self._prefill = True
        try:
            return self.base.generate(**self._inputs(input_ids, attention_mask), **kwargs)
        finally:
            self._prefill = False


def _apply_prompt_tokens(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig, per_layer: bool,
                         tokenizer: PreTrainedTokenizerBase | None) -> Adapted:
    if method_cfg.impl != "paper":
        raise ConfigError(f"method.impl={method_cfg.impl} is not wired for decoders; use impl=paper")
    if method_cfg.infix_length:
        raise ConfigError("method.infix_length > 0 is not implemented for decoders (prefix tokens only)")
    wrapped = DecoderPromptTokens(model, model_cfg, method_cfg.prefix_length, per_layer)
    if method_cfg.get("init_text") and tokenizer is not None:
        wrapped.init_from_activations(tokenizer.encode(method_cfg.init_text, add_special_tokens=False))
    train_only(wrapped, lambda name, p: name == "prompts", [])
    return Adapted(wrapped, reserved_tokens=method_cfg.prefix_length)


def apply_decoder_method(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig,
                         tokenizer: PreTrainedTokenizerBase | None = None) -> Adapted:
    """`repro.methods.apply_method` for generation LMs (see the module docstring for what differs). The tokenizer
    is needed only to initialise a prefix from real words (`method.init_text`); without it the prefix is random."""
    seq2seq = is_seq2seq(model_cfg)
    if method_cfg.name in LORA_FAMILY + PEFT_FAMILY:
        if model_cfg.get("fused_qkv"):
            split_fused_qkv(model, model_cfg)
        apply = apply_peft_lora if method_cfg.name in LORA_FAMILY else apply_peft
        return apply(model, method_cfg, model_cfg, TaskType.SEQ_2_SEQ_LM if seq2seq else TaskType.CAUSAL_LM)
    if method_cfg.name in ("prefix_embed", "prefix_layer"):
        if seq2seq:
            raise ConfigError(f"method {method_cfg.name} is implemented for decoder-only models; {model_cfg.name} "
                              f"is an encoder-decoder")
        return _apply_prompt_tokens(model, method_cfg, model_cfg, method_cfg.name == "prefix_layer", tokenizer)
    return apply_method(model, method_cfg, model_cfg)
