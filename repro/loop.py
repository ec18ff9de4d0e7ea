"""The training loop of every task kind: AdamW over `optimizer_groups`, linear schedule with warm-up, gradient
accumulation, clipping, the method's hooks, resumable checkpoints (same data order, same RNG streams), DDP,
evaluation every epoch (and every `train.eval_every_steps` optimizer steps inside one) and the best evaluation's
weights kept (the paper reports each run's best epoch).

What differs between task kinds (data, batches, loss inputs, evaluation, what is saved) comes from a `Session`
(repro/kinds/); this module never looks at `task.kind`. A plain PyTorch loop rather than HF Trainer: every
method (peft or our own wrappers) is an `nn.Module`, and the loop stays short enough to read in one sitting.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sized

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch import nn
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from repro.checkpoint import Checkpointer, restore_training_state, trainable_state, training_state
from repro.distributed import World, sum_over_world
from repro.methods.base import TrainingHooks
from repro.precision import resolve_precision

# a best metric within this of the trivial baseline counts as at chance (metrics are fractions or correlations)
CHANCE_EPS = 1e-6


@dataclass
class TrainResult:
    epochs: list[dict[str, Any]] = field(default_factory=list)  # per epoch: train loss, eval metrics
    best_epoch: int = -1  # the epoch of the best evaluation (its end, or a step inside it: `best_step`)
    best_step: int | None = None  # the optimizer step of the best evaluation
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)  # trainable tensors at the best epoch
    train_time_s: float = 0.0
    train_samples: int = 0
    train_tokens: int = 0
    optimizer_steps: int = 0
    # per "<split>/epoch<k>": the dev predictions and references, in the split's order (saved for re-scoring)
    predictions: dict[str, dict[str, list]] = field(default_factory=dict)
    # per "<split>/epoch<k>": the decoded outputs' file, relative to the run directory (generation)
    outputs: dict[str, str] = field(default_factory=dict)
    precision: str = "fp32"  # what ran (train.precision resolved on the device)


class Batches(Sized, Iterable[dict[str, torch.Tensor]], Protocol):
    """One epoch of training batches (a DataLoader or the like); `sampler` may be a DistributedSampler."""


class Session(Protocol):
    """One run's data and model as the loop sees them; a task kind builds it (repro/kinds/)."""

    def train_batches(self, generator: torch.Generator, world: World) -> Batches:
        """The training batches of every epoch; their order comes from `generator` (checkpointed per epoch)."""

    def loss(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch (`net` may be the DDP wrapper)."""

    def evaluate(self, model: nn.Module, epoch: int, result: TrainResult) -> dict[str, float]:
        """This epoch's metrics on the eval splits; records what it saves (predictions, outputs) in `result`."""


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and LayerNorm weights (as HF Trainer)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.dim() < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_steps(train: DictConfig, total_steps: int) -> int:
    """`train.warmup_steps` where set (the paper's GPT-2 recipe gives steps), else `train.warmup_ratio` of all."""
    steps = train.get("warmup_steps")
    if steps is None:
        return int(train.warmup_ratio * total_steps)
    if steps >= total_steps:
        print(f"note: warm-up ({steps} steps) >= all {total_steps} optimizer steps: the learning rate never peaks")
    return steps


def lr_schedule(optimizer: torch.optim.Optimizer, train: DictConfig, total_steps: int) -> Any:
    """`train.lr_schedule`: `linear` (warm-up, then linear decay to 0 at the last step: the LoRA paper's) or
    `constant` (warm-up, then the peak rate to the end: LongLoRA's released fine-tune.py)."""
    name, warmup = train.get("lr_schedule", "linear"), warmup_steps(train, total_steps)
    if name == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    assert name == "constant", name  # repro.config.validate allows these two
    return get_constant_schedule_with_warmup(optimizer, warmup)


def is_better(value: float, best: float | None) -> bool:
    """Whether an epoch's main metric beats the best so far; NaN (undefined metric) ranks below every number, so it
    never becomes or stays the best epoch while a defined one exists."""
    if best is None:
        return True
    if math.isnan(best):
        return not math.isnan(value)
    return not math.isnan(value) and value > best


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Checkpointing in the Hugging Face model inside `model` (a peft model, or our wrapper with a pooling head),
    non-reentrant, so that frozen embeddings (LoRA, adapters) need no inputs that require grad."""
    from transformers import PreTrainedModel

    from repro.errors import ConfigError

    inner = next((m for m in model.modules() if isinstance(m, PreTrainedModel) and m.supports_gradient_checkpointing),
                 None)
    if inner is None:
        raise ConfigError(f"train.gradient_checkpointing: {type(model).__name__} has no Hugging Face model that "
                          "supports it")
    inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def plateaued(result: TrainResult, epoch: int, patience: int | None, main_metric: str,
              chance: float | None = None, min_epochs: int | None = None) -> bool:
    """Early stopping: the main dev metric has not improved for `patience` epochs (None or 0: never stop early).
    A run whose best is still at or below `chance` (the trivial baseline, plus its noise band for a correlation:
    `repro.metrics.chance_level`) has not started learning, so it is not a plateau: such runs train on (CoLA's LoRA
    sat at MCC 0 for one or two epochs, then rose; STS-B's at Pearson 0.01-0.05 for three, then reached 0.79).
    No stop before epoch `min_epochs` (None: any epoch): early in a long schedule the rate is at its peak and the dev
    metric swings (STS-B at batch 8: Pearson 69.2, 65.0, 52.6 over epochs 1-3, a run that later recovers would have
    stopped). The learning-rate schedule still spans `train.epochs`, the budget's maximum."""
    if (not patience or result.best_epoch <= 0 or epoch - result.best_epoch < patience
            or (min_epochs is not None and epoch < min_epochs)):
        return False
    best = result.best_metrics.get(main_metric)
    return chance is None or best is None or math.isnan(best) or best > chance + CHANCE_EPS


def optimizer_step(trainable: list[torch.Tensor], max_grad_norm: float | None, optimizer: torch.optim.Optimizer,
                   scheduler: Any, hooks: TrainingHooks, result: TrainResult,
                   scaler: torch.amp.GradScaler) -> float | None:
    """Unscale (fp16), clip (unless max_grad_norm is 0/null), step (skipped by the scaler on an inf/NaN gradient),
    advance the schedule, count, let the method act while the gradients are still there (AdaLoRA), clear them.
    Returns the gradient norm before clipping (None without clipping: it is not computed then)."""
    scaler.unscale_(optimizer)
    norm = float(torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)) if max_grad_norm else None
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    result.optimizer_steps += 1
    hooks.after_step(result.optimizer_steps)
    optimizer.zero_grad(set_to_none=True)
    return norm


def batch_size_and_tokens(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """Examples in a batch and its real (unpadded) tokens, encoder and decoder side."""
    return len(batch["input_ids"]), sum(int(v.sum()) for k, v in batch.items() if k.endswith("attention_mask"))


OnStep = Callable[[int, dict[str, float]], None]  # (optimizer step, train/loss, train/lr, ...) e.g. to W&B


class Progress:
    """Every `every` optimizer steps, and at least every `every_s` seconds (step, loss, lr, samples/s, gradient
    norm, ETA): a line on stdout when it is not a terminal (the run's log, SLURM, joblib; the tqdm bar is off
    there), and `on_step` (the experiment logger) every `every` steps; and one line per epoch with its eval
    metrics."""

    def __init__(self, every: int | None, total_steps: int, enabled: bool | None = None,
                 on_step: OnStep | None = None, every_s: float | None = None):
        self.every, self.total, self.on_step, self.every_s = every, total_steps, on_step, every_s
        self.enabled = bool(every) and (not sys.stdout.isatty() if enabled is None else enabled)
        self.start, self.start_step, self.samples = time.perf_counter(), None, 0
        self.printed_at = self.start

    def evaluation(self, step: int, metrics: dict[str, float]) -> None:
        """A mid-epoch evaluation (`train.eval_every_steps`): to `on_step` as eval_step/<metric> (epoch ends log
        eval/<metric>), and a line."""
        if self.on_step:
            self.on_step(step, {f"eval_step/{k}": v for k, v in metrics.items()})
        if self.enabled:
            print(f"step {step}/{self.total} eval: {headline(metrics)}", flush=True)

    def step(self, step: int, loss: float, lr: float, samples: int, grad_norm: float | None = None) -> None:
        if not self.every or not (self.enabled or self.on_step):
            return
        if self.start_step is None:  # measured from the first step this process ran (also after a resume)
            self.start_step, self.start, self.samples = step - 1, time.perf_counter(), 0
            self.printed_at = self.start
        self.samples += samples
        now = time.perf_counter()
        due = not step % self.every or step == self.total
        overdue = self.every_s is not None and now - self.printed_at >= self.every_s
        if not (due or overdue):
            return
        elapsed = max(now - self.start, 1e-9)
        eta = elapsed / max(step - self.start_step, 1) * (self.total - step)
        if self.on_step and due:
            values = {"train/loss": loss, "train/lr": lr, "train/samples_per_s": self.samples / elapsed}
            self.on_step(step, values if grad_norm is None else {**values, "train/grad_norm": grad_norm})
        if self.enabled:
            self.printed_at = now
            print(f"step {step}/{self.total} loss {loss:.4f} lr {lr:.3g} {self.samples / elapsed:.1f} samples/s "
                  f"eta {eta:.0f}s", flush=True)

    def epoch(self, record: dict[str, Any]) -> None:
        if self.enabled:
            print(f"epoch {record['epoch']}: train_loss {record['train_loss']:.4f} {headline(record['metrics'])}"
                  .rstrip(), flush=True)


def headline(metrics: dict[str, float]) -> str:
    """The task's headline metrics (not those per split) as `name=value` words."""
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if "/" not in k)


def broadcast_metrics(world: World, metrics: dict[str, float]) -> dict[str, float]:
    """Rank 0's metrics on every rank (a kind may evaluate on rank 0 only, e.g. decoding)."""
    if not world.distributed:
        return metrics
    box = [metrics]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def train(model: nn.Module, session: Session, train_cfg: DictConfig, main_metric: str, seed: int,
          device: torch.device, hooks: TrainingHooks = TrainingHooks(), world: World = World(),
          checkpointer: Checkpointer | None = None,
          on_epoch: Callable[[dict[str, Any]], None] | None = None, on_step: OnStep | None = None,
          chance: float | None = None) -> TrainResult:
    """Train `model` (already on `device`) for `train_cfg.epochs`, evaluating after each epoch and every
    `train_cfg.eval_every_steps` optimizer steps inside one (`chance`: the main metric's level of a run that has
    not started learning, which early stopping does not take for a plateau). The best evaluation, at an epoch's
    end or a step, gives `best_metrics` and `best_state`; a step evaluation is kept in its epoch's record under
    `step_evals` (without predictions or outputs: those saved are the epoch's)."""
    generator = torch.Generator().manual_seed(seed)
    batches = session.train_batches(generator, world)
    if train_cfg.get("gradient_checkpointing", False):
        enable_gradient_checkpointing(model)
    net = model
    if world.distributed:  # gradients averaged across processes; `model` stays the unwrapped module
        device_ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if train_cfg.get("compile", False):
        net = torch.compile(net)  # the training forward only; evaluation and decoding run `model` as it is
    optimizer = hooks.make_optimizer(optimizer_groups(model, train_cfg.weight_decay), train_cfg.learning_rate)
    steps_per_epoch = math.ceil(len(batches) / train_cfg.grad_accum_steps)
    total_steps = steps_per_epoch * train_cfg.epochs
    max_steps = train_cfg.get("max_steps")
    if max_steps:  # a budget in optimizer steps: the schedule ends there, and so does training (then one evaluation)
        total_steps = min(total_steps, max_steps)
    hooks.on_schedule(total_steps)
    scheduler = lr_schedule(optimizer, train_cfg, total_steps)
    trainable = [p for p in model.parameters() if p.requires_grad]
    progress = Progress(train_cfg.get("log_every_steps"), total_steps, on_step=on_step,
                        every_s=train_cfg.get("log_every_seconds"))
    precision = resolve_precision(train_cfg.get("precision", "fp32"), device)
    scaler = precision.grad_scaler()
    eval_every = train_cfg.get("eval_every_steps")

    result = TrainResult(precision=precision.name)

    def snapshot(epoch: int, batches_done: int, loss_sum: float, n_batches: int, epoch_generator) -> dict:
        return training_state(model, optimizer, scheduler, result=result, epoch=epoch, batches_done=batches_done,
                              loss_sum=loss_sum, n_batches=n_batches, epoch_generator=epoch_generator,
                              scaler=scaler.state_dict(), step_evals=step_evals)

    def evaluate(epoch: int, into: TrainResult) -> dict[str, float]:
        with precision.autocast():  # evaluation and decoding in the training precision
            return broadcast_metrics(world, session.evaluate(model, epoch, into))

    def keep_if_best(epoch: int, metrics: dict[str, float]) -> None:
        if main_metric not in metrics:  # a generation kind may decode (and score) only after the last epoch
            return
        if math.isnan(metrics[main_metric]):
            warnings.warn(f"epoch {epoch}, step {result.optimizer_steps}: {main_metric} is NaN (e.g. a correlation "
                          "of constant predictions); it counts as the worst evaluation", RuntimeWarning, stacklevel=1)
        if is_better(metrics[main_metric], result.best_metrics.get(main_metric)):
            result.best_epoch, result.best_step, result.best_metrics = epoch, result.optimizer_steps, metrics
            result.best_state = trainable_state(model)

    first_epoch, skip_batches, loss_sum, n_batches = 1, 0, 0.0, 0
    step_evals: list[dict[str, Any]] = []  # this epoch's evaluations at steps inside it
    saved = checkpointer.load(allowed=[TrainResult]) if checkpointer else None
    if saved is not None:
        restore_training_state(saved, model, optimizer, scheduler)
        if saved.get("scaler"):  # fp16: the loss scale and its growth tracker continue
            scaler.load_state_dict(saved["scaler"])
        result = saved["result"]
        first_epoch, skip_batches = saved["epoch"], saved["batches_done"]
        loss_sum, n_batches = saved["loss_sum"], saved["n_batches"]
        step_evals = saved.get("step_evals", [])
        generator.set_state(saved["epoch_generator"])
        print(f"resumed from checkpoint: epoch {first_epoch}, batch {skip_batches}, step {result.optimizer_steps}")

    if not world.is_main:
        checkpointer = None  # rank 0 writes; every rank resumes from its file
    sampler = getattr(batches, "sampler", None)
    for epoch in range(first_epoch, train_cfg.epochs + 1):
        model.train()
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        epoch_generator = generator.get_state()  # the data order of this epoch, for resuming inside it
        start = time.perf_counter()
        bar = tqdm(batches, desc=f"epoch {epoch}/{train_cfg.epochs}", leave=False, disable=None)
        for i, batch in enumerate(bar):
            if i < skip_batches:  # already trained on before the checkpoint
                continue
            if i == skip_batches and saved is not None:
                torch.set_rng_state(saved["torch_rng"])  # dropout continues where it stopped
                saved = None
            batch = {k: v.to(device) for k, v in batch.items()}
            with precision.autocast():
                loss = session.loss(net, batch) + hooks.extra_loss()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss {loss.item()} at epoch {epoch}, batch {i}")
            scaler.scale(loss / train_cfg.grad_accum_steps).backward()
            loss_sum, n_batches = loss_sum + loss.item(), n_batches + 1
            samples, tokens = batch_size_and_tokens(batch)
            result.train_samples += samples
            result.train_tokens += tokens
            if (i + 1) % train_cfg.grad_accum_steps == 0 or i + 1 == len(batches):
                norm = optimizer_step(trainable, train_cfg.max_grad_norm, optimizer, scheduler, hooks, result, scaler)
                progress.step(result.optimizer_steps, loss.item(), scheduler.get_last_lr()[0],
                              samples * train_cfg.grad_accum_steps * world.size, norm)
                if result.optimizer_steps >= total_steps:  # train.max_steps reached inside this epoch
                    break
                if eval_every and not result.optimizer_steps % eval_every and i + 1 < len(batches):
                    result.train_time_s += time.perf_counter() - start
                    metrics = evaluate(epoch, TrainResult())  # predictions and outputs: the epoch's are kept
                    step_evals.append({"step": result.optimizer_steps, "metrics": metrics})
                    keep_if_best(epoch, metrics)
                    progress.evaluation(result.optimizer_steps, metrics)
                    model.train()
                    start = time.perf_counter()
                if checkpointer and checkpointer.due(result.optimizer_steps) and i + 1 < len(batches):
                    result.train_time_s += time.perf_counter() - start
                    start = time.perf_counter()
                    checkpointer.save(snapshot(epoch, i + 1, loss_sum, n_batches, epoch_generator))
            bar.set_postfix(loss=f"{loss.item():.4f}")
        result.train_time_s += time.perf_counter() - start
        skip_batches = 0

        metrics = evaluate(epoch, result)
        record = {"epoch": epoch, "train_loss": loss_sum / max(n_batches, 1), "metrics": metrics,
                  **({"step_evals": step_evals} if step_evals else {})}
        loss_sum, n_batches, step_evals = 0.0, 0, []
        result.epochs.append(record)
        keep_if_best(epoch, metrics)
        progress.epoch(record)
        if on_epoch:
            on_epoch(record)
        if epoch < train_cfg.epochs and plateaued(result, epoch, train_cfg.get("early_stopping_patience"),
                                                  main_metric, chance, train_cfg.get("early_stopping_min_epochs")):
            print(f"early stop after epoch {epoch}: {main_metric} not improved since epoch {result.best_epoch}",
                  flush=True)
            break
        if result.optimizer_steps >= total_steps:
            break
        if checkpointer and epoch < train_cfg.epochs:
            checkpointer.save(snapshot(epoch + 1, 0, 0.0, 0, generator.get_state()))
    result.train_samples, result.train_tokens = map(int, sum_over_world(world, result.train_samples,
                                                                        result.train_tokens))
    return result


def evaluate_once(model: nn.Module, session: Session, train_cfg: DictConfig, device: torch.device,
                  epoch: int = 0) -> TrainResult:
    """Score `model` (already on `device`) as `train` scores an epoch, without training: the same session
    evaluation (metrics, predictions or decoded outputs) under the run's precision, recorded as one epoch
    (`epoch` 0: no training happened) that is also the best. Used by `repro.evaluate` for imported adapters, so that
    they are scored exactly as trained ones."""
    precision = resolve_precision(train_cfg.get("precision", "fp32"), device)
    result = TrainResult(precision=precision.name)
    with precision.autocast():
        metrics = session.evaluate(model, epoch, result)
    result.epochs.append({"epoch": epoch, "train_loss": None, "metrics": metrics})
    result.best_epoch, result.best_metrics = epoch, metrics
    return result
