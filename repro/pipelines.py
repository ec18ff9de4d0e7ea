"""Task pipelines keyed by `task.kind`: data -> model -> method -> train/evaluate for one kind of task.

`repro.train.run` does what every run shares (validation, run id, skip, result record); a pipeline returns
the adapted model, its parameter counts and the training outcome. Generation tasks add their own entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig

from repro.checkpoint import Checkpointer
from repro.data import load_task_data
from repro.distributed import World
from repro.methods import Adapted, apply_method, load_kwargs
from repro.metrics import trivial_baseline
from repro.models import load_model, load_tokenizer
from repro.params import ParamCounts, count_parameters
from repro.trainer import TrainResult, train_and_evaluate

OnEpoch = Callable[[dict[str, Any]], None]


@dataclass
class RunContext:
    """What the runner hands a pipeline besides the config."""

    device: torch.device
    on_epoch: OnEpoch
    checkpointer: Checkpointer | None = None  # resume state of this run
    init_from: Path | None = None  # weights of a finished run to start from (the paper's MNLI initialisation)
    world: World = World()  # data-parallel processes (torchrun)


@dataclass
class PipelineOutcome:
    adapted: Adapted
    counts: ParamCounts
    train: TrainResult
    train_examples: int
    eval_examples: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)  # merged into result.json (e.g. decoded outputs)


def method_report(adapted: Adapted) -> dict[str, Any]:
    """What the method reports after training (e.g. AdaLoRA's final ranks), under `method_state` in result.json."""
    report = adapted.hooks.report()
    return {"method_state": report} if report else {}


def run_classification(cfg: DictConfig, ctx: RunContext) -> PipelineOutcome:
    """GLUE: sequence classification (or regression for STS-B) with a head on the encoder."""
    data = load_task_data(cfg.task, cfg.data)
    tokenizer = load_tokenizer(cfg.model)
    adapted = apply_method(load_model(cfg.model, cfg.task.num_labels, **load_kwargs(cfg.method)), cfg.method,
                           cfg.model)
    if ctx.init_from is not None:
        adapted.load(ctx.init_from, include_head=False)  # the head is task-specific and starts fresh
    counts = count_parameters(adapted.model, list(cfg.model.head))
    print(f"{cfg.task.name}/{cfg.model.name}/{cfg.method.name}: {len(data.train)} train examples; trainable "
          f"{counts.trainable:,} + head {counts.head:,} of {counts.total:,} parameters")
    outcome = train_and_evaluate(
        adapted.model, tokenizer, data, cfg.task, cfg.train,
        max_length=cfg.data.max_seq_len - adapted.reserved_tokens,
        token_type_ids=cfg.model.get("token_type_ids"), seed=cfg.seed, device=ctx.device, on_epoch=ctx.on_epoch,
        checkpointer=ctx.checkpointer, world=ctx.world, hooks=adapted.hooks)
    return PipelineOutcome(adapted, counts, outcome, len(data.train), {s: len(r) for s, r in data.eval.items()},
                           {**method_report(adapted), "trivial_baseline": classification_baseline(cfg.task, data)})


def classification_baseline(task: DictConfig, data) -> dict[str, float]:
    """A constant predictor's metrics on the eval splits, named like the run's metrics
    (`repro.metrics.trivial_baseline`)."""
    refs = {split: np.asarray([r["label"] for r in rows]) for split, rows in data.eval.items()}
    out = {f"{split}/{k}": v for split, ref in refs.items() for k, v in trivial_baseline(task.metrics, ref).items()}
    out.update(trivial_baseline(task.metrics, np.concatenate(list(refs.values()))))
    return out


def run_generation(cfg: DictConfig, ctx: RunContext) -> PipelineOutcome:
    """E2E, WebNLG, DART, SAMSum with decoders or encoder-decoders (repro/generation/pipeline.py, imported on use)."""
    from repro.generation.pipeline import run_generation as run

    return run(cfg, ctx)


PIPELINES: dict[str, Callable[[DictConfig, RunContext], PipelineOutcome]] = {
    "classification": run_classification,
    "generation": run_generation,
}
