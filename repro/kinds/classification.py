"""Classification (GLUE): sentence (pair) classification or regression (STS-B) with a head on the encoder.

Tokenised once, unpadded; training batches padded to their longest sequence (optionally grouped by length);
evaluation on length-sorted batches, predictions put back in the split's order and saved every epoch for
`repro.score`. Metrics per eval split and pooled over all splits (MNLI has two).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Sampler
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from repro.checkpoint import Checkpointer
from repro.data import TaskData, load_task_data
from repro.data.glue import check_local_data
from repro.distributed import World, shard_sampler
from repro.errors import ConfigError
from repro.kinds.base import Outcome, RunContext, method_report, pretrained_kwargs
from repro.loop import OnStep, TrainResult, evaluate_once, train
from repro.methods import apply_method
from repro.methods.base import Adapted, TrainingHooks
from repro.metrics import chance_level, compute_metrics, trivial_baseline
from repro.models import POOLINGS, load_model, load_tokenizer, to_device
from repro.paper import paper_data
from repro.params import count_parameters
from repro.runlog import with_progress


def tokenize(rows: list[dict], tokenizer: PreTrainedTokenizerBase, max_length: int,
             token_type_ids: bool | None) -> list[dict]:
    """Tokenise once, unpadded; batches are padded to their longest sequence."""
    if not rows:  # e.g. no training split when an imported adapter is only evaluated
        return []
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
    for batch in with_progress(loader, desc):
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
        preds[split], refs[split], losses[split] = evaluate(model, loader, device, regression, desc=f"eval {split}")
    metrics = {f"{split}/loss": loss for split, loss in losses.items()}
    metrics.update(split_metrics(list(task.metrics), preds, refs))
    return metrics, preds, refs


@dataclass
class ClassificationSession:
    """The loop's view of a classification run (`repro.loop.Session`)."""

    features: list[dict]
    eval_loaders: dict[str, DataLoader]
    tokenizer: PreTrainedTokenizerBase
    task: DictConfig
    train_cfg: DictConfig
    seed: int
    device: torch.device

    def train_batches(self, generator: torch.Generator, world: World) -> DataLoader:
        sampler = shard_sampler(self.features, world, self.seed)
        if sampler is None and self.train_cfg.get("group_by_length", False):
            sampler = LengthGroupedSampler([len(f["input_ids"]) for f in self.features], self.train_cfg.batch_size,
                                           generator)
        return make_loader(self.features, self.tokenizer, self.train_cfg.batch_size, shuffle=True,
                           generator=generator, sampler=sampler)

    def loss(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return net(**batch).loss

    def evaluate(self, model: nn.Module, epoch: int, result: TrainResult) -> dict[str, float]:
        metrics, preds, refs = eval_metrics(model, self.eval_loaders, self.task, self.device)
        for split in preds:
            result.predictions[f"{split}/epoch{epoch}"] = {"prediction": preds[split].tolist(),
                                                           "label": refs[split].tolist()}
        return metrics


def make_session(data: TaskData, tokenizer: PreTrainedTokenizerBase, task: DictConfig, train_cfg: DictConfig,
                 max_length: int, token_type_ids: bool | None, seed: int,
                 device: torch.device) -> ClassificationSession:
    """Tokenise the training and eval splits once; evaluation batches sorted by length."""
    return ClassificationSession(
        tokenize(data.train, tokenizer, max_length, token_type_ids),
        {split: eval_loader(tokenize(rows, tokenizer, max_length, token_type_ids), tokenizer, train_cfg.eval_batch_size)
         for split, rows in data.eval.items()},
        tokenizer, task, train_cfg, seed, device)


def train_and_evaluate(model: nn.Module, tokenizer: PreTrainedTokenizerBase, data: TaskData, task: DictConfig,
                       train_cfg: DictConfig, max_length: int, token_type_ids: bool | None, seed: int,
                       device: torch.device, on_epoch=None, checkpointer: Checkpointer | None = None,
                       world: World = World(), hooks: TrainingHooks = TrainingHooks(),
                       on_step: OnStep | None = None, chance: float | None = None) -> TrainResult:
    """Tokenise `data`, train `model` with `repro.loop.train` and evaluate every epoch (`chance`: the main metric's
    level of a run that has not started learning, which early stopping does not take for a plateau)."""
    session = make_session(data, tokenizer, task, train_cfg, max_length, token_type_ids, seed, device)
    return train(to_device(model, device), session, train_cfg, task.main_metric, seed, device, hooks=hooks,
                 world=world, checkpointer=checkpointer, on_epoch=on_epoch, on_step=on_step, chance=chance)


def classification_baseline(task: DictConfig, data) -> dict[str, float]:
    """A constant predictor's metrics on the eval splits, named like the run's metrics
    (`repro.metrics.trivial_baseline`)."""
    refs = {split: np.asarray([r["label"] for r in rows]) for split, rows in data.eval.items()}
    out = {f"{split}/{k}": v for split, ref in refs.items() for k, v in trivial_baseline(task.metrics, ref).items()}
    out.update(trivial_baseline(task.metrics, np.concatenate(list(refs.values()))))
    return out


class Classification:
    """GLUE: sequence classification (or regression for STS-B) with a head on the encoder."""

    def method_config(self, cfg: DictConfig) -> DictConfig:
        return cfg.method

    def build(self, cfg: DictConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> Adapted:
        return apply_method(load_model(cfg.model, cfg.task.num_labels, **pretrained_kwargs(cfg)), cfg.method,
                            cfg.model)

    def check_local_data(self, task: DictConfig, root: str) -> None:
        check_local_data(task, root)

    def tokenizer(self, cfg: DictConfig) -> PreTrainedTokenizerBase:
        return load_tokenizer(cfg.model)

    def meta_model(self, config: PretrainedConfig, model_cfg: DictConfig, method_cfg: DictConfig,
                   num_labels: int) -> Adapted:
        from transformers import AutoModelForSequenceClassification

        config.num_labels = num_labels
        model = AutoModelForSequenceClassification.from_config(config)
        POOLINGS[model_cfg.get("pooling", "cls")](model)  # the head training builds: mean pooling drops the pooler
        return apply_method(model, method_cfg, model_cfg)

    def paper_params(self, row_id: str, task_cfg: DictConfig) -> str | None:
        """Table 2's printed |Theta| (conf/paper/table2_glue.yaml)."""
        rows = paper_data("table2_glue")["rows"]
        if row_id not in rows:
            raise ConfigError(f"paper_row {row_id!r} is not a row of Table 2 (table2_glue.yaml)")
        return rows[row_id]["params"]["printed"]

    def attention_span(self, cfg: DictConfig, seq_len: int) -> int | None:
        return None

    def run(self, cfg: DictConfig, ctx: RunContext) -> Outcome:
        data = load_task_data(cfg.task, cfg.data)
        tokenizer = load_tokenizer(cfg.model)
        adapted = self.build(cfg)
        if ctx.init_from is not None:
            adapted.load(ctx.init_from, include_head=False)  # the head is task-specific and starts fresh
        counts = count_parameters(adapted.model, list(cfg.model.head))
        print(f"{cfg.task.name}/{cfg.model.name}/{cfg.method.name}: {len(data.train)} train examples; trainable "
              f"{counts.trainable:,} + head {counts.head:,} of {counts.total:,} parameters")
        baseline = classification_baseline(cfg.task, data)
        main = cfg.task.main_metric
        chance = chance_level(main, baseline[main], sum(map(len, data.eval.values()))) if main in baseline else None
        result = train_and_evaluate(
            adapted.model, tokenizer, data, cfg.task, cfg.train,
            max_length=cfg.data.max_seq_len - adapted.reserved_tokens,
            token_type_ids=cfg.model.get("token_type_ids"), seed=cfg.seed, device=ctx.device, on_epoch=ctx.on_epoch,
            on_step=ctx.on_step,
            checkpointer=ctx.checkpointer, world=ctx.world, hooks=adapted.hooks,
            chance=chance)
        return Outcome(adapted, counts, result, len(data.train), {s: len(r) for s, r in data.eval.items()},
                       {**method_report(adapted), "trivial_baseline": baseline})

    def evaluate(self, cfg: DictConfig, adapted: Adapted, ctx: RunContext) -> Outcome:
        """Score an adapted model without training (`repro.evaluate`): the eval splits, metrics, predictions and
        trivial baseline exactly as a training run records its epochs."""
        data = load_task_data(cfg.task, cfg.data, with_train=False)  # nothing is trained
        session = make_session(data, load_tokenizer(cfg.model), cfg.task, cfg.train,
                               cfg.data.max_seq_len - adapted.reserved_tokens, cfg.model.get("token_type_ids"),
                               cfg.seed, ctx.device)
        model = to_device(adapted.model, ctx.device)
        result = evaluate_once(model, session, cfg.train, ctx.device)
        return Outcome(adapted, count_parameters(model, list(cfg.model.head)), result, 0,
                       {s: len(r) for s, r in data.eval.items()},
                       {"trivial_baseline": classification_baseline(cfg.task, data)})
