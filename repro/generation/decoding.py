"""Beam search over many inputs: batched and one-at-a-time give the same outputs. A decoder's prompts are padded on
the left (generation continues at the last column), an encoder-decoder's encoder inputs on the right; the
encoder-decoder's `generate` returns decoder tokens only, starting with the decoder start token.

Inputs are sorted by length so that a batch holds similar lengths (less padding), then restored to input order.
The settings (beam size, length penalty, no-repeat n-gram size, max new tokens) come from the task config.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase


def generation_kwargs(decode: DictConfig, end_id: int, pad_id: int) -> dict:
    return {"num_beams": decode.num_beams, "length_penalty": decode.length_penalty,
            "no_repeat_ngram_size": decode.no_repeat_ngram_size, "max_new_tokens": decode.max_new_tokens,
            "early_stopping": decode.early_stopping, "do_sample": False, "eos_token_id": end_id,
            "pad_token_id": pad_id, "num_return_sequences": 1}


def is_encoder_decoder(model: nn.Module) -> bool:
    """From the (peft-wrapped) model's own config, so every caller of `beam_search` gets the right layout."""
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def returns_prompt(model: nn.Module) -> bool:
    """HF generate from input_ids returns prompt + new tokens; our prompt-token wrapper returns new ones only."""
    return not hasattr(model, "n_prefix")


@torch.no_grad()
def beam_search(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]], decode: DictConfig,
                end_id: int, device: torch.device, batch_size: int | None = None, desc: str = "decode") -> list[str]:
    """Decode each prompt (a decoder's: token ids ending with the separator; an encoder-decoder's: the encoder
    input); returns the generated texts in input order."""
    model.eval()
    batch_size = batch_size or decode.batch_size
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    kwargs = generation_kwargs(decode, end_id, tokenizer.pad_token_id)
    seq2seq = is_encoder_decoder(model)
    texts: list[str] = [""] * len(prompts)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False, disable=None):
        index = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in index)
        ids = torch.full((len(index), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(index), width), dtype=torch.long)
        for row, i in enumerate(index):  # a decoder's prompts all end at the last column, encoder inputs start at 0
            cols = slice(0, len(prompts[i])) if seq2seq else slice(width - len(prompts[i]), width)
            ids[row, cols], mask[row, cols] = torch.tensor(prompts[i]), 1
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        new = out[:, 1:] if seq2seq else out[:, width:] if returns_prompt(model) else out  # drop start / prompt
        for row, i in enumerate(index):
            tokens = new[row].tolist()
            if end_id in tokens:
                tokens = tokens[:tokens.index(end_id)]
            texts[i] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return texts
