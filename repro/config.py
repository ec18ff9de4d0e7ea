"""Config checks and run identity.

Everything numeric lives in `conf/`; this module only validates a composed config before any model is loaded,
and derives the run id (a stable hash of the resolved config, output paths excluded).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

import repro.budget  # noqa: F401  (registers ${lora_rank_for_budget:...} for the sweeps)
from repro.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# Config groups whose choices are files under conf/<group>/ (task has a subfolder per benchmark).
PUBLIC_GROUPS = ("task", "model", "method", "scale", "logger")
# Keys that say where things go or how a run is observed, not what is computed: not part of the run id.
NOT_IN_RUN_ID = ("output_root", "force", "logger", "hydra", "paper_hparams", "_hp", "cpu_recipe", "_cpu", "data.root",
                 "train.device", "train.num_threads", "train.log_every_steps")


def _when_in(value: Any, members: Iterable[Any], result: Any) -> Any:
    """`${when_in:${task.name},[mrpc,rte,stsb],glue/mnli}`: `result` if `value` is a member, else null."""
    return result if value in list(members) else None


if not OmegaConf.has_resolver("when_in"):
    OmegaConf.register_new_resolver("when_in", _when_in)


def group_choices(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    root = conf_dir / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def load_group_config(group: str, name: str, conf_dir: Path = CONF_DIR) -> DictConfig:
    """One option of a config group outside Hydra (tests, benchmarks), with the same-group `defaults` Hydra
    would merge (e.g. conf/method/dora.yaml extends lora.yaml): the listed options first, then this file."""
    cfg = OmegaConf.load(conf_dir / group / f"{name}.yaml")
    defaults = cfg.pop("defaults", [])
    parents = [load_group_config(group, d, conf_dir) for d in defaults if d != "_self_"]
    return OmegaConf.merge(*parents, cfg) if parents else cfg


def check_group_overrides(overrides: Iterable[str], conf_dir: Path = CONF_DIR) -> None:
    """Reject an unknown `task=`/`model=`/`method=`/... choice with the list of valid ones (before Hydra's
    multi-line error). Multirun values (`a,b`) are checked one by one."""
    for override in overrides:
        key, sep, value = override.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in PUBLIC_GROUPS or value.startswith(("choice(", "range(", "glob(", "${")):
            continue
        choices = group_choices(key, conf_dir)
        for choice in value.split(","):
            if choice not in choices:
                raise ConfigError(f"unknown {key} '{choice}'; choose one of: {', '.join(choices)}")


# classification heads (repro.models.POOLINGS): the first token, as the paper's models, or the masked mean
POOLING_CHOICES = ("cls", "mean", "mean_pooler")


def validate(cfg: DictConfig) -> None:
    """Checks that need the composed config; each failure is one clear line."""
    method, model = cfg.method, cfg.model
    matrices = dict(model.matrices)
    if "targets" in method:
        targets = list(method.targets)
        if not targets:
            raise ConfigError("method.targets is empty; choose from the model's matrices: " + ", ".join(matrices))
        missing = [t for t in targets if t not in matrices]
        if missing:
            raise ConfigError(f"model {model.name} has no matrix {', '.join(missing)}; it has: {', '.join(matrices)}")
    for key in ("r", "bottleneck", "prefix_length", "top_layers"):
        if key in method and (not isinstance(method[key], int) or method[key] <= 0):
            raise ConfigError(f"method.{key} must be a positive integer, got {method[key]!r}")
    if "infix_length" in method and (not isinstance(method.infix_length, int) or method.infix_length < 0):
        raise ConfigError(f"method.infix_length must be a non-negative integer, got {method.infix_length!r}")
    if "sites" in method:
        unknown = [s for s in method.sites if s not in model.adapter_sites]
        if unknown:
            raise ConfigError(f"adapter site {', '.join(unknown)} unknown; the model has: {', '.join(model.adapter_sites)}")
    if "top_layers" in method and method.top_layers > model.n_layers:
        raise ConfigError(f"method.top_layers={method.top_layers} exceeds the model's {model.n_layers} layers")
    if "drop_lowest_layers" in method and not 0 <= method.drop_lowest_layers < model.n_layers:
        raise ConfigError(f"method.drop_lowest_layers must be in [0, {model.n_layers}), got {method.drop_lowest_layers}")
    for key in ("epochs", "batch_size", "grad_accum_steps", "eval_batch_size"):
        if cfg.train[key] <= 0:
            raise ConfigError(f"train.{key} must be positive, got {cfg.train[key]}")
    if cfg.train.learning_rate <= 0:
        raise ConfigError(f"train.learning_rate must be positive, got {cfg.train.learning_rate}")
    if model.get("pooling", "cls") not in POOLING_CHOICES:
        raise ConfigError(f"model.pooling must be one of {', '.join(POOLING_CHOICES)}, got {model.pooling!r}")


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.get(p, {})
        if not isinstance(tree, dict):
            return
    tree.pop(leaf, None)


def identity_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config that defines what a run computes (output paths and observers removed)."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_IN_RUN_ID:
        _drop(tree, key)
    return tree


def run_id(cfg: DictConfig, processes: int = 1) -> str:
    """`<task>_<model>_<method>_s<seed>_<hash>`: readable, and stable for the same resolved config. The number of
    data-parallel processes is part of it (each takes `train.batch_size` per step: a different effective batch);
    a single process adds nothing, so single-process ids are those of before."""
    identity = identity_config(cfg)
    if processes > 1:
        identity["processes"] = processes
    blob = json.dumps(identity, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    return f"{cfg.task.name}_{cfg.model.name}_{cfg.method.name}_s{cfg.seed}_{digest}"
