"""LongLoRA's adapter (Chen et al. 2023, Sec. 3.3 "Improved LoRA for long context"): peft LoRA on the attention
matrices (q, k, v, o in the paper) with the embedding and normalisation layers trained fully. The paper finds that
plain LoRA does not close the gap to full fine-tuning when extending the context, and that opening these layers,
a small share of the parameters, does. The released code (fine-tune.py) marks every parameter whose name contains
"embed" or "norm" trainable after get_peft_model; here the model config names them (`word_embeddings`, `norms`),
and `method.train_embeddings` / `method.train_norms` switch each on for the paper's ablation (LoRA + Norm,
LoRA + Embed).

With tied input and output embeddings (SmolLM2, tiny-llama) the trained embedding is also the output layer; Llama-2
has an untied lm_head, which stays frozen as in the paper's code.

Weights are saved as the trainable tensors (LoRA A/B, embeddings, norms) in safetensors, not peft's adapter
format, which would leave the embeddings and norms out. S²-Attn is a training-time attention pattern, not a
parameter: the long_context task kind switches it on from `method.s2_attn` (repro/longcontext/attention.py).
"""

from __future__ import annotations

from omegaconf import DictConfig
from peft import TaskType, get_peft_model
from torch import nn

from repro.errors import ConfigError
from repro.methods.base import Adapted


def extra_trainable(method_cfg: DictConfig, model_cfg: DictConfig) -> list[str]:
    """Module-name suffixes trained fully besides LoRA: the word embeddings and/or every normalisation layer."""
    names: list[str] = []
    if method_cfg.train_embeddings:
        names.append(model_cfg.word_embeddings)
    if method_cfg.train_norms:
        if not model_cfg.get("norms"):
            raise ConfigError(f"model {model_cfg.name} names no normalisation layers (`norms`); method "
                              f"{method_cfg.name} trains them")
        names.extend(model_cfg.norms)
    return names


def _matches(module_name: str, suffixes: list[str]) -> bool:
    return any(module_name == s or module_name.endswith("." + s) for s in suffixes)


def apply_longlora(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig,
                   task_type: TaskType = TaskType.CAUSAL_LM) -> Adapted:
    from repro.methods.lora import lora_config

    peft_model = get_peft_model(model, lora_config(method_cfg, model_cfg, task_type))
    suffixes = extra_trainable(method_cfg, model_cfg)
    opened = 0
    for name, module in peft_model.named_modules():
        if _matches(name, suffixes):
            for param in module.parameters():
                param.requires_grad_(True)
            opened += 1
    if suffixes and not opened:
        raise ConfigError(f"model {model_cfg.name} has no module named {', '.join(suffixes)}")
    return Adapted(peft_model, is_peft=False)
