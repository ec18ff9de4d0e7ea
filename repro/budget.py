"""Equal-budget LoRA ranks (Table 5): given a budget of trainable parameters, the rank for a set of target matrices.

Section 7.1 fixes the budget (18M on GPT-3 175B) and adapts one weight type at r = 8, two at r = 4, all four at
r = 2. With the paper's count |Theta| = 2 x L_hat x d_model x r (L_hat = layers x target matrices per layer) the rank
is the budget divided by 2 x layers x targets x d_model, rounded to the nearest integer: the printed budget is
itself rounded (18M for 18.9M), so flooring would give r = 7 for one weight type. At least rank 1.

Configs use it through OmegaConf resolvers (`${lora_rank_for_budget:...}`, `${lora_params:...}`), registered when
this module is imported: `repro.config` imports it, so every process that imports the runner has them. A sweep that
uses the resolvers also lists `ResolverRegistration` under `hydra.callbacks`: Hydra instantiates callbacks
(importing this module) before any job config is resolved, in the launching process and in every launcher worker.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from repro.errors import ConfigError


def lora_params(n_layers: int, d_model: int, rank: int, n_targets: int) -> int:
    """|Theta| = 2 x L_hat x d_model x r, with L_hat = n_layers x n_targets (Section 5.1)."""
    return 2 * n_layers * n_targets * d_model * rank


def rank_for_budget(budget: float, n_layers: int, d_model: int, n_targets: int) -> int:
    """The rank whose LoRA parameter count on `n_targets` matrices per layer is nearest to `budget` (>= 1)."""
    if budget <= 0 or n_layers <= 0 or d_model <= 0 or n_targets <= 0:
        raise ConfigError(f"budget, layers, d_model and targets must be positive, got "
                          f"{budget}, {n_layers}, {d_model}, {n_targets}")
    return max(1, math.floor(budget / lora_params(n_layers, d_model, 1, n_targets) + 0.5))


def _n_targets(targets: Any) -> int:
    if isinstance(targets, int):
        return targets
    return len(list(targets if isinstance(targets, Sequence) or hasattr(targets, "__iter__") else [targets]))


RESOLVERS = {
    # ${lora_rank_for_budget:<budget>,<n_layers>,<d_model>,<targets list or count>}
    "lora_rank_for_budget": lambda budget, layers, d, targets: rank_for_budget(float(budget), int(layers), int(d),
                                                                               _n_targets(targets)),
    # ${lora_params:<n_layers>,<d_model>,<rank>,<targets list or count>}
    "lora_params": lambda layers, d, rank, targets: lora_params(int(layers), int(d), int(rank), _n_targets(targets)),
}


def register_resolvers() -> None:
    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


class ResolverRegistration(Callback):
    """A Hydra callback whose only job is that instantiating it imports (and so registers) the resolvers."""

    def __init__(self) -> None:
        register_resolvers()

    def __setstate__(self, state: dict) -> None:  # unpickled in a launcher's worker process
        self.__dict__.update(state)
        register_resolvers()


register_resolvers()
