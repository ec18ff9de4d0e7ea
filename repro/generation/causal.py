"""Decoder-only LMs on (source, target) pairs, as the paper's GPT-2 code: one sequence `source, separator,
" " + target, end`, the loss on the target tokens only (next-token shift), decoding prompted by `source, separator`.
`CausalFormat` binds these to one tokenizer and length budget; `repro.generation.seq2seq.Seq2SeqFormat` is its
encoder-decoder counterpart with the same methods, so the pipeline has one path for both."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from repro.data.generation import Pair

IGNORE = -100


def encode_prompt(tokenizer: PreTrainedTokenizerBase, source: str, max_source: int) -> list[int]:
    """Source tokens then the separator (the eos token: <|endoftext|> for GPT-2, as the paper's code)."""
    ids = tokenizer.encode(source, add_special_tokens=False)[:max_source]
    return ids + [tokenizer.eos_token_id]


def encode_pair(tokenizer: PreTrainedTokenizerBase, pair: Pair, end_id: int, max_len: int,
                max_target: int) -> dict[str, list[int]]:
    """input = source, separator, " " + target, end; labels only on target and end tokens."""
    target = tokenizer.encode(" " + pair.target, add_special_tokens=False)[:max_target] + [end_id]
    prompt = encode_prompt(tokenizer, pair.source, max(max_len - len(target) - 1, 1))
    return {"input_ids": prompt + target, "labels": [IGNORE] * len(prompt) + target}


def pad_right(rows: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows padded on the right with `value`, and the mask of real positions."""
    ids = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r, dtype=torch.long), 1
    return ids, mask


def collate(features: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right padding for training (positions start at 0 in every row)."""
    ids, mask = pad_right([f["input_ids"] for f in features], pad_id)
    labels, _ = pad_right([f["labels"] for f in features], IGNORE)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def target_loss(model: nn.Module, batch: dict[str, torch.Tensor], label_smoothing: float) -> torch.Tensor:
    """Mean cross-entropy over target tokens (next-token shift), with label smoothing."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch["labels"][:, 1:].reshape(-1),
                           ignore_index=IGNORE, label_smoothing=label_smoothing)


@dataclass
class CausalFormat:
    """The functions above bound to one tokenizer and length budget."""

    tokenizer: PreTrainedTokenizerBase
    end_id: int
    max_len: int  # the whole sequence: prompt + target + end
    max_target: int

    def prompt(self, source: str) -> list[int]:
        """What decoding starts from; the source keeps room for the target (the same cut as in training)."""
        return encode_prompt(self.tokenizer, source, max(self.max_len - self.max_target - 1, 1))

    def encode(self, pair: Pair) -> dict[str, list[int]]:
        return encode_pair(self.tokenizer, pair, self.end_id, self.max_len, self.max_target)

    def collate(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        return collate(features, self.tokenizer.pad_token_id)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], label_smoothing: float) -> torch.Tensor:
        return target_loss(model, batch, label_smoothing)

    def n_targets(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens the loss averages over (labels shifted by one), to weight batches in the eval loss."""
        return int((batch["labels"][:, 1:] != IGNORE).sum())
