"""`python -m repro.plan <overrides> [-s sweeps/rank.yaml] [--format json]`: the runs a command would execute.

Takes the overrides `python -m repro.train -m` takes (comma lists sweep, `+experiment=...` adds a Table 2 row whose
`seeds` sweep) and lists per run: task, model, method, seed, the method's trainable parameters, the head, the total,
the paper's printed |Theta| for the experiment's Table 2 row (a count that disagrees at the printed precision is
flagged, never adjusted) and an estimate of training memory. Nothing is downloaded: the model is built on the meta
device from the architecture stored in its config (`architecture:` for hub models, `config:` for tiny ones, the
package's config.json for embedded ones), and the methods and parameter counts are the ones training uses.

Sweep expansion is Hydra's own (BasicSweeper.split_arguments over `hydra.sweeper.params` + command-line
overrides), so the list is what a multirun would launch.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig, OmegaConf

import repro.budget  # noqa: F401  (registers the budget resolvers the sweeps use)
from repro.config import CONF_DIR, check_group_overrides, validate
from repro.errors import ConfigError, exit_on_user_error
from repro.kinds import kind_named, kind_of
from repro.params import ParamCounts

REPO = CONF_DIR.parent
FORMATS = ("table", "json")
# method keys that set the method's size, shown per run (with a peft tuner's `options`)
SIZE_KEYS = ("r", "alpha", "targets", "train_embeddings", "train_norms", "s2_attn", "bottleneck", "sites", "drop_lowest_layers", "top_layers", "prefix_length",
             "infix_length")

# Training memory, fp32 weights and AdamW (bytes per parameter). Not paper numbers: properties of the trainer.
BYTES_WEIGHT = 4  # every parameter, frozen or not
BYTES_GRAD = 4  # trainable parameters (method + head)
BYTES_ADAM = 8  # AdamW's two fp32 moments per trainable parameter
# Activations kept for the backward pass, per Transformer layer: s * b * h * (34 + 5 * a * s / h) bytes for 16-bit
# activations (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models", Sec. 4.1);
# fp32 doubles it. Same for every method: the gradient flows through frozen layers to the lowest adapted one.
# s is the maximum sequence length (real batches are padded to their longest example, often shorter); but the count
# assumes Megatron's fused kernels, and eager PyTorch keeps more (repro.bench.plan_memory measures the gap).
ACT_PER_TOKEN_HIDDEN = 34
ACT_ATTENTION = 5
ACT_FP32_FACTOR = 2
# Eager PyTorch on a CPU keeps about this many times the fused-kernel count (unfused softmax, dropout masks, GELU
# inputs, the allocator's slack): measured on all-MiniLM-L6-v2, LoRA 1.92-1.96x at 16x128 and 8x256 on an Intel
# Xeon (python -m repro.bench.plan_memory, results/bench/plan_memory_minilm-l6.md). GPUs keep the fused count.
ACT_EAGER_CPU_FACTOR = 1.9
# QLoRA (method.quantization): frozen Linear weights in 4-bit NormalFloat with double quantisation, 4.127 bits each
# (Dettmers et al. 2023, Sec. 3: 4 bits + 8-bit block constants per 64 + their fp32 constants per 256 blocks), and
# activations at the 16-bit compute dtype. The trained LoRA and head parameters stay fp32.
QLORA_BITS_PER_FROZEN = 4 + 8 / 64 + 32 / (64 * 256)


@dataclass
class PlannedRun:
    task: str
    model: str
    method: str
    seed: int
    paper_row: str | None
    sizes: dict  # the method's size settings (r, alpha, targets, bottleneck, ...)
    trainable: int
    head: int
    total: int
    paper_params: str | None  # printed, e.g. "0.3M"
    params_check: str  # ok | MISMATCH | -
    memory_gib: float
    memory_parts_gib: dict[str, float]
    overrides: list[str]


# --- the model on the meta device ---------------------------------------------------------------------------

def _architecture_hub(model_cfg: DictConfig) -> dict:
    if "architecture" not in model_cfg:
        raise ConfigError(f"model {model_cfg.name} has no `architecture:` block (transformers config kwargs)")
    return OmegaConf.to_container(model_cfg.architecture, resolve=True)


def _architecture_embedded(model_cfg: DictConfig) -> dict:
    from repro.models import package_dir

    return json.loads((package_dir(model_cfg.package, model_cfg.subdir) / "config.json").read_text())


def _architecture_gguf(model_cfg: DictConfig) -> dict:
    """The dequantised copy's config where it is cached, else the GGUF file's metadata (seconds; dequantising the
    weights only to count them takes ~30 s more and is what training does the first time anyway)."""
    from transformers import AutoConfig

    from repro.generation.models import cached_dequantised_dir, gguf_path

    if (cached := cached_dequantised_dir(model_cfg)) is not None:
        return json.loads((cached / "config.json").read_text())
    source = gguf_path(model_cfg)
    return AutoConfig.from_pretrained(source.parent, gguf_file=source.name).to_dict()


ARCHITECTURES: dict[str, Callable[[DictConfig], dict]] = {
    "hub": _architecture_hub,
    "gguf": _architecture_gguf,
    "tiny": lambda m: OmegaConf.to_container(m.config, resolve=True),
    "embedded": _architecture_embedded,
}


def architecture(model_cfg: DictConfig) -> dict:
    try:
        return dict(ARCHITECTURES[model_cfg.source](model_cfg))
    except KeyError:
        raise ConfigError(f"model source {model_cfg.source!r} unknown; one of {', '.join(ARCHITECTURES)}") from None


def count_on_meta(model_cfg: DictConfig, method_cfg: DictConfig, task_kind: str,
                  num_labels: int) -> tuple[ParamCounts, int]:
    """Build the model (encoder + head, or language model) on the meta device, apply the method the way training
    does for this kind of task (`TaskKind.meta_model`), count as training does; and the weights a 4-bit load would
    quantise (`quantisable_weights`)."""
    from transformers import AutoConfig

    from repro.params import count_parameters, quantisable_weights

    arch = architecture(model_cfg)
    for key in ("architectures", "transformers_version", "torch_dtype", "dtype", "_model_name_or_path"):
        arch.pop(key, None)
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    with torch.device("meta"):
        adapted = kind_named(task_kind).meta_model(config, model_cfg, method_cfg, num_labels)
    head = list(model_cfg.head)
    return count_parameters(adapted.model, head), quantisable_weights(adapted.model, head)


@lru_cache(maxsize=None)
def _cached_counts(model_yaml: str, method_yaml: str, task_kind: str, num_labels: int) -> tuple[ParamCounts, int]:
    return count_on_meta(OmegaConf.create(model_yaml), OmegaConf.create(method_yaml), task_kind, num_labels)


# --- memory and the paper's numbers ---------------------------------------------------------------------------

def activation_bytes(arch: dict, model_cfg: DictConfig, seq_len: int, batch_size: int,
                     attention_span: int | None = None, eager_cpu: bool = False) -> int:
    """`attention_span`: keys each query attends to when it is not the whole sequence (S²-Attn: one group), which
    shrinks the attention-score term; `eager_cpu`: the count eager PyTorch keeps on a CPU (ACT_EAGER_CPU_FACTOR)."""
    hidden = model_cfg.d_model
    heads = arch.get("num_attention_heads") or arch.get("n_head") or arch.get("num_heads") or \
        arch.get("decoder_attention_heads", 1)
    span = attention_span or seq_len
    per_layer = seq_len * batch_size * hidden * (ACT_PER_TOKEN_HIDDEN + ACT_ATTENTION * heads * span / hidden)
    return int(model_cfg.n_layers * per_layer * ACT_FP32_FACTOR * (ACT_EAGER_CPU_FACTOR if eager_cpu else 1))


def plans_for_cpu(device: str) -> bool:
    """Whether a run configured with `train.device=device` trains on this machine's CPU (auto: no CUDA here)."""
    if device == "auto":
        import torch

        return not torch.cuda.is_available()
    return device == "cpu"


def memory_parts(counts: ParamCounts, act_bytes: int, quantised_weights: int = 0) -> dict[str, float]:
    """GiB per part; `quantised_weights` (QLoRA: the frozen Linear weights) are held in 4 bits, with 16-bit
    activations."""
    trained = counts.trainable + counts.head
    weights = counts.total * BYTES_WEIGHT
    if quantised_weights:
        weights = quantised_weights * QLORA_BITS_PER_FROZEN / 8 + (counts.total - quantised_weights) * BYTES_WEIGHT
        act_bytes = act_bytes // ACT_FP32_FACTOR
    parts = {"weights": weights, "grads": trained * BYTES_GRAD, "adamw": trained * BYTES_ADAM,
             "activations": act_bytes}
    return {k: v / 2**30 for k, v in parts.items()}


def check_params(trainable: int, printed: str | None) -> str:
    """Compare at the printed precision ("0.3M": one decimal of millions)."""
    if not printed:
        return "-"
    match = re.fullmatch(r"([\d.]+)([MB])", printed.replace(",", ""))
    if not match:
        return "-"
    number, unit = match.groups()
    decimals = len(number.partition(".")[2])
    scale = {"M": 1e6, "B": 1e9}[unit]
    return "ok" if round(trainable / scale, decimals) == round(float(number), decimals) else "MISMATCH"


# --- sweep expansion and composition --------------------------------------------------------------------------

class Composer:
    """Hydra's compose API on conf/ (or on a sweep file, which extends conf/train.yaml)."""

    def __init__(self, sweep_file: Path | None):
        self.config_name = "train"
        self.extra: list[str] = []
        self.config_dir = CONF_DIR
        if sweep_file is not None:
            if not sweep_file.is_file():
                raise ConfigError(f"sweep file {sweep_file} not found")
            self.config_dir, self.config_name = sweep_file.resolve().parent, sweep_file.stem
            self.extra = [f"hydra.searchpath=[file://{CONF_DIR}]"]

    def __call__(self, overrides: list[str], hydra_cfg: bool = False) -> DictConfig:
        from hydra import compose, initialize_config_dir
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        try:
            with initialize_config_dir(config_dir=str(self.config_dir), version_base="1.3"):
                return compose(self.config_name, overrides=[*self.extra, *overrides], return_hydra_config=hydra_cfg)
        except (HydraException, OmegaConfBaseException) as exc:
            raise ConfigError(str(exc).strip().splitlines()[0]) from None


def expand(compose: Composer, overrides: list[str]) -> list[list[str]]:
    """One override list per job: the config's `hydra.sweeper.params`, then the command line (which wins)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError(str(exc).strip().splitlines()[0]) from None
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    base = compose(fixed, hydra_cfg=True)
    params = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
    try:
        return BasicSweeper.split_arguments(parser.parse_overrides(params + overrides), None)[0]
    except HydraException as exc:
        raise ConfigError(str(exc).strip().splitlines()[0]) from None


def plan_run(cfg: DictConfig, overrides: list[str]) -> PlannedRun:
    validate(cfg)
    model_yaml = OmegaConf.to_yaml(cfg.model, resolve=True)
    counts, quantisable = _cached_counts(model_yaml, OmegaConf.to_yaml(cfg.method, resolve=True), cfg.task.kind,
                                         cfg.task.get("num_labels", 0))
    kind = kind_of(cfg)
    row_id = cfg.get("paper_row")
    printed = kind.paper_params(row_id, cfg.task) if row_id else None
    seq_len = cfg.task.get("target_context") or cfg.data.max_seq_len  # long_context trains at its target
    span = kind.attention_span(cfg, seq_len)
    act = activation_bytes(architecture(cfg.model), cfg.model, seq_len, cfg.train.batch_size, span,
                           eager_cpu=plans_for_cpu(cfg.train.device))
    parts = memory_parts(counts, act, quantisable if cfg.method.get("quantization") else 0)
    method = OmegaConf.to_container(cfg.method, resolve=True)
    sizes = {**{k: method[k] for k in SIZE_KEYS if k in method}, **(method.get("options") or {})}
    return PlannedRun(task=cfg.task.name, model=cfg.model.name, method=cfg.method.name, seed=cfg.seed,
                      paper_row=row_id, sizes=sizes, trainable=counts.trainable, head=counts.head, total=counts.total,
                      paper_params=printed, params_check=check_params(counts.trainable, printed),
                      memory_gib=sum(parts.values()), memory_parts_gib=parts, overrides=overrides)


def plan(overrides: list[str], sweep_file: Path | None = None) -> list[PlannedRun]:
    check_group_overrides(overrides)
    compose = Composer(sweep_file)
    return [plan_run(compose(job), job) for job in expand(compose, overrides)]


# --- output ---------------------------------------------------------------------------------------------------

def _millions(n: int) -> str:
    return f"{n / 1e6:,.3f}M"


def render_table(runs: list[PlannedRun]) -> str:
    import pandas as pd

    rows = [{"task": r.task, "model": r.model, "method": r.method, "seed": r.seed,
             "sizes": " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in r.sizes.items()),
             "paper row": r.paper_row or "-",
             "trainable": _millions(r.trainable), "head": _millions(r.head), "total": _millions(r.total),
             "paper": r.paper_params or "-", "check": r.params_check,
             "mem GiB": f"{r.memory_gib:.2f}",
             "(w/g/adam/act)": "/".join(f"{v:.2f}" for v in r.memory_parts_gib.values())} for r in runs]
    lines = [pd.DataFrame(rows).to_string(index=False), "",
             f"{len(runs)} run(s). Memory: fp32 weights + grads + AdamW states of the trained parameters (method + "
             "head) + activations (Korthikanti et al. 2022, per layer s*b*h*(34 + 5*a*s/h) bytes at 16 bit, x2 for "
             "fp32; s = max_seq_len, or task.target_context for long_context, where S²-Attn's attention term spans one group; "
             "b = batch_size; x" + f"{ACT_EAGER_CPU_FACTOR:g}" + " for eager PyTorch on a CPU, the fused-kernel "
             "count on GPUs), no other framework overhead (measured: python -m repro.bench.plan_memory, "
             "results/bench/plan_memory_*)."]
    flagged = sum(r.params_check == "MISMATCH" for r in runs)
    if flagged:
        lines.append(f"{flagged} run(s) flagged MISMATCH: the count differs from the paper's printed |Theta| at its "
                     "precision (reported as computed, not adjusted).")
    return "\n".join(lines)


def render_json(runs: list[PlannedRun]) -> str:
    return "\n".join(json.dumps(asdict(r)) for r in runs)


RENDERERS: dict[str, Callable[[list[PlannedRun]], str]] = {"table": render_table, "json": render_json}


def parse_args(argv: list[str]) -> tuple[list[str], Path | None, str]:
    parser = argparse.ArgumentParser(prog="python -m repro.plan", description=__doc__.splitlines()[0])
    parser.add_argument("-s", "--sweep", type=Path, help="a sweep file, e.g. sweeps/rank.yaml")
    parser.add_argument("--format", choices=FORMATS)
    parser.add_argument("-m", "--multirun", action="store_true", help="accepted for symmetry with repro.train")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    fmt, overrides = args.format or "table", []
    for override in args.overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") == "format":
            if value not in FORMATS:
                raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {value!r}")
            fmt = value
        else:
            overrides.append(override)
    return overrides, args.sweep, fmt


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    overrides, sweep_file, fmt = parse_args(sys.argv[1:] if argv is None else argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    print(RENDERERS[fmt](plan(overrides, sweep_file)))


if __name__ == "__main__":
    main()
