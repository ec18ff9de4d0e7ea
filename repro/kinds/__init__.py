"""Task kinds keyed by `task.kind`: what differs between classification, generation and long_context (language
modelling at an extended context, LongLoRA) (data, loss inputs, evaluation, what is saved); the training loop they
share is repro/loop.py, the runner repro/runner.py.

Two layers, so that light modules (config checks, tables, the report) can ask about a kind without importing torch:
`TRAITS` holds plain facts about each kind; `kind_of(cfg)` imports and returns the kind's class (data, model,
method, training, evaluation).

A new kind: a module here with a class following `repro.kinds.base.TaskKind` (and a `repro.loop.Session` for its
data), one line in `KINDS` and one in `TRAITS`, and `kind: <name>` in its task configs."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any

from omegaconf import DictConfig

from repro.errors import ConfigError


@dataclass(frozen=True)
class Traits:
    """What other stages need to know about a kind without building anything."""

    language_model: bool  # its model is a language model: the planner builds one, an encoder cannot run it
    metric_scale: float  # a stored metric times this is the value tables show (fractions -> percent)
    dev_curve: bool  # its per-epoch main dev metric is on the table's scale (the verdicts' convergence rule)
    holdout_split: bool  # data.holdout_fraction can hold part of its training data out (the learning-rate search)
    decodes: bool  # its evaluation decodes text with beam search (repro.bench.decode)
    copy_input_baseline: bool  # its trivial baseline is the input copied as the output (scored from saved outputs)


TRAITS: dict[str, Traits] = {
    "classification": Traits(language_model=False, metric_scale=100.0, dev_curve=True, holdout_split=True,
                             decodes=False, copy_input_baseline=False),
    "generation": Traits(language_model=True, metric_scale=1.0, dev_curve=False, holdout_split=False,
                         decodes=True, copy_input_baseline=True),
    "long_context": Traits(language_model=True, metric_scale=1.0, dev_curve=False, holdout_split=False,
                           decodes=False, copy_input_baseline=False),
}
DEFAULT_KIND = "classification"  # records and configs written before task.kind existed

# "module:Class" of each kind, imported on first use
KINDS: dict[str, str] = {"classification": "repro.kinds.classification:Classification",
                         "generation": "repro.kinds.generation:Generation",
                         "long_context": "repro.kinds.long_context:LongContext"}
_built: dict[str, Any] = {}  # name -> its class instance (a repro.kinds.base.TaskKind)


def traits(kind: str | None) -> Traits:
    """The traits of a task kind by name (None: DEFAULT_KIND)."""
    try:
        return TRAITS[kind or DEFAULT_KIND]
    except KeyError:
        raise ConfigError(f"unknown task.kind '{kind}'; choose one of: {', '.join(TRAITS)}") from None


def kind_named(name: str) -> Any:
    """The kind's class instance (a `repro.kinds.base.TaskKind`; not imported here, see the module docstring)."""
    if name not in KINDS:
        raise ConfigError(f"unknown task.kind '{name}'; choose one of: {', '.join(KINDS)}")
    if name not in _built:
        module, _, cls = KINDS[name].partition(":")
        _built[name] = getattr(import_module(module), cls)()
    return _built[name]


def kind_of(cfg: DictConfig) -> Any:
    return kind_named(cfg.task.kind)


def __getattr__(name: str):
    """`repro.kinds.RunContext` etc. without importing torch at `import repro.kinds`."""
    if name in ("Outcome", "RunContext", "TaskKind"):
        return getattr(import_module("repro.kinds.base"), name)
    raise AttributeError(name)


__all__ = ["KINDS", "TRAITS", "Traits", "kind_named", "kind_of", "traits"]
