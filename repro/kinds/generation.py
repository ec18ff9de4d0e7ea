"""`task.kind: generation`: a decoder LM (causal) or an encoder-decoder (model config `lm: seq2seq`) + method,
trained on target tokens only, decoded with beam search and scored with the task's metric set. What differs
between the two architectures (how a pair becomes inputs and labels, the loss, the decoding prompt) lives in a
format object (repro/generation/causal.py, seq2seq.py) chosen once.

Training is `repro.loop.train` (as classification): AdamW, linear schedule with warm-up (`train.warmup_steps`:
Table 11 gives warm-up in steps), best epoch by `task.main_metric`. Decoded outputs of every scored epoch go to
`<run dir>/outputs/<split>.epoch<k>.jsonl`; the result record points at them. Under torchrun every process trains
its shard (DDP) and rank 0 alone decodes, scores and writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from repro.data.generation import (GenerationData, Grouped, Pair, check_local_generation_files,
                                   load_generation_data)
from repro.distributed import World, shard_sampler
from repro.errors import ConfigError
from repro.generation.causal import CausalFormat
from repro.generation.decoding import beam_search
from repro.generation.methods import apply_decoder_method
from repro.generation.metrics import score_outputs
from repro.generation.models import end_token_id, is_seq2seq, lm_from_config, load_lm, load_lm_tokenizer
from repro.generation.seq2seq import Seq2SeqFormat, decoder_start_id
from repro.kinds.base import Outcome, RunContext, ShuffledBatches, method_report, pretrained_kwargs
from repro.loop import TrainResult, evaluate_once, train
from repro.methods import LORA_FAMILY, Adapted
from repro.models import to_device
from repro.paper import paper_data
from repro.params import ParamCounts, count_parameters

TextFormat = CausalFormat | Seq2SeqFormat


def text_format(model_cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, model: nn.Module, max_len: int,
                max_target: int) -> TextFormat:
    """The format of the model's architecture (an encoder-decoder's decoder start token comes from the model)."""
    end_id = end_token_id(model_cfg, tokenizer)
    if is_seq2seq(model_cfg):
        return Seq2SeqFormat(tokenizer, end_id, max_len, max_target, decoder_start_id(model))
    return CausalFormat(tokenizer, end_id, max_len, max_target)


@torch.no_grad()
def eval_loss(model: nn.Module, fmt: TextFormat, features: list[dict], batch_size: int, device: torch.device) -> float:
    """Target-token cross-entropy without smoothing (the paper's validation loss), token-weighted."""
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(features), batch_size):
        batch = {k: v.to(device) for k, v in fmt.collate(features[start:start + batch_size]).items()}
        n = fmt.n_targets(batch)
        total, tokens = total + fmt.loss(model, batch, 0.0).item() * n, tokens + n
    return total / max(tokens, 1)


def decode_and_score(model: nn.Module, fmt: TextFormat, split: str, rows: list[Grouped], task: DictConfig,
                     seen: set[str], device: torch.device, out_file: Path) -> dict[str, float]:
    prompts = [fmt.prompt(g.source) for g in rows]
    hyps = beam_search(model, fmt.tokenizer, prompts, task.decode, fmt.end_id, device, desc=f"decode {split}")
    lines = [{"source": g.source, "hypothesis": h, "references": g.references, **g.meta} for g, h in zip(rows, hyps)]
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with open(out_file, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    return score_outputs(task.metric_set, lines, seen)


def method_config(cfg: DictConfig) -> DictConfig:
    """Table 11's dropout is the LoRA dropout of the paper's code: the task recipe sets it for LoRA and its
    variants."""
    method = cfg.method
    if method.name in LORA_FAMILY and cfg.task.recipe.get("lora_dropout") is not None:
        method = OmegaConf.merge(method, {"dropout": cfg.task.recipe.lora_dropout})
    return method


@dataclass
class GenerationSession:
    """The loop's view of a generation run (`repro.loop.Session`)."""

    data: GenerationData
    fmt: TextFormat
    features: list[dict]
    eval_features: dict[str, list[dict]]
    task: DictConfig
    train_cfg: DictConfig
    seed: int
    device: torch.device
    world: World
    run_dir: Path
    always_decode: bool = False  # decode every evaluation (an imported adapter is evaluated once, epoch 0)

    def train_batches(self, generator: torch.Generator, world: World) -> ShuffledBatches:
        return ShuffledBatches(len(self.features), self.train_cfg.batch_size, generator,
                               lambda ids: self.fmt.collate([self.features[j] for j in ids]),
                               shard_sampler(self.features, world, self.seed))

    def loss(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fmt.loss(net, batch, self.task.recipe.label_smoothing)

    def evaluate(self, model: nn.Module, epoch: int, result: TrainResult) -> dict[str, float]:
        """Validation loss and (every epoch, or the last) decoded outputs scored; the headline numbers are the first
        eval split's. Rank 0 only under torchrun (the loop hands its metrics to every rank)."""
        if not self.world.is_main:
            return {}
        metrics: dict[str, float] = {}
        decode_now = self.always_decode or self.task.recipe.decode_every_epoch or epoch == self.train_cfg.epochs
        for n, (split, rows) in enumerate(self.data.eval.items()):
            metrics[f"{split}/loss"] = eval_loss(model, self.fmt, self.eval_features[split],
                                                 self.train_cfg.eval_batch_size, self.device)
            if decode_now:
                out_file = self.run_dir / "outputs" / f"{split}.epoch{epoch}.jsonl"
                scores = decode_and_score(model, self.fmt, split, rows, self.task, self.data.train_categories,
                                          self.device, out_file)
                result.outputs[f"{split}/epoch{epoch}"] = str(out_file.relative_to(self.run_dir))
                metrics.update({f"{split}/{k}": v for k, v in scores.items()})
                if n == 0:  # the first eval split gives the headline numbers
                    metrics.update(scores)
        return metrics


class LanguageModelKind:
    """What the kinds whose model is a language model share (generation, long_context)."""

    def tokenizer(self, cfg: DictConfig) -> PreTrainedTokenizerBase:
        return load_lm_tokenizer(cfg.model)

    def meta_model(self, config: PretrainedConfig, model_cfg: DictConfig, method_cfg: DictConfig,
                   num_labels: int) -> Adapted:
        return apply_decoder_method(lm_from_config(config, model_cfg), method_cfg, model_cfg)


class Generation(LanguageModelKind):
    """E2E, WebNLG, DART, SAMSum with decoders (GPT-2) or encoder-decoders (T5, BART)."""

    def method_config(self, cfg: DictConfig) -> DictConfig:
        return method_config(cfg)

    def build(self, cfg: DictConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> Adapted:
        return apply_decoder_method(load_lm(cfg.model, **pretrained_kwargs(cfg)), method_config(cfg), cfg.model,
                                    tokenizer)

    def check_local_data(self, task: DictConfig, root: str) -> None:
        check_local_generation_files(task, root)

    def paper_params(self, row_id: str, task_cfg: DictConfig) -> str | None:
        """The printed |Theta| of the paper's table for this task (Tables 3, 13, 14: `params_M`)."""
        from repro.generation.tables import GENERATION_TABLES

        spec = next((s for s in GENERATION_TABLES if s.task == task_cfg.name and s.paper), None)
        rows = paper_data(spec.paper)["rows"] if spec else {}
        if row_id not in rows:
            raise ConfigError(f"paper_row {row_id!r} is not a row of the paper's {task_cfg.name} table")
        return f"{rows[row_id]['params_M']}M"

    def attention_span(self, cfg: DictConfig, seq_len: int) -> int | None:
        return None

    def run(self, cfg: DictConfig, ctx: RunContext) -> Outcome:
        """Train with resumable checkpoints (`ctx.checkpointer`), optionally from a finished run's method weights
        (`ctx.init_from`), scoring each epoch."""
        task, device = cfg.task, ctx.device
        data = load_generation_data(task, cfg.data)
        tokenizer = load_lm_tokenizer(cfg.model)
        adapted = self.build(cfg, tokenizer)
        if ctx.init_from is not None:
            adapted.load(ctx.init_from, include_head=False)
        model, counts, session = _session(cfg, ctx, adapted, tokenizer, data)
        print(f"{task.name}/{cfg.model.name}/{cfg.method.name}: {len(data.train)} train pairs, "
              + ", ".join(f"{s}: {len(r)} inputs" for s, r in data.eval.items())
              + f"; trainable {counts.trainable:,} of {counts.total:,} parameters")
        result = train(model, session, cfg.train, task.main_metric, cfg.seed, device, hooks=adapted.hooks,
                       world=ctx.world, checkpointer=ctx.checkpointer, on_epoch=ctx.on_epoch,
                       on_step=ctx.on_step)
        extra = {**method_report(adapted), **_outputs_extra(result, data)}
        return Outcome(adapted, counts, result, len(data.train), {s: len(r) for s, r in data.eval.items()}, extra)

    def evaluate(self, cfg: DictConfig, adapted: Adapted, ctx: RunContext) -> Outcome:
        """Score an adapted model without training (`repro.evaluate`): validation loss, decoding and scoring of
        every eval split, outputs saved, exactly as a training run's last epoch."""
        data = load_generation_data(cfg.task, cfg.data)
        model, counts, session = _session(cfg, ctx, adapted, load_lm_tokenizer(cfg.model),
                                          GenerationData([], data.eval, data.train_categories), always_decode=True)
        result = evaluate_once(model, session, cfg.train, ctx.device)
        return Outcome(adapted, counts, result, 0, {s: len(r) for s, r in data.eval.items()},
                       _outputs_extra(result, data))


def _session(cfg: DictConfig, ctx: RunContext, adapted: Adapted, tokenizer: PreTrainedTokenizerBase,
             data: GenerationData, always_decode: bool = False) -> tuple[nn.Module, ParamCounts, GenerationSession]:
    """The model on its device, its parameter counts, and the loop's session over `data` (encoded once)."""
    model = to_device(adapted.model, ctx.device)
    counts = count_parameters(model, list(cfg.model.head))
    fmt = text_format(cfg.model, tokenizer, model, cfg.data.max_seq_len - adapted.reserved_tokens,
                      cfg.task.recipe.max_target_tokens)
    session = GenerationSession(
        data, fmt, [fmt.encode(p) for p in data.train],
        {s: [fmt.encode(Pair(g.source, r)) for g in rows for r in g.references] for s, rows in data.eval.items()},
        cfg.task, cfg.train, cfg.seed, ctx.device, ctx.world, ctx.run_dir, always_decode)
    return model, counts, session


def _outputs_extra(result: TrainResult, data: GenerationData) -> dict:
    """What a generation record adds: the decoded outputs' files, WebNLG's seen categories (so that `repro.score`
    can split seen/unseen again) and the best epoch's outputs."""
    return {"outputs": result.outputs,
            "seen_categories": sorted(data.train_categories) if data.train_categories else None,
            "best_outputs": {s: result.outputs.get(f"{s}/epoch{result.best_epoch}") for s in data.eval}}
