"""Encoder-decoders (T5, BART; model config `lm: seq2seq`) on (source, target) pairs: the source is the
encoder input, the labels are the target tokens then the end token (no prompt in them: the encoder holds it), and
the decoder reads the labels shifted right behind its start token. Same methods as
`repro.generation.causal.CausalFormat`, so the pipeline trains, evaluates and decodes both through one path."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from repro.data.generation import Pair
from repro.errors import ConfigError
from repro.generation.causal import IGNORE, pad_right


def decoder_start_id(model: nn.Module) -> int:
    """The token the decoder starts from, read as `generate` reads it (generation config, then model config), so
    training and decoding agree (T5: pad, BART: eos, the tiny test models: bos)."""
    start = getattr(getattr(model, "generation_config", None), "decoder_start_token_id", None)
    start = start if start is not None else getattr(model.config, "decoder_start_token_id", None)
    if start is None:
        raise ConfigError(f"{type(model).__name__} has no decoder_start_token_id; set it in the model config")
    return int(start)


@dataclass
class Seq2SeqFormat:
    """Pairs to encoder inputs and labels, their batches and loss, and decoding prompts, for one tokenizer."""

    tokenizer: PreTrainedTokenizerBase
    end_id: int
    max_len: int  # the encoder input
    max_target: int  # target tokens, before the end token
    decoder_start: int

    def prompt(self, source: str) -> list[int]:
        """The encoder input with the tokenizer's own special tokens (T5: `</s>` after it, BART: `<s>..</s>`)."""
        return self.tokenizer.encode(source, truncation=True, max_length=self.max_len)

    def encode(self, pair: Pair) -> dict[str, list[int]]:
        target = self.tokenizer.encode(pair.target, add_special_tokens=False)[:self.max_target]
        return {"input_ids": self.prompt(pair.source), "labels": target + [self.end_id]}

    def collate(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Right padding; labels padded with IGNORE; decoder input = start token + labels[:-1]."""
        pad = self.tokenizer.pad_token_id
        ids, mask = pad_right([f["input_ids"] for f in features], pad)
        labels, decoder_mask = pad_right([f["labels"] for f in features], IGNORE)
        decoder_ids, _ = pad_right([[self.decoder_start] + f["labels"][:-1] for f in features], pad)
        return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder_ids,
                "decoder_attention_mask": decoder_mask, "labels": labels}

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], label_smoothing: float) -> torch.Tensor:
        """Mean cross-entropy over the label tokens, with label smoothing (position t predicts labels[t]: the shift
        is in the decoder input). The model gets no labels, so it computes no loss of its own."""
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=batch["decoder_input_ids"],
                       decoder_attention_mask=batch["decoder_attention_mask"]).logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch["labels"].reshape(-1),
                               ignore_index=IGNORE, label_smoothing=label_smoothing)

    def n_targets(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens the loss averages over, to weight batches in the eval loss."""
        return int((batch["labels"] != IGNORE).sum())
