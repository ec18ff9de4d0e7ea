"""Training loop: AdamW, linear schedule with warm-up, gradient accumulation, evaluation on the dev set every
epoch, best epoch kept (the paper reports each run's best epoch).

A plain PyTorch loop rather than HF Trainer: every method (peft or our own wrappers) is an `nn.Module` called
as `model(**batch)`, and the loop stays short enough to read in one sitting. With a `Checkpointer` it saves
its whole state every few optimizer steps and resumes from it exactly (same data order, same RNG streams).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Sampler
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from repro.checkpoint import Checkpointer, restore_training_state, trainable_state, training_state
from repro.data import TaskData
from repro.distributed import World, sum_over_world
from repro.methods.base import TrainingHooks
from repro.models import to_device
from repro.metrics import compute_metrics


@dataclass
class TrainResult:
    epochs: list[dict[str, Any]] = field(default_factory=list)  # per epoch: train loss, eval metrics
    best_epoch: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)  # trainable tensors at the best epoch
    train_time_s: float = 0.0
    train_samples: int = 0
    train_tokens: int = 0
    optimizer_steps: int = 0
    # per "<split>/epoch<k>": the dev predictions and references, in the split's order (saved for re-scoring)
    predictions: dict[str, dict[str, list]] = field(default_factory=dict)


def tokenize(rows: list[dict], tokenizer: PreTrainedTokenizerBase, max_length: int,
             token_type_ids: bool | None) -> list[dict]:
    """Tokenise once, unpadded; batches are padded to their longest sequence."""
    text_b = [r["text_b"] for r in rows] if rows and "text_b" in rows[0] else None
    enc = tokenizer([r["text_a"] for r in rows], text_b, truncation=True, max_length=max_length,
                    return_token_type_ids=token_type_ids)
    return [{**{k: enc[k][i] for k in enc.keys()}, "labels": r["label"]} for i, r in enumerate(rows)]


class LengthGroupedSampler(Sampler[int]):
    """Training order with little padding (in the spirit of HF Trainer's `group_by_length`): a random permutation
    cut into mega-batches of `group` batches, each sorted by length and cut into batches, the batches then
    shuffled. Every draw comes from `generator`, so the order is fixed by the seed and restored exactly on resume
    (the epoch's generator state is checkpointed)."""

    def __init__(self, lengths: list[int], batch_size: int, generator: torch.Generator, group: int = 50):
        self.lengths, self.batch_size, self.generator, self.group = lengths, batch_size, generator, group

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        perm = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        size = self.batch_size * self.group
        batches = []
        for start in range(0, len(perm), size):
            mega = sorted(perm[start:start + size], key=lambda i: -self.lengths[i])
            batches += [mega[i:i + self.batch_size] for i in range(0, len(mega), self.batch_size)]
        order = torch.randperm(len(batches), generator=self.generator).tolist()
        order.sort(key=lambda b: len(batches[b]) < self.batch_size)  # a short batch last keeps batches aligned
        return iter([i for b in order for i in batches[b]])


def padded_fraction(features: list[dict], order: list[int], batch_size: int) -> float:
    """Share of padding tokens when `features` are batched in `order` (each batch padded to its longest)."""
    lengths = [len(features[i]["input_ids"]) for i in order]
    batches = [lengths[i:i + batch_size] for i in range(0, len(lengths), batch_size)]
    padded = sum(max(b) * len(b) for b in batches)
    return 1.0 - sum(lengths) / padded if padded else 0.0


def make_loader(features: list[dict], tokenizer: PreTrainedTokenizerBase, batch_size: int, shuffle: bool,
                generator: torch.Generator | None = None, sampler=None) -> DataLoader:
    def collate(items: list[dict]) -> dict[str, torch.Tensor]:
        labels = [it["labels"] for it in items]
        batch = tokenizer.pad([{k: v for k, v in it.items() if k != "labels"} for it in items], return_tensors="pt")
        batch["labels"] = torch.tensor(labels, dtype=torch.float32 if isinstance(labels[0], float) else torch.long)
        return dict(batch)

    return DataLoader(features, batch_size=batch_size, shuffle=shuffle and sampler is None, collate_fn=collate,
                      generator=generator, sampler=sampler)


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and LayerNorm weights (as HF Trainer)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.dim() < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def eval_loader(features: list[dict], tokenizer: PreTrainedTokenizerBase, batch_size: int) -> DataLoader:
    """Batches of similar length (sorted, longest first), so little compute goes to padding; `evaluate` puts the
    predictions back in the split's order."""
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    loader = make_loader(features, tokenizer, batch_size, shuffle=False, sampler=order)
    loader.order = order  # type: ignore[attr-defined]
    return loader


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, regression: bool,
             desc: str = "eval") -> tuple[np.ndarray, np.ndarray, float]:
    """Predictions, references and mean loss over a split, in the split's order."""
    model.eval()
    preds, refs, losses = [], [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=None):
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**batch)
        losses.append(out.loss.item() * len(batch["labels"]))
        logits = out.logits.float()
        preds.append((logits.squeeze(-1) if regression else logits.argmax(-1)).cpu().numpy())
        refs.append(batch["labels"].cpu().numpy())
    pred, ref = np.concatenate(preds), np.concatenate(refs)
    order = getattr(loader, "order", None)
    if order is not None:  # undo the length sort
        restore = np.argsort(np.asarray(order))
        pred, ref = pred[restore], ref[restore]
    return pred, ref, float(sum(losses) / max(len(ref), 1))


def split_metrics(names: list[str], predictions: dict[str, np.ndarray],
                  references: dict[str, np.ndarray]) -> dict[str, float]:
    """Metrics per eval split (`<split>/<metric>`) and over all splits pooled (MNLI has two); the unprefixed names
    are the task's headline numbers. Also what `repro.score` recomputes from saved predictions."""
    metrics = {}
    for split in predictions:
        metrics.update({f"{split}/{k}": v for k, v in compute_metrics(names, predictions[split],
                                                                      references[split]).items()})
    metrics.update(compute_metrics(names, np.concatenate(list(predictions.values())),
                                   np.concatenate(list(references.values()))))
    return metrics


def eval_metrics(model: nn.Module, loaders: dict[str, DataLoader], task: DictConfig,
                 device: torch.device) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Metrics (`split_metrics` plus `<split>/loss`), predictions and references per eval split."""
    regression = task.num_labels == 1
    losses, preds, refs = {}, {}, {}
    for split, loader in loaders.items():
        preds[split], refs[split], losses[split] = evaluate(model, loader, device, regression, desc=split)
    metrics = {f"{split}/loss": loss for split, loss in losses.items()}
    metrics.update(split_metrics(list(task.metrics), preds, refs))
    return metrics, preds, refs


def is_better(value: float, best: float | None) -> bool:
    """Whether an epoch's main metric beats the best so far; NaN (undefined metric) ranks below every number, so it
    never becomes or stays the best epoch while a defined one exists."""
    if best is None:
        return True
    if math.isnan(best):
        return not math.isnan(value)
    return not math.isnan(value) and value > best


def optimizer_step(trainable: list[torch.Tensor], max_grad_norm: float | None, optimizer: torch.optim.Optimizer,
                   scheduler: Any, hooks: TrainingHooks, result: TrainResult) -> None:
    """One optimizer step of either training loop: clip (unless max_grad_norm is 0/null), step, advance the
    schedule, count, let the method act while the gradients are still there (AdaLoRA), clear them."""
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
    optimizer.step()
    scheduler.step()
    result.optimizer_steps += 1
    hooks.after_step(result.optimizer_steps)
    optimizer.zero_grad(set_to_none=True)


def train_and_evaluate(model: nn.Module, tokenizer: PreTrainedTokenizerBase, data: TaskData, task: DictConfig,
                       train: DictConfig, max_length: int, token_type_ids: bool | None, seed: int,
                       device: torch.device, on_epoch: Callable[[dict[str, Any]], None] | None = None,
                       checkpointer: Checkpointer | None = None, world: World = World(),
                       hooks: TrainingHooks = TrainingHooks()) -> TrainResult:
    generator = torch.Generator().manual_seed(seed)
    train_features = tokenize(data.train, tokenizer, max_length, token_type_ids)
    sampler = None
    if world.distributed:
        sampler = DistributedSampler(train_features, num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed)
    elif train.get("group_by_length", False):
        sampler = LengthGroupedSampler([len(f["input_ids"]) for f in train_features], train.batch_size, generator)
    train_loader = make_loader(train_features, tokenizer, train.batch_size, shuffle=True, generator=generator,
                               sampler=sampler)
    eval_loaders = {split: eval_loader(tokenize(rows, tokenizer, max_length, token_type_ids), tokenizer,
                                       train.eval_batch_size)
                    for split, rows in data.eval.items()}
    model = to_device(model, device)
    net = model
    if world.distributed:  # gradients averaged across processes; `model` stays the unwrapped module
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = hooks.make_optimizer(optimizer_groups(model, train.weight_decay), train.learning_rate)
    steps_per_epoch = math.ceil(len(train_loader) / train.grad_accum_steps)
    total_steps = steps_per_epoch * train.epochs
    hooks.on_schedule(total_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(train.warmup_ratio * total_steps), total_steps)
    trainable = [p for p in model.parameters() if p.requires_grad]

    result = TrainResult()

    def snapshot(epoch: int, batches_done: int, loss_sum: float, n_batches: int, epoch_generator) -> dict:
        return training_state(model, optimizer, scheduler, result=result, epoch=epoch, batches_done=batches_done,
                              loss_sum=loss_sum, n_batches=n_batches, epoch_generator=epoch_generator)

    first_epoch, skip_batches, loss_sum, n_batches = 1, 0, 0.0, 0
    saved = checkpointer.load() if checkpointer else None
    if saved is not None:
        restore_training_state(saved, model, optimizer, scheduler)
        result = saved["result"]
        first_epoch, skip_batches = saved["epoch"], saved["batches_done"]
        loss_sum, n_batches = saved["loss_sum"], saved["n_batches"]
        generator.set_state(saved["epoch_generator"])
        print(f"resumed from checkpoint: epoch {first_epoch}, batch {skip_batches}, step {result.optimizer_steps}")

    main = task.main_metric
    if not world.is_main:
        checkpointer = None  # rank 0 writes; every rank resumes from its file
    for epoch in range(first_epoch, train.epochs + 1):
        model.train()
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        epoch_generator = generator.get_state()  # the data order of this epoch, for resuming inside it
        start = time.perf_counter()
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{train.epochs}", leave=False, disable=None)
        for i, batch in enumerate(bar):
            if i < skip_batches:  # already trained on before the checkpoint
                continue
            if i == skip_batches and saved is not None:
                torch.set_rng_state(saved["torch_rng"])  # dropout continues where it stopped
                saved = None
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = net(**batch).loss + hooks.extra_loss()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss {loss.item()} at epoch {epoch}, batch {i}")
            (loss / train.grad_accum_steps).backward()
            loss_sum, n_batches = loss_sum + loss.item(), n_batches + 1
            result.train_samples += len(batch["labels"])
            result.train_tokens += int(batch["attention_mask"].sum())
            if (i + 1) % train.grad_accum_steps == 0 or i + 1 == len(train_loader):
                optimizer_step(trainable, train.max_grad_norm, optimizer, scheduler, hooks, result)
                if checkpointer and checkpointer.due(result.optimizer_steps) and i + 1 < len(train_loader):
                    result.train_time_s += time.perf_counter() - start
                    start = time.perf_counter()
                    checkpointer.save(snapshot(epoch, i + 1, loss_sum, n_batches, epoch_generator))
            bar.set_postfix(loss=f"{loss.item():.4f}")
        result.train_time_s += time.perf_counter() - start
        skip_batches = 0

        metrics, preds, refs = eval_metrics(model, eval_loaders, task, device)
        for split in preds:
            result.predictions[f"{split}/epoch{epoch}"] = {"prediction": preds[split].tolist(),
                                                           "label": refs[split].tolist()}
        record = {"epoch": epoch, "train_loss": loss_sum / max(n_batches, 1), "metrics": metrics}
        loss_sum, n_batches = 0.0, 0
        result.epochs.append(record)
        if math.isnan(metrics[main]):
            warnings.warn(f"epoch {epoch}: {main} is NaN (e.g. a correlation of constant predictions); it counts "
                          "as the worst epoch", RuntimeWarning, stacklevel=1)
        if is_better(metrics[main], result.best_metrics.get(main)):
            result.best_epoch, result.best_metrics = epoch, metrics
            result.best_state = trainable_state(model)
        if on_epoch:
            on_epoch(record)
        if checkpointer and epoch < train.epochs:
            checkpointer.save(snapshot(epoch + 1, 0, 0.0, 0, generator.get_state()))
    result.train_samples, result.train_tokens = map(int, sum_over_world(world, result.train_samples,
                                                                        result.train_tokens))
    return result
