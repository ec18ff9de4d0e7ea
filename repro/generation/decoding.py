"""Beam search over many inputs: batched and one-at-a-time give the same outputs. A decoder's prompts are padded on
the left (generation continues at the last column), an encoder-decoder's encoder inputs on the right; the
encoder-decoder's `generate` returns decoder tokens only, starting with the decoder start token.

Inputs are sorted by length so that a batch holds similar lengths (less padding), then restored to input order.
The settings (beam size, length penalty, no-repeat n-gram size, max new tokens) come from the task config.

A decoder's prompt is encoded once per input, not once per beam: `generate` copies each prompt `num_beams` times
before its first forward pass, so on E2E-length prompts most of beam search's arithmetic went into encoding the
same prompt ten times. `prefill_once` runs the prompt (all but its last token) through the model for the inputs
alone and hands `generate` that cache repeated for the beams; `generate` then starts at the last prompt token.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn
from transformers import PreTrainedTokenizerBase

from repro.runlog import with_progress


def generation_kwargs(decode: DictConfig, end_id: int, pad_id: int) -> dict:
    return {"num_beams": decode.num_beams, "length_penalty": decode.length_penalty,
            "no_repeat_ngram_size": decode.no_repeat_ngram_size, "max_new_tokens": decode.max_new_tokens,
            "early_stopping": decode.early_stopping, "do_sample": False, "eos_token_id": end_id,
            "pad_token_id": pad_id, "num_return_sequences": 1}


def is_encoder_decoder(model: nn.Module) -> bool:
    """From the (peft-wrapped) model's own config, so every caller of `beam_search` gets the right layout."""
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def prompt_cache(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, num_beams: int):
    """The keys and values of each prompt but its last token, computed once per input and repeated for its beams,
    with the positions `generate` gives left-padded prompts."""
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], use_cache=True,
                logits_to_keep=1)
    cache = out.past_key_values
    cache.batch_repeat_interleave(num_beams)
    return cache


def returns_prompt(model: nn.Module) -> bool:
    """HF generate from input_ids returns prompt + new tokens; our prompt-token wrapper returns new ones only."""
    return not hasattr(model, "n_prefix")


@torch.no_grad()
def beam_search(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]], decode: DictConfig,
                end_id: int, device: torch.device, batch_size: int | None = None, desc: str = "decode",
                prefill_once: bool = True) -> list[str]:
    """Decode each prompt (a decoder's: token ids ending with the separator; an encoder-decoder's: the encoder
    input); returns the generated texts in input order. `prefill_once`: a decoder's prompt is encoded once for all
    its beams (module docstring); an encoder-decoder's encoder already runs once per input, and the prompt-token
    wrapper feeds its prefix itself."""
    model.eval()
    batch_size = batch_size or decode.batch_size
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    kwargs = generation_kwargs(decode, end_id, tokenizer.pad_token_id)
    seq2seq = is_encoder_decoder(model)
    texts: list[str] = [""] * len(prompts)
    for start in with_progress(range(0, len(order), batch_size), desc):
        index = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in index)
        ids = torch.full((len(index), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(index), width), dtype=torch.long)
        for row, i in enumerate(index):  # a decoder's prompts all end at the last column, encoder inputs start at 0
            cols = slice(0, len(prompts[i])) if seq2seq else slice(width - len(prompts[i]), width)
            ids[row, cols], mask[row, cols] = torch.tensor(prompts[i]), 1
        ids, mask = ids.to(device), mask.to(device)
        cached = {}
        if prefill_once and not seq2seq and returns_prompt(model) and width > 1:
            cached["past_key_values"] = prompt_cache(model, ids, mask, decode.num_beams)
        out = model.generate(input_ids=ids, attention_mask=mask, **kwargs, **cached)
        new = out[:, 1:] if seq2seq else out[:, width:] if returns_prompt(model) else out  # drop start / prompt
        for row, i in enumerate(index):
            tokens = new[row].tolist()
            if end_id in tokens:
                tokens = tokens[:tokens.index(end_id)]
            texts[i] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return texts
