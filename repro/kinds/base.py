"""What a task kind is, and what the runner (repro/runner.py) hands it and gets back."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch
from omegaconf import DictConfig
from torch.utils.data.distributed import DistributedSampler
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from repro.checkpoint import Checkpointer
from repro.distributed import World, resolve_device
from repro.loop import OnStep, TrainResult
from repro.methods import Adapted, load_kwargs
from repro.params import ParamCounts

OnEpoch = Callable[[dict[str, Any]], None]


@dataclass
class RunContext:
    """What the runner hands a task kind besides the config."""

    device: torch.device
    on_epoch: OnEpoch
    checkpointer: Checkpointer | None = None  # resume state of this run
    init_from: Path | None = None  # weights of a finished run to start from (the paper's MNLI initialisation)
    world: World = World()  # data-parallel processes (torchrun)
    run_dir: Path | None = None  # where the run's files go (rank 0 writes)
    on_step: OnStep | None = None  # every train.log_every_steps optimizer steps (loss, lr, samples/s, grad norm)


@dataclass
class ShuffledBatches:
    """An epoch's batches of `size` training items: a permutation drawn from the loop's generator, or this process's
    DistributedSampler shard under torchrun (`repro.distributed.shard_sampler`); `collate` turns one batch's item
    indices into model inputs."""

    size: int
    batch_size: int
    generator: torch.Generator
    collate: Callable[[list[int]], dict[str, torch.Tensor]]
    sampler: DistributedSampler | None = None

    def __len__(self) -> int:
        return math.ceil((len(self.sampler) if self.sampler is not None else self.size) / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = list(self.sampler) if self.sampler is not None else \
            torch.randperm(self.size, generator=self.generator).tolist()
        for i in range(len(self)):
            yield self.collate(order[i * self.batch_size:(i + 1) * self.batch_size])


@dataclass
class Outcome:
    adapted: Adapted
    counts: ParamCounts
    train: TrainResult
    train_examples: int
    eval_examples: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)  # merged into result.json (e.g. decoded outputs)


class TaskKind(Protocol):
    """One kind of task (`task.kind`): builds the data, model and a `repro.loop.Session`, runs the shared loop,
    and says what goes into the result record beyond what every run records."""

    def method_config(self, cfg: DictConfig) -> DictConfig:
        """The method config the run actually uses (recorded in result.json)."""

    def build(self, cfg: DictConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> Adapted:
        """The run's model with its method applied, fresh method weights (`run` trains it; `repro.export` and
        `repro.evaluate` load a run's weights into it)."""

    def check_local_data(self, task: DictConfig, root: str) -> None:
        """The offline data files the task reads under `root` exist (DataError, one line), before anything loads."""

    def tokenizer(self, cfg: DictConfig) -> PreTrainedTokenizerBase:
        """The run's tokenizer (a language model's has a pad token)."""

    def meta_model(self, config: PretrainedConfig, model_cfg: DictConfig, method_cfg: DictConfig,
                   num_labels: int) -> Adapted:
        """The model with the method applied as training applies it, built from its transformers `config` alone (no
        weights; `num_labels` for a classifier's head) on the current default device; the planner builds it on
        `meta` to count parameters."""

    def paper_params(self, row_id: str, task_cfg: DictConfig) -> str | None:
        """The |Theta| the paper prints for an experiment's paper row (conf/paper/), or None where it prints none."""

    def attention_span(self, cfg: DictConfig, seq_len: int) -> int | None:
        """Keys each query attends to in training when not the whole sequence (LongLoRA's S²-Attn), for the
        planner's memory estimate."""

    def run(self, cfg: DictConfig, ctx: RunContext) -> Outcome:
        """Data -> model -> method -> `repro.loop.train`."""

    def evaluate(self, cfg: DictConfig, adapted: Adapted, ctx: RunContext) -> Outcome:
        """Eval data -> `repro.loop.evaluate_once` on an already adapted model (`repro.evaluate`: imported
        adapters scored as trained ones are); one epoch, 0, with no training."""


def pretrained_kwargs(cfg: DictConfig) -> dict:
    """What a run's method adds to `from_pretrained` (QLoRA: its 4-bit loading on the run's device)."""
    return load_kwargs(cfg.method, cfg.model, resolve_device(cfg.train.device))


def method_report(adapted: Adapted) -> dict[str, Any]:
    """What the method reports after training (e.g. AdaLoRA's final ranks), under `method_state` in result.json."""
    report = adapted.hooks.report()
    return {"method_state": report} if report else {}
