"""`python -m repro.export RUN_DIR [--out DIR]`: a finished run as a plain transformers model.

The LoRA update is folded into the weights (W0 + (alpha/r) B A, peft's `merge_and_unload`), GPT-2's split q/k/v
are fused back into its `c_attn` Conv1D, and the result is saved with its tokenizer so that
`AutoModelFor...from_pretrained(DIR)` loads it without peft or this package: no extra inference latency, the
paper's point in Section 4.2. The export is checked: the saved model, loaded back, must give the adapted model's
logits on a few inputs (the largest difference is printed and stored in DIR/export.json).

Methods that add modules plain transformers does not have (adapters, prefixes, mean pooling as a head) cannot be
exported this way and stop with one line; QLoRA's 4-bit base would need dequantising first (not done here).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from repro.errors import ReproError, exit_on_user_error
from repro.generation.gpt2_qkv import SplitQKV, fuse_split_qkv
from repro.generation.methods import apply_decoder_method
from repro.generation.models import is_seq2seq, load_lm, load_lm_tokenizer
from repro.methods import apply_method, load_kwargs
from repro.methods.base import Adapted
from repro.models import load_model, load_tokenizer
from repro.results import read_result
from repro.runner import seed_everything

# methods whose trained model is a plain transformers model once LoRA (if any) is merged
EXPORTABLE = ("lora", "rslora", "dora", "adalora", "full_ft", "ft_top2", "bitfit")
CHECK_TEXTS = ("the film is a quiet triumph", "name : The Eagle | food : French", "a b c d e f g h")
TOLERANCE = 1e-4  # largest |logit difference| accepted (fp32 merge: W0 + BA computed once instead of per call)


def rebuild_run(run_dir: Path, exportable: bool = False) -> tuple[DictConfig, Adapted]:
    """A complete run's config and its adapted model with the saved (best-epoch) weights (also what
    `repro.bench.decode` decodes with). With `exportable`, refuse first, in one line, a run that has no plain
    transformers form."""
    if not run_dir.is_dir():
        raise ReproError(f"{run_dir}: no such run folder")
    record = read_result(run_dir)
    if record is None or record.get("status") != "complete":
        raise ReproError(f"{run_dir} is not a complete run (no result.json with status complete)")
    cfg = OmegaConf.create(record["config"])  # its `method` is the configuration the run used
    if exportable:
        check_exportable(cfg, run_dir)
    adapted = build_adapted(cfg)
    weights = record.get("weights") or {}
    if weights.get("dir"):
        adapted.load(run_dir / weights["dir"])
    return cfg, adapted


def build_adapted(cfg: DictConfig) -> Adapted:
    """The config's model with its method applied (fresh method weights), as a run builds it. The frozen weights
    of a random-initialised (tiny) model are those a run with this seed drew: its seeding is replayed."""
    method = cfg.method
    seed_everything(cfg.seed)
    if cfg.task.kind == "classification":
        return apply_method(load_model(cfg.model, cfg.task.num_labels, **load_kwargs(method)), method, cfg.model)
    return apply_decoder_method(load_lm(cfg.model, **load_kwargs(method)), method, cfg.model)


def check_exportable(cfg: DictConfig, run_dir: Path) -> None:
    if cfg.method.name not in EXPORTABLE:
        raise ReproError(f"method {cfg.method.name} adds modules plain transformers cannot load; export supports "
                         f"{', '.join(EXPORTABLE)}")
    if cfg.task.kind == "classification" and cfg.model.get("pooling", "cls") != "cls":
        raise ReproError(f"{run_dir.name} uses model.pooling={cfg.model.pooling}; a plain transformers "
                         f"classifier reads the first token, so its logits would differ")


def rebuild(run_dir: Path) -> tuple[DictConfig, Adapted]:
    """`rebuild_run` for a run that can be exported."""
    return rebuild_run(run_dir, exportable=True)


def plain_model(cfg: DictConfig, adapted: Adapted) -> nn.Module:
    """The adapted model with LoRA merged and GPT-2's c_attn fused: a transformers model without peft."""
    model = adapted.model.merge_and_unload() if adapted.is_peft else adapted.model
    if cfg.model.get("fused_qkv") and any(isinstance(m, SplitQKV) for m in model.modules()):
        fuse_split_qkv(model, cfg.model)
    return model


def auto_class(cfg: DictConfig) -> type:
    if cfg.task.kind == "classification":
        return AutoModelForSequenceClassification
    return AutoModelForSeq2SeqLM if is_seq2seq(cfg.model) else AutoModelForCausalLM


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
    if cfg.task.kind != "classification" and is_seq2seq(cfg.model):
        inputs["decoder_input_ids"] = enc["input_ids"][:, :4]
    return inputs


def export(run_dir: Path, out: Path) -> dict:
    """Write the plain model, its tokenizer and export.json to `out`; returns what export.json holds."""
    cfg, adapted = rebuild(run_dir)
    tokenizer = load_tokenizer(cfg.model) if cfg.task.kind == "classification" else load_lm_tokenizer(cfg.model)
    inputs = check_inputs(cfg, tokenizer)
    expected = logits(adapted.model, inputs)
    out.mkdir(parents=True, exist_ok=True)
    plain_model(cfg, adapted).save_pretrained(out)
    tokenizer.save_pretrained(out)
    reloaded = auto_class(cfg).from_pretrained(out, dtype=torch.float32)
    diff = float((logits(reloaded, inputs) - expected).abs().max())
    summary = {"run": run_dir.name, "method": cfg.method.name, "model": cfg.model.name, "task": cfg.task.name,
               "merged_lora": adapted.is_peft, "class": type(reloaded).__name__, "check_inputs": len(CHECK_TEXTS),
               "max_abs_logit_diff": diff}
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
    summary = export(args.run_dir, args.out or args.run_dir / "exported")
    print(f"exported {summary['run']} as {summary['class']} to {args.out or args.run_dir / 'exported'} "
          f"(LoRA merged: {summary['merged_lora']}; max |logit difference| {summary['max_abs_logit_diff']:.2e})")
    return summary


if __name__ == "__main__":
    exit_on_user_error(main)()
