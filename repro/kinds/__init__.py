"""Task kinds keyed by `task.kind`: what differs between classification, generation and long_context (language
modelling at an extended context, LongLoRA) (data, loss inputs,
evaluation, what is saved); the training loop they share is repro/loop.py, the runner repro/runner.py.

A new kind: a module here with a class following `repro.kinds.base.TaskKind` (and a `repro.loop.Session` for its
data), one line in `KINDS`, and `kind: <name>` in its task configs."""

from __future__ import annotations

from omegaconf import DictConfig

from repro.errors import ConfigError
from repro.kinds.base import Outcome, RunContext, TaskKind
from repro.kinds.classification import Classification
from repro.kinds.generation import Generation
from repro.kinds.long_context import LongContext

KINDS: dict[str, TaskKind] = {"classification": Classification(), "generation": Generation(),
                              "long_context": LongContext()}


def kind_of(cfg: DictConfig) -> TaskKind:
    try:
        return KINDS[cfg.task.kind]
    except KeyError:
        raise ConfigError(f"unknown task.kind '{cfg.task.kind}'; choose one of: {', '.join(KINDS)}") from None


__all__ = ["KINDS", "Outcome", "RunContext", "TaskKind", "kind_of"]
