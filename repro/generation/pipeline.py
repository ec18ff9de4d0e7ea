"""`task.kind: generation`: decoder LM + method, trained on target tokens only, decoded with beam search and
scored with the task's metric set. Registered in `repro.pipelines.PIPELINES["generation"]`.

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
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from repro.config import run_id
from repro.data.generation import GenerationData, Grouped, Pair, load_generation_data
from repro.generation.decoding import beam_search
from repro.generation.methods import apply_decoder_method
from repro.generation.metrics import score
from repro.generation.models import end_token_id, load_causal_lm, load_lm_tokenizer
from repro.params import count_parameters
from repro.pipelines import OnEpoch, PipelineOutcome
from repro.trainer import TrainResult, optimizer_groups

IGNORE = -100


def encode_prompt(tokenizer: PreTrainedTokenizerBase, source: str, max_source: int) -> list[int]:
    """Source tokens then the separator (the eos token: <|endoftext|> for GPT-2, as the paper's code)."""
    ids = tokenizer.encode(source, add_special_tokens=False)[:max_source]
    return ids + [tokenizer.eos_token_id]


def encode_pair(tokenizer: PreTrainedTokenizerBase, pair: Pair, end_id: int, max_len: int,
                max_target: int) -> dict[str, list[int]]:
    """input = source, separator, " " + target, end; labels only on target and end tokens."""
    target = tokenizer.encode(" " + pair.target, add_special_tokens=False)[:max_target] + [end_id]
    prompt = encode_prompt(tokenizer, pair.source, max(max_len - len(target) - 1, 1))
    return {"input_ids": prompt + target, "labels": [IGNORE] * len(prompt) + target}


def collate(features: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right padding for training (positions start at 0 in every row)."""
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, f in enumerate(features):
        n = len(f["input_ids"])
        ids[row, :n], labels[row, :n], mask[row, :n] = torch.tensor(f["input_ids"]), torch.tensor(f["labels"]), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def target_loss(model: nn.Module, batch: dict[str, torch.Tensor], label_smoothing: float) -> torch.Tensor:
    """Mean cross-entropy over target tokens (next-token shift), with label smoothing."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch["labels"][:, 1:].reshape(-1),
                           ignore_index=IGNORE, label_smoothing=label_smoothing)


@torch.no_grad()
def eval_loss(model: nn.Module, features: list[dict], pad_id: int, batch_size: int, device: torch.device) -> float:
    """Target-token cross-entropy without smoothing (the paper's validation loss), token-weighted."""
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(features), batch_size):
        batch = {k: v.to(device) for k, v in collate(features[start:start + batch_size], pad_id).items()}
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        total, tokens = total + target_loss(model, batch, 0.0).item() * n, tokens + n
    return total / max(tokens, 1)


def decode_and_score(model: nn.Module, tokenizer: PreTrainedTokenizerBase, split: str, rows: list[Grouped],
                     task: DictConfig, end_id: int, max_source: int, seen: set[str], device: torch.device,
                     out_file: Path) -> dict[str, float]:
    prompts = [encode_prompt(tokenizer, g.source, max_source) for g in rows]
    hyps = beam_search(model, tokenizer, prompts, task.decode, end_id, device, desc=f"decode {split}")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with open(out_file, "w", encoding="utf-8") as f:
        for g, h in zip(rows, hyps):
            f.write(json.dumps({"source": g.source, "hypothesis": h, "references": g.references, **g.meta},
                               ensure_ascii=False) + "\n")
    categories = [g.meta.get("category") for g in rows] if any("category" in g.meta for g in rows) else None
    return score(task.metric_set, hyps, [g.references for g in rows], categories, seen)


def _method_cfg(cfg: DictConfig) -> DictConfig:
    """Table 11's dropout is the LoRA dropout of the paper's code: the task recipe sets it for method=lora."""
    method = cfg.method
    if method.name == "lora" and cfg.task.recipe.get("lora_dropout") is not None:
        method = OmegaConf.merge(method, {"dropout": cfg.task.recipe.lora_dropout})
    return method


def run_generation(cfg: DictConfig, device: torch.device, on_epoch: OnEpoch) -> PipelineOutcome:
    task, train_cfg = cfg.task, cfg.train
    data: GenerationData = load_generation_data(task, cfg.data)
    tokenizer = load_lm_tokenizer(cfg.model)
    end_id = end_token_id(cfg.model, tokenizer)
    adapted = apply_decoder_method(load_causal_lm(cfg.model), _method_cfg(cfg), cfg.model)
    model = adapted.model.to(device)
    counts = count_parameters(model, list(cfg.model.head))
    max_len = cfg.data.max_seq_len - adapted.reserved_tokens
    max_target = task.recipe.max_target_tokens
    max_source = max(max_len - max_target - 1, 1)
    print(f"{task.name}/{cfg.model.name}/{cfg.method.name}: {len(data.train)} train pairs, "
          + ", ".join(f"{s}: {len(r)} inputs" for s, r in data.eval.items())
          + f"; trainable {counts.trainable:,} of {counts.total:,} parameters")

    encode = lambda pairs: [encode_pair(tokenizer, p, end_id, max_len, max_target) for p in pairs]  # noqa: E731
    train_features = encode(data.train)
    eval_features = {s: encode([Pair(g.source, r) for g in rows for r in g.references]) for s, rows in data.eval.items()}
    run_dir = Path(cfg.output_root) / run_id(cfg)

    optimizer = torch.optim.AdamW(optimizer_groups(model, task.recipe.weight_decay), lr=train_cfg.learning_rate)
    batches_per_epoch = math.ceil(len(train_features) / train_cfg.batch_size)
    total_steps = math.ceil(batches_per_epoch / train_cfg.grad_accum_steps) * train_cfg.epochs
    warmup = task.recipe.warmup_steps
    if warmup >= total_steps:
        print(f"note: warm-up ({warmup} steps) >= all {total_steps} optimizer steps: the learning rate never peaks")
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    trainable = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(cfg.seed)
    result, outputs = TrainResult(), {}
    for epoch in range(1, train_cfg.epochs + 1):
        model.train()
        start, loss_sum = time.perf_counter(), 0.0
        order = torch.randperm(len(train_features), generator=generator).tolist()
        bar = tqdm(range(batches_per_epoch), desc=f"epoch {epoch}/{train_cfg.epochs}", leave=False, disable=None)
        for i in bar:
            features = [train_features[j] for j in order[i * train_cfg.batch_size:(i + 1) * train_cfg.batch_size]]
            batch = {k: v.to(device) for k, v in collate(features, tokenizer.pad_token_id).items()}
            loss = target_loss(model, batch, task.recipe.label_smoothing)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss {loss.item()} at epoch {epoch}, batch {i}")
            (loss / train_cfg.grad_accum_steps).backward()
            loss_sum += loss.item()
            result.train_samples += len(features)
            result.train_tokens += int(batch["attention_mask"].sum())
            if (i + 1) % train_cfg.grad_accum_steps == 0 or i + 1 == batches_per_epoch:
                if train_cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(trainable, train_cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                result.optimizer_steps += 1
            bar.set_postfix(loss=f"{loss.item():.4f}")
        result.train_time_s += time.perf_counter() - start

        metrics: dict[str, float] = {}
        decode_now = task.recipe.decode_every_epoch or epoch == train_cfg.epochs
        for n, (split, rows) in enumerate(data.eval.items()):
            metrics[f"{split}/loss"] = eval_loss(model, eval_features[split], tokenizer.pad_token_id,
                                                 train_cfg.eval_batch_size, device)
            if decode_now:
                out_file = run_dir / "outputs" / f"{split}.epoch{epoch}.jsonl"
                scores = decode_and_score(model, tokenizer, split, rows, task, end_id, max_source,
                                          data.train_categories, device, out_file)
                outputs[f"{split}/epoch{epoch}"] = str(out_file.relative_to(run_dir))
                metrics.update({f"{split}/{k}": v for k, v in scores.items()})
                if n == 0:  # the first eval split gives the headline numbers
                    metrics.update(scores)
        record = {"epoch": epoch, "train_loss": loss_sum / max(batches_per_epoch, 1), "metrics": metrics}
        result.epochs.append(record)
        main = task.main_metric
        if main in metrics and (result.best_epoch < 0 or metrics[main] > result.best_metrics[main]):
            result.best_epoch, result.best_metrics = epoch, metrics
            result.best_state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
        on_epoch(record)
    extra: dict[str, Any] = {"outputs": outputs,
                             "best_outputs": {s: outputs.get(f"{s}/epoch{result.best_epoch}") for s in data.eval}}
    return PipelineOutcome(adapted, counts, result, len(data.train), {s: len(r) for s, r in data.eval.items()}, extra)
