"""RoPE position interpolation (Chen et al. 2023, "Extending Context Window of Large Language Models via
Positional Interpolation"), as LongLoRA uses it: to train and evaluate at `target` tokens a model pre-trained at
`original` tokens, positions are divided by s = ceil(target / original) (the LongLoRA code's rounding), so that
every position falls inside the range the model was trained on. In transformers this is the "linear" RoPE type;
transformers 5 reads it from `config.rope_parameters` (formerly `rope_scaling`)."""

from __future__ import annotations

import math

from torch import nn

from repro.errors import ConfigError


def interpolation_factor(target: int, original: int) -> float:
    """s = ceil(target / original) when extending (1.0, no interpolation, when target fits the original)."""
    if target <= 0 or original <= 0:
        raise ConfigError(f"context lengths must be positive, got target {target}, original {original}")
    return float(math.ceil(target / original)) if target > original else 1.0


def original_context(model: nn.Module, override: int | None = None) -> int:
    """The context the model was pre-trained at: `max_position_embeddings`, unless the model config states another
    (`model.original_context`, e.g. a model whose config advertises more than it was trained on)."""
    return int(override or model.config.max_position_embeddings)


def interpolate_positions(model: nn.Module, factor: float, rotary_path: str) -> None:
    """Linear RoPE scaling by `factor` on the model's config, and the rotary embedding module at `rotary_path`
    rebuilt from it (its inverse frequencies are divided by `factor`: position p is encoded as p / factor)."""
    if factor == 1.0:
        return
    config = model.config
    params = dict(getattr(config, "rope_parameters", None) or {})
    if "rope_theta" not in params:
        params["rope_theta"] = getattr(config, "rope_theta", 10000.0)
    if params.get("rope_type", "default") not in ("default", "linear"):
        raise ConfigError(f"position interpolation expects plain RoPE, the model has {params['rope_type']!r}")
    config.rope_parameters = {**params, "rope_type": "linear", "factor": float(factor)}
    try:
        rotary = model.get_submodule(rotary_path)
    except AttributeError:
        raise ConfigError(f"model has no rotary embedding at {rotary_path!r}; check model.rotary_embedding") from None
    rebuilt = type(rotary)(config=config).to(rotary.inv_freq.device)
    model.set_submodule(rotary_path, rebuilt)
