"""`python -m repro.export RUN_DIR [--out DIR]`: a finished run as a transformers model folder.

LoRA (its variants, LongLoRA) is folded into the weights (W0 + (alpha/r) B A, peft's `merge_and_unload`), GPT-2's
split q/k/v are fused back into its `c_attn` Conv1D, and the result is saved with its tokenizer so that
`AutoModelFor...from_pretrained(DIR)` loads it without peft or this package: no extra inference latency, the
paper's point in Section 4.2. LongLoRA's position interpolation is in the saved config (`rope_parameters`: linear,
with its factor), so plain transformers reads positions as the run did.

Two parts of a run have no module in plain transformers; config.json lists them under `repro_export`, and
`load_exported(DIR)` (transformers and torch, no peft) adds them:
- mean pooling (`model.pooling=mean|mean_pooler`: MiniLM, every cpu-scale GLUE run): a standard
  ...ForSequenceClassification whose classifier must read the masked mean of the tokens, not the first token;
- bottleneck adapters (adapter_h/l/p/d: a non-linearity, nothing to merge) and the paper's prefix tokens
  (prefix_embed/prefix_layer, impl=paper: trainable positions inserted into every input, nothing to merge): the
  whole model's weights go to `adapted_model.safetensors` (not model.safetensors, so that plain `from_pretrained`
  fails instead of silently dropping them) and `load_exported` builds the architecture from config.json, inserts
  the adapters or wraps it in the prompt-token module, and loads the weights.

The export is checked: the folder, loaded back by `load_exported` (plain `from_pretrained` when nothing is added),
must give the adapted model's logits on a few inputs (the largest difference is printed and stored in
DIR/export.json). peft's prompt and prefix tuning (impl=peft) export in peft's format: the base model (with the
trained head) in DIR and the adapter in DIR/peft_adapter, which `load_exported` (or
`PeftModel.from_pretrained(AutoModelFor...from_pretrained(DIR), DIR/peft_adapter)`) loads. QLoRA exports the same
way, unmerged (merging would round W0 + BA back to 4 bits): its 4-bit base in transformers' bitsandbytes format.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import transformers
from omegaconf import DictConfig, OmegaConf
from peft import PeftModel
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import AutoConfig

from repro.errors import ReproError, exit_on_user_error
from repro.generation.gpt2_qkv import SplitQKV, fuse_split_qkv
from repro.generation.methods import DecoderPromptTokens
from repro.generation.models import is_seq2seq
from repro.kinds import kind_of
from repro.methods.adapters import WithAdapter, insert_adapters
from repro.methods.base import Adapted
from repro.methods.prefix import PromptTokens
from repro.methods.qlora import keep_training_layout
from repro.models import POOLINGS
from repro.results import read_result
from repro.runner import quiet_library_noise, seed_everything

PEFT_ADAPTER = "peft_adapter"  # the adapter folder inside the export of a run that does not merge (peft format)
# what load_exported needs from the model config to rebuild a prompt-token module (impl=paper) around the model
PROMPT_MODEL_KEYS = ("n_layers", "d_model", "word_embeddings", "layers")
EXPORT_KEY = "repro_export"  # config.json: what load_exported adds to the transformers model
ADAPTED_WEIGHTS = "adapted_model.safetensors"  # a model with adapters or prompt tokens: every weight
WHOLE_MODEL_ADDITIONS = {"adapters", "prompt_tokens"}  # additions whose weights go to ADAPTED_WEIGHTS
ADAPTER_KEYS = {"model": ("layers", "adapter_sites", "d_model"),
                "method": ("sites", "bottleneck", "layer_norm", "drop_lowest_layers", "activation")}
CHECK_TEXTS = ("the film is a quiet triumph", "name : The Eagle | food : French", "a b c d e f g h")
TOLERANCE = 1e-4  # largest |logit difference| accepted (fp32 merge: W0 + BA computed once instead of per call)


def rebuild_run(run_dir: Path) -> tuple[DictConfig, Adapted]:
    """A complete run's config and its adapted model with the saved (best-epoch) weights (also what
    `repro.bench.decode` decodes with)."""
    if not run_dir.is_dir():
        raise ReproError(f"{run_dir}: no such run folder")
    record = read_result(run_dir)
    if record is None or record.get("status") != "complete":
        raise ReproError(f"{run_dir} is not a complete run (no result.json with status complete)")
    cfg = OmegaConf.create(record["config"])  # its `method` is the configuration the run used
    adapted = build_adapted(cfg)
    weights = record.get("weights") or {}
    if weights.get("dir"):
        adapted.load(run_dir / weights["dir"])
    return cfg, adapted


def build_adapted(cfg: DictConfig) -> Adapted:
    """The config's model with its method applied (fresh method weights), built as its run builds it (the task
    kind's `build`). The frozen weights of a random-initialised (tiny) model are those a run with this seed drew:
    its seeding is replayed."""
    seed_everything(cfg.seed)
    return kind_of(cfg).build(cfg)


def plain_model(cfg: DictConfig, adapted: Adapted) -> nn.Module:
    """The adapted model with LoRA (or any peft tuner that merges) merged and GPT-2's c_attn fused: a transformers
    model without peft (with adapters or mean pooling still in it: `additions`)."""
    model = adapted.model
    if merges(model):
        keep_trained_copies(model)
        model = model.merge_and_unload()
    if cfg.model.get("fused_qkv") and any(isinstance(m, SplitQKV) for m in model.modules()):
        fuse_split_qkv(model, cfg.model)
    return model


def merges(model: nn.Module) -> bool:
    """A peft model whose tuner folds into the weights: not prompt learning (its virtual tokens are inputs), and not
    on a 4-bit base (QLoRA: merging would round W0 + BA back to 4 bits, another model than the run's)."""
    return isinstance(model, PeftModel) and not prompt_learning(model) and not quantised(model)


def prompt_learning(model: PeftModel) -> bool:
    """peft's prompt or prefix tuning: virtual tokens, no layers added to the base model."""
    return model.peft_config[model.active_adapter].is_prompt_learning


def quantised(model: nn.Module) -> bool:
    """Loaded in 4 bits (bitsandbytes through transformers; peft passes the attribute through)."""
    return bool(getattr(model, "is_loaded_in_4bit", False))


def keep_trained_copies(model: PeftModel) -> None:
    """Put each trained head module (peft's `modules_to_save` copy) in its wrapper's place. peft's generic merge
    (VeRA, IA3, LoHa, LoKr, OFT, FourierFT, HRA, LN tuning) fails on a wrapped module without a `weight` (BERT's
    pooler) or keeps the untrained original; LoRA's own merge does this itself."""
    from peft.utils import ModulesToSaveWrapper

    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.modules_to_save[module.active_adapter])


def additions(cfg: DictConfig, model: nn.Module) -> dict:
    """What `load_exported` adds to the transformers model (config.json's `repro_export`); empty when nothing."""
    out: dict = {}
    if cfg.model.get("pooling", "cls") != "cls":  # a classification head's pooling (language models have none)
        out["pooling"] = cfg.model.pooling
    if any(isinstance(m, WithAdapter) for m in model.modules()):
        tree = OmegaConf.to_container(cfg, resolve=True)
        out["adapters"] = {key: tree[group][key] for group, keys in ADAPTER_KEYS.items() for key in keys}
    if isinstance(model, PeftModel):  # not merged (prompt learning, QLoRA): saved in peft's own format
        out["peft_adapter"] = PEFT_ADAPTER
    if isinstance(model, (PromptTokens, DecoderPromptTokens)):
        out["prompt_tokens"] = {"module": type(model).__name__, "per_layer": len(model.prompts) > 1,
                                "prefix_length": model.n_prefix, "infix_length": getattr(model, "n_infix", 0),
                                **{key: cfg.model[key] for key in PROMPT_MODEL_KEYS}}
    return out


def wrap_prompt_tokens(model: nn.Module, spec: dict) -> nn.Module:
    """The run's prompt-token module around a transformers model (`spec`: config.json's `prompt_tokens`)."""
    model_cfg = OmegaConf.create({key: spec[key] for key in PROMPT_MODEL_KEYS})
    if spec["module"] == "DecoderPromptTokens":
        return DecoderPromptTokens(model, model_cfg, spec["prefix_length"], spec["per_layer"])
    return PromptTokens(model, model_cfg, spec["prefix_length"], spec["infix_length"], spec["per_layer"])


def save(model: nn.Module, added: dict, out: Path) -> None:
    """The model's config (with `added`) and weights: transformers' layout, or every weight in ADAPTED_WEIGHTS
    (the prompt-token module's too: its `prompts` and its transformers model under `base.`)."""
    if "peft_adapter" in added:  # the adapter in peft's format, then the base model (trained head) around it
        model.save_pretrained(out / PEFT_ADAPTER)
        keep_trained_copies(model)
        # prompt learning adds no layers to the base; LoRA's come out unmerged (a 4-bit base stays as it was loaded)
        model = model.get_base_model() if prompt_learning(model) else model.unload()
    inner = model.base if "prompt_tokens" in added else model
    if added:
        setattr(inner.config, EXPORT_KEY, added)
    if not WHOLE_MODEL_ADDITIONS & set(added):
        model.save_pretrained(out)
        return
    inner.config.architectures = [type(inner).__name__]
    inner.config.save_pretrained(out)
    save_model(model, str(out / ADAPTED_WEIGHTS))  # tied weights (GPT-2's lm_head) once


def load_exported(path: str | Path) -> nn.Module:
    """An exported folder as the run's model, in eval mode: `from_pretrained`, plus what config.json's `repro_export`
    names (mean pooling, bottleneck adapters, prompt tokens, a peft prompt-learning adapter)."""
    path = Path(path)
    config = AutoConfig.from_pretrained(path)
    added = getattr(config, EXPORT_KEY, None) or {}
    model_class = getattr(transformers, config.architectures[0])
    adapters = added.get("adapters")
    pooling = added.get("pooling", "cls")
    whole = bool(WHOLE_MODEL_ADDITIONS & set(added))
    if whole:
        model = model_class(config)
    else:
        # mean pooling replaces the pooler layer (not exported): its "missing weights" report would only alarm
        verbosity = transformers.logging.get_verbosity()
        if pooling == "mean":
            transformers.logging.set_verbosity_error()
        try:
            model = model_class.from_pretrained(path, dtype=torch.float32)
        finally:
            transformers.logging.set_verbosity(verbosity)
        keep_training_layout(model)  # a 4-bit base (QLoRA): compute as the run did (repro.methods.qlora)
    POOLINGS[pooling](model)
    if adapters:
        insert_adapters(model, OmegaConf.create(adapters), list(adapters["sites"]), adapters["bottleneck"],
                        adapters["layer_norm"], adapters["drop_lowest_layers"], adapters["activation"])
    if "prompt_tokens" in added:
        model = wrap_prompt_tokens(model, added["prompt_tokens"])
    if whole:
        load_model(model, path / ADAPTED_WEIGHTS)
    if "peft_adapter" in added:
        model = PeftModel.from_pretrained(model, str(path / added["peft_adapter"]))
    return model.eval()


@torch.no_grad()
def logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    return model(**inputs).logits.float()


def check_inputs(cfg: DictConfig, tokenizer) -> dict[str, torch.Tensor]:
    """A few padded inputs (decoder inputs too for an encoder-decoder)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(list(CHECK_TEXTS), return_tensors="pt", padding=True, truncation=True, max_length=32)
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if is_seq2seq(cfg.model):
        inputs["decoder_input_ids"] = enc["input_ids"][:, :4]
    return inputs


def export(run_dir: Path, out: Path) -> dict:
    """Write the plain model, its tokenizer and export.json to `out`; returns what export.json holds."""
    cfg, adapted = rebuild_run(run_dir)
    tokenizer = kind_of(cfg).tokenizer(cfg)
    inputs = check_inputs(cfg, tokenizer)
    expected = logits(adapted.model, inputs)
    out.mkdir(parents=True, exist_ok=True)
    model = plain_model(cfg, adapted)
    added = additions(cfg, model)
    save(model, added, out)
    tokenizer.save_pretrained(out)
    reloaded = load_exported(out)
    diff = float((logits(reloaded, inputs) - expected).abs().max())
    summary = {"run": run_dir.name, "method": cfg.method.name, "model": cfg.model.name, "task": cfg.task.name,
               "merged_lora": merges(adapted.model), "class": type(reloaded).__name__,
               "loader": "repro.export.load_exported" if added else "transformers", "added": sorted(added),
               "check_inputs": len(CHECK_TEXTS), "max_abs_logit_diff": diff}
    (out / "export.json").write_text(json.dumps(summary, indent=1) + "\n")
    if diff > TOLERANCE:
        raise ReproError(f"the exported model's logits differ from the run's by {diff:.3g} (> {TOLERANCE}); "
                         f"{out} is not a faithful export")
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m repro.export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a complete run (results/runs/<run id>)")
    parser.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/exported")
    args = parser.parse_args(argv)
    quiet_library_noise()
    summary = export(args.run_dir, args.out or args.run_dir / "exported")
    loader = f"; load it with {summary['loader']} ({', '.join(summary['added'])})" if summary["added"] else ""
    print(f"exported {summary['run']} as {summary['class']} to {args.out or args.run_dir / 'exported'} "
          f"(LoRA merged: {summary['merged_lora']}; max |logit difference| {summary['max_abs_logit_diff']:.2e}"
          f"{loader})")
    return summary


if __name__ == "__main__":
    exit_on_user_error(main)()
