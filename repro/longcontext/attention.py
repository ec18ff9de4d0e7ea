"""Shifted sparse attention (S²-Attn, LongLoRA Sec. 3.2) through transformers' attention interface.

`S2_ATTN` is registered with `transformers.AttentionInterface` (and the sdpa mask builder with
`AttentionMaskInterface`), so any model whose attention layers dispatch on `config._attn_implementation` (Llama,
SmolLM2, ...) trains with it when that is set to "s2_attn"; no modelling file is copied. Evaluation switches back
to full attention ("sdpa"): `full_attention(model)`.

The pattern, for a sequence of T tokens and groups of G = T * group_size_ratio tokens:
- the sequence is split into T / G groups and every head attends causally within its group only;
- in half of the heads (the second half, as the paper's code) q, k and v are first rolled by -G/2 along the
  sequence, so their groups straddle the boundaries of the others', and the output is rolled back.
The roll is cyclic: in the shifted heads the last group holds the last G/2 tokens followed by the first G/2, so
tokens at the start of the sequence can attend to tokens at its end during training. The paper's implementation
does the same (its Sec. 3.2 "two lines of code"); we keep it for fidelity. With one group (G >= T) there is
nothing to split or shift: it is full causal attention (delegated to sdpa, so the two are equal exactly).

Sequences must be unpadded (the long_context task packs text into full-length chunks): a padding mask would have
to be split and shifted with the groups, which the paper's training never needs; S²-Attn refuses one.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from repro.errors import ConfigError

S2_ATTN = "s2_attn"
FULL_ATTN = "sdpa"
# the config attribute S²-Attn reads its group size from (set by `use_s2_attn`)
RATIO_ATTR = "s2_group_size_ratio"


def group_size(seq_len: int, ratio: float) -> int:
    """Tokens per group: seq_len * ratio, which must divide the sequence into whole groups."""
    size = max(1, int(round(seq_len * ratio)))
    if size >= seq_len:
        return seq_len
    if seq_len % size or size % 2:
        raise ConfigError(f"S²-Attn: a sequence of {seq_len} tokens cannot be split into even groups of {size} "
                          f"(group_size_ratio {ratio}); choose lengths divisible by {round(1 / ratio) * 2}")
    return size


def shifted_heads(num_heads: int) -> slice:
    """The heads whose groups are shifted by half a group: the second half, as the paper's code."""
    return slice(num_heads // 2, num_heads)


def s2_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                 **kwargs) -> tuple[torch.Tensor, None]:
    """The attention interface's signature: q (B, H, T, d), k/v (B, H_kv, T, d); returns (B, T, H, d), None."""
    ratio = getattr(module.config, RATIO_ATTR, None)
    if ratio is None:
        raise ConfigError(f"config._attn_implementation={S2_ATTN} needs config.{RATIO_ATTR} (use use_s2_attn)")
    batch, heads, seq_len, dim = query.shape
    size = group_size(seq_len, ratio)
    if size == seq_len or key.shape[2] != seq_len:  # one group (or decoding with a cache): full causal attention
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    if attention_mask is not None:
        raise ConfigError("S²-Attn trains on unpadded full-length sequences; got a padding mask")
    key = repeat_kv(key, heads // key.shape[1])
    value = repeat_kv(value, heads // value.shape[1])
    half, shift = shifted_heads(heads), size // 2
    q, k, v = (torch.cat([t[:, :half.start], t[:, half].roll(-shift, dims=2)], dim=1) for t in (query, key, value))
    groups = seq_len // size
    out = F.scaled_dot_product_attention(
        q.reshape(batch, heads, groups, size, dim), k.reshape(batch, heads, groups, size, dim),
        v.reshape(batch, heads, groups, size, dim), is_causal=True, scale=scaling,
        dropout_p=dropout if module.training else 0.0).reshape(batch, heads, seq_len, dim)
    out = torch.cat([out[:, :half.start], out[:, half].roll(shift, dims=2)], dim=1)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make "s2_attn" a valid `config._attn_implementation` (idempotent); its masks are built as sdpa's (None for
    an unpadded causal batch)."""
    AttentionInterface.register(S2_ATTN, s2_attention)
    AttentionMaskInterface.register(S2_ATTN, sdpa_mask)


def reference_mask(seq_len: int, size: int, shifted: bool) -> torch.Tensor:
    """Which key positions each query position attends to under S²-Attn, in the sequence's own order (True =
    attend): causal within the group in the (possibly rolled) order. For tests and the documentation of the
    pattern, not used in training."""
    pos = torch.arange(seq_len)
    rolled = (pos - size // 2) % seq_len if shifted else pos  # index of each token after the roll
    same_group = (rolled[:, None] // size) == (rolled[None, :] // size)
    return same_group & (rolled[None, :] <= rolled[:, None])


def _base(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def use_s2_attn(model: nn.Module, ratio: float) -> None:
    """Train with S²-Attn at groups of `ratio` of the sequence."""
    register()
    base = _base(model)
    setattr(base.config, RATIO_ATTR, float(ratio))
    set_attention(model, S2_ATTN)


def set_attention(model: nn.Module, name: str) -> None:
    """Switch every attention layer of the model to the attention function `name`."""
    base = _base(model)
    if hasattr(base, "set_attn_implementation"):
        base.set_attn_implementation(name)
    else:  # pragma: no cover - older transformers
        base.config._attn_implementation = name


def attention_of(model: nn.Module) -> str:
    return _base(model).config._attn_implementation


@contextmanager
def full_attention(model: nn.Module) -> Iterator[None]:
    """Full causal attention inside the block (evaluation), the training attention restored after it."""
    before = attention_of(model)
    if before == FULL_ATTN:
        yield
        return
    set_attention(model, FULL_ATTN)
    try:
        yield
    finally:
        set_attention(model, before)
