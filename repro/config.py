"""Config checks and run identity.

Everything numeric lives in `conf/`; this module only validates a composed config before any model is loaded,
and derives the run id (a stable hash of the resolved config, output paths excluded).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import repro.budget  # noqa: F401  (registers ${lora_rank_for_budget:...} for the sweeps)
from repro.errors import ConfigError
from repro.kinds import TRAITS, traits

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# Config groups whose choices are files under conf/<group>/ (task has a subfolder per benchmark).
PUBLIC_GROUPS = ("task", "model", "method", "scale", "logger")
# Keys that say where things go or how a run is observed, not what is computed: not part of the run id.
NOT_IN_RUN_ID = ("output_root", "force", "logger", "hydra", "paper_hparams", "_hp", "cpu_recipe", "_cpu", "data.root",
                 "train.device", "train.num_threads", "train.log_every_steps", "train.log_every_seconds",
                 "train.gradient_checkpointing",
                 # labels and a search's base rate: derived from the method, rank and recipe (the id has those and
                 # the resolved train.learning_rate)
                 "lr_base", "search_row", "variant_row")


# knob -> the value every run had before the knob existed (fp32, no torch.compile)
ADDED_KNOBS = {"train.precision": "fp32", "train.compile": False, "train.lr_schedule": "linear",
               "train.early_stopping_patience": None, "data.holdout_fraction": None, "train.max_steps": None,
               "train.eval_every_steps": None, "train.early_stopping_min_epochs": None}


def _when_in(value: Any, members: Iterable[Any], result: Any) -> Any:
    """`${when_in:${task.name},[mrpc,rte,stsb],glue/mnli}`: `result` if `value` is a member, else null."""
    return result if value in list(members) else None


if not OmegaConf.has_resolver("when_in"):
    OmegaConf.register_new_resolver("when_in", _when_in)


def _times(value: float, factor: float) -> float:
    """`${times:${train.learning_rate},3}`: a learning rate scaled by a search's factor (sweeps/lr_search.yaml),
    rounded to 4 significant digits so that run ids and tables read 1e-3, not 0.0009999999."""
    return float(f"{float(value) * float(factor):.4g}")


if not OmegaConf.has_resolver("times"):
    OmegaConf.register_new_resolver("times", _times)


def _joined(values: Iterable[Any]) -> str:
    """`${joined:${method.targets}}`: a list as a label reads it, `q,k,v,o` (sweeps/lr_search_rank.yaml's rows)."""
    return ",".join(str(v) for v in values)


if not OmegaConf.has_resolver("joined"):
    OmegaConf.register_new_resolver("joined", _joined)


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
LR_SCHEDULES = ("linear", "constant")  # train.lr_schedule (repro.loop.lr_schedule)
# model families that only encode: they classify, but cannot generate (E2E, WebNLG, DART, SAMSum)
ENCODER_FAMILIES = ("bert", "roberta", "deberta-v2")


def _positive(v: float) -> bool:
    return v > 0


def _non_negative(v: float) -> bool:
    return v >= 0


def _fraction(v: float) -> bool:
    return 0 <= v < 1


# Numeric and boolean knobs: (dotted key, type, range check, what the range check says, null allowed).
# Keys absent from a config (e.g. method.alpha outside the LoRA family) are not checked.
KNOBS: list[tuple[str, type, Any, str, bool]] = [
    ("seed", int, _non_negative, "a non-negative integer", False),
    ("force", bool, None, "true or false", False),
    ("data.max_train_samples", int, _positive, "a positive integer or null (all)", True),
    ("data.max_eval_samples", int, _positive, "a positive integer or null (all)", True),
    ("data.max_seq_len", int, _positive, "a positive integer", False),
    ("data.subset_seed", int, _non_negative, "a non-negative integer", False),
    ("data.holdout_fraction", float, lambda v: 0 < v < 1, "a number in (0, 1) or null (score on the dev split)",
     True),
    ("train.learning_rate", float, _positive, "a positive number", False),
    ("train.epochs", int, _positive, "a positive integer", False),
    ("train.batch_size", int, _positive, "a positive integer", False),
    ("train.eval_batch_size", int, _positive, "a positive integer", False),
    ("train.grad_accum_steps", int, _positive, "a positive integer", False),
    ("train.warmup_ratio", float, _fraction, "a number in [0, 1)", False),
    ("train.weight_decay", float, _non_negative, "a non-negative number", False),
    ("train.max_grad_norm", float, _non_negative, "a non-negative number or null (no clipping)", True),
    ("train.checkpoint_every_steps", int, _non_negative, "a non-negative integer (0: at epoch ends only)", False),
    ("train.num_threads", int, _positive, "a positive integer or null (torch's default)", True),
    ("train.group_by_length", bool, None, "true or false", False),
    ("train.compile", bool, None, "true or false", False),
    ("train.gradient_checkpointing", bool, None, "true or false", False),
    ("train.early_stopping_patience", int, _positive, "a positive integer or null (no early stopping)", True),
    ("train.early_stopping_min_epochs", int, _positive, "a positive integer or null (stop at any epoch)", True),
    ("train.max_steps", int, _positive, "a positive integer or null (train all epochs)", True),
    ("train.eval_every_steps", int, _positive, "a positive integer or null (evaluate at epoch ends only)", True),
    ("method.alpha", float, _positive, "a positive number (the update is scaled by alpha / r)", False),
    ("method.dropout", float, _fraction, "a number in [0, 1)", False),
    ("method.r", int, _positive, "a positive integer", False),
    ("method.bottleneck", int, _positive, "a positive integer", False),
    ("method.prefix_length", int, _positive, "a positive integer", False),
    ("method.top_layers", int, _positive, "a positive integer", False),
    ("method.infix_length", int, _non_negative, "a non-negative integer", False),
    ("method.lr_ratio_b", float, _positive, "a positive number or null (LoRA's B at the same rate as A)", True),
]


def _has(cfg: DictConfig, dotted: str) -> bool:
    *parents, leaf = dotted.split(".")
    node = cfg
    for part in parents:
        if part not in node or not isinstance(node[part], DictConfig):
            return False
        node = node[part]
    return leaf in node


def _check_knob(cfg: DictConfig, key: str, kind: type, in_range: Any, expected: str, nullable: bool) -> None:
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{key} cannot be resolved: {str(exc).strip().splitlines()[0]}") from None
    if value is None and nullable:
        return
    if kind is bool:
        ok = isinstance(value, bool)
    else:  # an int is a float; a bool is neither here
        ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if not ok or (in_range is not None and not in_range(value)):
        raise ConfigError(f"{key} must be {expected}, got {value!r}")


def check_knobs(cfg: DictConfig) -> None:
    """Types and ranges of the numeric and boolean knobs (`train.learning_rate=abc`, `seed=-1`, ...)."""
    for key, kind, in_range, expected, nullable in KNOBS:
        if _has(cfg, key):
            _check_knob(cfg, key, kind, in_range, expected, nullable)


def check_model_task(cfg: DictConfig, conf_dir: Path = CONF_DIR) -> None:
    """An encoder cannot run a generation task: say which models can."""
    if not traits(cfg.task.get("kind")).language_model or cfg.model.get("family") not in ENCODER_FAMILIES:
        return
    decoders = [name for name in group_choices("model", conf_dir)
                if OmegaConf.load(conf_dir / "model" / f"{name}.yaml").get("family") not in ENCODER_FAMILIES]
    raise ConfigError(f"model {cfg.model.name} is an encoder ({cfg.model.family}) and cannot run the generation "
                      f"task {cfg.task.name}; use a decoder or encoder-decoder: {', '.join(decoders)}")


# a name that becomes part of a path (the run folder `<task>_<model>_<method>_s<seed>_<hash>`): one plain component
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def check_names(cfg: DictConfig) -> None:
    """task.name, model.name and method.name make the run folder's name: no separators, no `..`, nothing that
    could put a run outside the results folder."""
    for key in ("task.name", "model.name", "method.name"):
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, str) or not SAFE_NAME.fullmatch(value) or ".." in value:
            raise ConfigError(f"{key} must be a plain name (letters, digits, _ . + -; no '/' or '..'), got {value!r}")


def check_paths(cfg: DictConfig) -> None:
    """Settings that are folders: a path (text) or null, not a number or a list (`data.root=0`)."""
    for key in ("data.root", "output_root"):
        value = OmegaConf.select(cfg, key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{key} must be a folder path or null, got {value!r}")


def validate(cfg: DictConfig) -> None:
    """Checks that need the composed config; each failure is one clear line."""
    check_names(cfg)
    check_paths(cfg)
    check_knobs(cfg)
    check_model_task(cfg)
    method, model = cfg.method, cfg.model
    matrices = dict(model.matrices)
    for key in ("targets", "sites"):
        if key in method and not (isinstance(method[key], ListConfig) and all(isinstance(v, str) for v in method[key])):
            raise ConfigError(f"method.{key} must be a list of names like [q,v], got {method[key]!r}")
    if "targets" in method:
        targets = list(method.targets)
        if not targets:
            raise ConfigError("method.targets is empty; choose from the model's matrices: " + ", ".join(matrices))
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:  # [q,q] would train as [q] under another run id
            raise ConfigError(f"method.targets lists {', '.join(map(str, twice))} more than once: {targets}")
        missing = [t for t in targets if t not in matrices]
        if missing:
            raise ConfigError(f"model {model.name} has no matrix {', '.join(missing)}; it has: {', '.join(matrices)}")
    if "sites" in method:
        unknown = [s for s in method.sites if s not in model.adapter_sites]
        if unknown:
            raise ConfigError(f"adapter site {', '.join(unknown)} unknown; the model has: {', '.join(model.adapter_sites)}")
    if "top_layers" in method and method.top_layers > model.n_layers:
        raise ConfigError(f"method.top_layers={method.top_layers} exceeds the model's {model.n_layers} layers")
    if "drop_lowest_layers" in method and not (isinstance(method.drop_lowest_layers, int)
                                               and 0 <= method.drop_lowest_layers < model.n_layers):
        raise ConfigError(f"method.drop_lowest_layers must be in [0, {model.n_layers}), got {method.drop_lowest_layers}")
    if problem := method_misfit(method, model, cfg.task.get("kind")):
        raise ConfigError(f"{problem} (task {cfg.task.name})")
    if cfg.data.get("holdout_fraction") and not traits(cfg.task.get("kind")).holdout_split:
        holdout = ", ".join(name for name, t in TRAITS.items() if t.holdout_split)
        raise ConfigError(f"data.holdout_fraction is for {holdout} tasks (GLUE); task {cfg.task.name} is "
                          f"{cfg.task.kind}")
    from repro.precision import PRECISIONS  # torch: validated configs are about to run

    if cfg.train.get("precision", "fp32") not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {cfg.train.precision!r}")
    if cfg.train.get("lr_schedule", "linear") not in LR_SCHEDULES:
        raise ConfigError(f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {cfg.train.lr_schedule!r}")
    if model.get("pooling", "cls") not in POOLING_CHOICES:
        raise ConfigError(f"model.pooling must be one of {', '.join(POOLING_CHOICES)}, got {model.pooling!r}")


def method_misfit(method: DictConfig, model: DictConfig, kind: str | None) -> str | None:
    """Why a method cannot run on this model and task kind, from the method config (`kinds`: the task kinds it runs
    on; `model_keys`: what it needs the model config to name, e.g. LongLoRA's `norms`); None when it can."""
    if "kinds" in method and kind not in method.kinds:
        return f"method {method.name} runs on task kinds {', '.join(method.kinds)} only, not {kind}"
    missing = [key for key in method.get("model_keys", []) if not model.get(key)]
    if missing:
        return f"method {method.name} needs the model config to name {', '.join(missing)}; {model.name} does not"
    return None


def check_device(name: Any) -> None:
    """`train.device`: auto, cpu, cuda or cuda:<index> of a GPU this machine has."""
    import torch

    if name in ("auto", "cpu"):
        return
    if not isinstance(name, str) or not (name == "cuda" or name.startswith("cuda:")):
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:<index>, got {name!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but CUDA is not available on this machine; use train.device=cpu "
                          f"or auto")
    index = name.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise ConfigError(f"train.device={name}: this machine has {torch.cuda.device_count()} CUDA device(s)")


# below this much free space a run cannot even write its config and first checkpoint: refuse before writing
MIN_FREE_BYTES = 64 * 2**20


def check_writable(folder: str | Path, what: str) -> None:
    """`folder` exists as a writable folder, or can be created (its nearest existing parent is writable), on a
    disk that is not full."""
    path = Path(folder).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{what} {path} cannot be created: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} is not writable ({existing} does not allow writing)")
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise ConfigError(f"{what} {path}: its disk is full ({free / 2**20:.0f} MiB free, at least "
                          f"{MIN_FREE_BYTES // 2**20} MiB needed)")


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.get(p, {})
        if not isinstance(tree, dict):
            return
    tree.pop(leaf, None)


def identity_tree(tree: dict[str, Any]) -> dict[str, Any]:
    """A resolved config (as stored in result.json) reduced to what defines the computation: output paths and
    observers removed; knobs added after runs were recorded left out at the value those runs had, so their ids
    stay valid."""
    tree = copy.deepcopy(tree)
    for key in NOT_IN_RUN_ID:
        _drop(tree, key)
    for key, old_value in ADDED_KNOBS.items():
        node = tree
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node == old_value:
            _drop(tree, key)
    return tree


def identity_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config that defines what a run computes (`identity_tree`). `train.precision=auto` counts as
    the precision it picks on this machine's device (bf16 or fp32 on a CPU), so that the run id tells fp32 and
    bf16 runs apart and an `auto` run where it means fp32 keeps the id of an fp32 run."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    train = tree.get("train") if isinstance(tree.get("train"), dict) else {}
    if train.get("precision") == "auto":
        from repro.distributed import resolve_device  # torch: not for readers of configs (repro.tables)
        from repro.precision import resolve_precision

        train["precision"] = resolve_precision("auto", resolve_device(str(train.get("device", "auto")))).name
    return identity_tree(tree)


def config_digest(obj: Any) -> str:
    """10 hex digits of sha256 over `obj` as sorted JSON: the hash in run ids (same config, same id)."""
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def run_id(cfg: DictConfig, processes: int = 1) -> str:
    """`<task>_<model>_<method>_s<seed>_<hash>`: readable, and stable for the same resolved config. The number of
    data-parallel processes is part of it (each takes `train.batch_size` per step: a different effective batch);
    a single process adds nothing, so single-process ids are those of before."""
    identity = identity_config(cfg)
    if processes > 1:
        identity["processes"] = processes
    return f"{cfg.task.name}_{cfg.model.name}_{cfg.method.name}_s{cfg.seed}_{config_digest(identity)}"
