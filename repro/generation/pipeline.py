"""`task.kind: generation`: a decoder LM or an encoder-decoder (model config `lm: seq2seq`) + method,
trained on target tokens only, decoded with beam search and scored with the task's metric set. Registered in
`repro.pipelines.PIPELINES["generation"]`. What differs between the two architectures (how a pair becomes inputs
and labels, the loss, the decoding prompt) lives in a format object (causal.py, seq2seq.py) chosen once.

Reuses the shared trainer's pieces (TrainResult, optimizer_groups) and keeps its conventions: AdamW, linear
schedule with warm-up (Table 11 gives warm-up in steps), best epoch by `task.main_metric`. Decoded outputs of
every scored epoch go to `<run dir>/outputs/<split>.epoch<k>.jsonl`; the result record points at them.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from repro.config import run_id
from repro.data.generation import GenerationData, Grouped, Pair, load_generation_data
from repro.generation.causal import CausalFormat
from repro.generation.decoding import beam_search
from repro.generation.methods import apply_decoder_method
from repro.generation.metrics import score_outputs
from repro.generation.models import end_token_id, is_seq2seq, load_lm, load_lm_tokenizer
from repro.generation.seq2seq import Seq2SeqFormat, decoder_start_id
from repro.methods import LORA_FAMILY, load_kwargs
from repro.models import to_device
from repro.params import count_parameters
from repro.checkpoint import restore_training_state, trainable_state, training_state
from repro.pipelines import PipelineOutcome, RunContext, method_report
from repro.trainer import TrainResult, is_better, optimizer_groups, optimizer_step

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


def run_generation(cfg: DictConfig, ctx: RunContext) -> PipelineOutcome:
    """Train with resumable checkpoints (`ctx.checkpointer`, as the classification trainer), optionally from a
    finished run's method weights (`ctx.init_from`), scoring each epoch."""
    task, train_cfg, device, checkpointer = cfg.task, cfg.train, ctx.device, ctx.checkpointer
    data: GenerationData = load_generation_data(task, cfg.data)
    tokenizer = load_lm_tokenizer(cfg.model)
    adapted = apply_decoder_method(load_lm(cfg.model, **load_kwargs(cfg.method)), method_config(cfg), cfg.model,
                                   tokenizer)
    if ctx.init_from is not None:
        adapted.load(ctx.init_from, include_head=False)
    model = to_device(adapted.model, device)
    counts = count_parameters(model, list(cfg.model.head))
    fmt = text_format(cfg.model, tokenizer, model, cfg.data.max_seq_len - adapted.reserved_tokens,
                      task.recipe.max_target_tokens)
    print(f"{task.name}/{cfg.model.name}/{cfg.method.name}: {len(data.train)} train pairs, "
          + ", ".join(f"{s}: {len(r)} inputs" for s, r in data.eval.items())
          + f"; trainable {counts.trainable:,} of {counts.total:,} parameters")

    train_features = [fmt.encode(p) for p in data.train]
    eval_features = {s: [fmt.encode(Pair(g.source, r)) for g in rows for r in g.references]
                     for s, rows in data.eval.items()}
    run_dir = Path(cfg.output_root) / run_id(cfg)

    hooks = adapted.hooks
    optimizer = hooks.make_optimizer(optimizer_groups(model, task.recipe.weight_decay), train_cfg.learning_rate)
    batches_per_epoch = math.ceil(len(train_features) / train_cfg.batch_size)
    total_steps = math.ceil(batches_per_epoch / train_cfg.grad_accum_steps) * train_cfg.epochs
    hooks.on_schedule(total_steps)
    warmup = task.recipe.warmup_steps
    if warmup >= total_steps:
        print(f"note: warm-up ({warmup} steps) >= all {total_steps} optimizer steps: the learning rate never peaks")
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    trainable = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(cfg.seed)
    result, outputs = TrainResult(), {}
    first_epoch, skip_batches, loss_sum = 1, 0, 0.0
    saved = checkpointer.load() if checkpointer else None
    if saved is not None:
        restore_training_state(saved, model, optimizer, scheduler)
        result, outputs = saved["result"], saved["outputs"]
        first_epoch, skip_batches, loss_sum = saved["epoch"], saved["batches_done"], saved["loss_sum"]
        generator.set_state(saved["epoch_generator"])
        print(f"resumed from checkpoint: epoch {first_epoch}, batch {skip_batches}, step {result.optimizer_steps}")

    def snapshot(epoch: int, batches_done: int, loss_sum: float, epoch_generator: torch.Tensor) -> dict:
        return training_state(model, optimizer, scheduler, result=result, outputs=outputs, epoch=epoch,
                              batches_done=batches_done, loss_sum=loss_sum, epoch_generator=epoch_generator)

    for epoch in range(first_epoch, train_cfg.epochs + 1):
        model.train()
        start = time.perf_counter()
        epoch_generator = generator.get_state()  # this epoch's data order, for resuming inside it
        order = torch.randperm(len(train_features), generator=generator).tolist()
        bar = tqdm(range(batches_per_epoch), desc=f"epoch {epoch}/{train_cfg.epochs}", leave=False, disable=None)
        for i in bar:
            if i < skip_batches:  # trained on before the checkpoint
                continue
            if i == skip_batches and saved is not None:
                torch.set_rng_state(saved["torch_rng"])  # dropout continues where it stopped
                saved = None
            features = [train_features[j] for j in order[i * train_cfg.batch_size:(i + 1) * train_cfg.batch_size]]
            batch = {k: v.to(device) for k, v in fmt.collate(features).items()}
            loss = fmt.loss(model, batch, task.recipe.label_smoothing) + hooks.extra_loss()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss {loss.item()} at epoch {epoch}, batch {i}")
            (loss / train_cfg.grad_accum_steps).backward()
            loss_sum += loss.item()
            result.train_samples += len(features)
            result.train_tokens += sum(int(v.sum()) for k, v in batch.items() if k.endswith("attention_mask"))
            if (i + 1) % train_cfg.grad_accum_steps == 0 or i + 1 == batches_per_epoch:
                optimizer_step(trainable, train_cfg.max_grad_norm, optimizer, scheduler, hooks, result)
                if checkpointer and checkpointer.due(result.optimizer_steps) and i + 1 < batches_per_epoch:
                    result.train_time_s += time.perf_counter() - start
                    start = time.perf_counter()
                    checkpointer.save(snapshot(epoch, i + 1, loss_sum, epoch_generator))
            bar.set_postfix(loss=f"{loss.item():.4f}")
        result.train_time_s += time.perf_counter() - start
        skip_batches = 0

        metrics: dict[str, float] = {}
        decode_now = task.recipe.decode_every_epoch or epoch == train_cfg.epochs
        for n, (split, rows) in enumerate(data.eval.items()):
            metrics[f"{split}/loss"] = eval_loss(model, fmt, eval_features[split], train_cfg.eval_batch_size, device)
            if decode_now:
                out_file = run_dir / "outputs" / f"{split}.epoch{epoch}.jsonl"
                scores = decode_and_score(model, fmt, split, rows, task, data.train_categories, device, out_file)
                outputs[f"{split}/epoch{epoch}"] = str(out_file.relative_to(run_dir))
                metrics.update({f"{split}/{k}": v for k, v in scores.items()})
                if n == 0:  # the first eval split gives the headline numbers
                    metrics.update(scores)
        record = {"epoch": epoch, "train_loss": loss_sum / max(batches_per_epoch, 1), "metrics": metrics}
        loss_sum = 0.0
        result.epochs.append(record)
        main = task.main_metric
        if main in metrics and is_better(metrics[main], result.best_metrics.get(main)):
            result.best_epoch, result.best_metrics = epoch, metrics
            result.best_state = trainable_state(model)
        ctx.on_epoch(record)
        if checkpointer and epoch < train_cfg.epochs:
            checkpointer.save(snapshot(epoch + 1, 0, 0.0, generator.get_state()))
    extra: dict[str, Any] = {**method_report(adapted), "outputs": outputs,
                             # WebNLG's seen categories, so that `repro.score` can split seen/unseen again
                             "seen_categories": sorted(data.train_categories) if data.train_categories else None,
                             "best_outputs": {s: outputs.get(f"{s}/epoch{result.best_epoch}") for s in data.eval}}
    return PipelineOutcome(adapted, counts, result, len(data.train), {s: len(r) for s, r in data.eval.items()}, extra)
