"""`python -m repro.evaluate ADAPTER [overrides...]`: score an adapter without training, as a trained run is scored.

"I can't reproduce the GLUE numbers" has two halves: training differs, or evaluation differs. Scoring a released
checkpoint inside this harness, on the same data with the same metrics as our own runs, separates them. ADAPTER is
one of (detected in this order):
- a run folder (`results/runs/<id>/`, result.json + adapter/): its config and weights (`repro.export.rebuild_run`);
  plain `key=value` overrides (data.root, data.max_eval_samples, train.device ...) apply on top of its config;
- a peft adapter folder (adapter_config.json + adapter_model.safetensors): r, alpha and targets from its config,
  task and model from the overrides (`task=glue/sst2 model=roberta-base method=lora`);
- a loralib state dict as the paper's repository released them (`.bin`/`.pt`/`.pth`, `.safetensors`; a
  `{"model_state_dict": ...}` wrapper and DDP's `module.` prefix are undone): RoBERTa/DeBERTa GLUE files with
  `...query.lora_A/B`, `...value.lora_A/B` and the classifier head; GPT-2 NLG files whose `attn.c_attn.lora_A/B`
  belong to loralib's MergedLinear (one A of r x |enabled| rows and one B of d x |enabled| rows over the enabled
  parts of the fused q, k, v; the paper enables q and v), mapped onto the harness's split `c_attn.q`/`c_attn.v`.
  r comes from the file; the file does not store alpha, so `method.alpha=` must be given (scaling alpha / r, as
  loralib). Keys that name frozen base weights of the model (a full `model.state_dict()`) are not loaded: the
  harness's pre-trained weights are used, and how far the file's copies are from them is recorded.

Any key that does not fit the model (no such module, wrong shape, a LoRA matrix the method does not target) stops
with one line naming it, as does a LoRA matrix or head tensor of the model that the file lacks. The result goes to a
new run folder `results/runs/<task>_<model>_<method>_imported_<hash>/` (the hash covers the config and the file's
sha256, so it never collides with a trained run): result.json has a trained run's shape (one epoch, 0, with no
training; metrics, predictions or decoded outputs, trivial baseline) plus `source: imported`, `imported_from`,
`import_format`, `sha256`, `r` and `alpha`; adapter/ holds the imported weights in peft's format, so the folder is a
run like any other (`repro.export`, `repro.score`). Tables show such records as a "released checkpoint" row beside
the reproduced one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from repro import provenance
from repro.config import PUBLIC_GROUPS, check_group_overrides, config_digest, identity_config
from repro.distributed import resolve_device
from repro.errors import ConfigError, ReproError, exit_on_user_error
from repro.export import build_adapted, rebuild_run
from repro.kinds import kind_of
from repro.kinds.base import RunContext
from repro.methods.base import TRAINABLE_FILE, Adapted
from repro.results import (RESULT_FILE, SOURCE_IMPORTED, WEIGHTS_DIR, default_runs_root, is_complete, match_umask,
                           read_result, write_json_atomic)

PEFT_PREFIX = "base_model.model."  # peft's state-dict names: this prefix, then the transformers model's
LORA_LEAVES = ("lora_A", "lora_B")  # loralib's parameter names (peft's: lora_A.weight, lora_B.weight)
STATE_WRAPPERS = ("model_state_dict", "state_dict")  # the paper's NLG code saves {"model_state_dict": ...}
DDP_PREFIX = "module."  # keys of a model saved inside DistributedDataParallel
PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_CONFIG = "adapter_config.json"
# loralib scales the update by alpha / r, as peft's plain LoRA; rsLoRA (alpha / sqrt r) and DoRA compute another model
LORALIB_METHODS = ("lora",)
# peft adapter options -> the method that builds the same model here
PEFT_METHOD_OPTIONS = {"use_rslora": "rslora", "use_dora": "dora"}
PEFT_METHODS = ("lora", "rslora", "dora")
LISTED = 6  # keys named in a one-line error before "and N more"


@dataclass
class Source:
    """What ADAPTER is (`kind`: a key of IMPORTERS) and the file whose sha256 identifies it."""

    kind: str
    path: Path
    weights_file: Path


@dataclass
class Imported:
    """An adapted model with the imported weights loaded, the config it runs under, and what the record says."""

    cfg: DictConfig
    adapted: Adapted
    r: int | None
    alpha: float | None
    notes: dict[str, Any] = field(default_factory=dict)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def detect(path: Path) -> Source:
    """A run folder (result.json), a peft adapter folder (adapter_config.json) or a state-dict file."""
    if not path.exists():
        raise ReproError(f"{path} does not exist")
    if path.is_file():
        return Source("loralib", path, path)
    if (path / RESULT_FILE).is_file():
        weights = _first_existing(path / WEIGHTS_DIR, (*PEFT_WEIGHTS, TRAINABLE_FILE))
        if weights is None:
            raise ReproError(f"run folder {path} has no weights in {WEIGHTS_DIR}/ ({', '.join(PEFT_WEIGHTS)} or "
                             f"{TRAINABLE_FILE})")
        return Source("run", path, weights)
    if (path / PEFT_CONFIG).is_file():
        weights = _first_existing(path, PEFT_WEIGHTS)
        if weights is None:
            raise ReproError(f"peft adapter folder {path} has no {' or '.join(PEFT_WEIGHTS)}")
        return Source("peft", path, weights)
    raise ReproError(f"{path} is neither a run folder ({RESULT_FILE}), a peft adapter folder ({PEFT_CONFIG}) nor a "
                     f"state-dict file")


# --- config ---------------------------------------------------------------------------------------------------

def compose(overrides: list[str]) -> DictConfig:
    """conf/train.yaml with the overrides, as `repro.train` composes it (Hydra's compose API)."""
    from repro.plan import Composer

    check_group_overrides(overrides)
    return Composer(None)(overrides)


def given(overrides: list[str], key: str) -> bool:
    """Whether the command line sets `key` (also as `+key=` / `++key=`)."""
    return any(o.lstrip("+").partition("=")[0] == key for o in overrides)


def set_method(cfg: DictConfig, **values: Any) -> None:
    with open_dict(cfg):
        for key, value in values.items():
            cfg.method[key] = value


def checked(cfg: DictConfig) -> DictConfig:
    """`repro.train.preflight`: config values, device, results folder, data files, before a model is built."""
    from repro.runner import preflight

    preflight(cfg)
    return cfg


# --- state dicts ----------------------------------------------------------------------------------------------

def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors by name from a torch or safetensors file, unwrapped from `{"model_state_dict": ...}` and DDP's
    `module.` prefix (the paper's NLG code saves both ways)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file: one line (torch's own messages run to a paragraph)
        raise ReproError(f"{path} is not a readable state dict: neither a tensors-only torch file nor safetensors "
                         f"({type(exc).__name__})") from None
    while isinstance(state, dict) and (inner := next((state[k] for k in STATE_WRAPPERS
                                                      if isinstance(state.get(k), dict)), None)) is not None:
        state = inner
    if not isinstance(state, dict):
        raise ReproError(f"{path} holds a {type(state).__name__}, not a state dict")
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ReproError(f"{path}: entries that are not tensors: {_listed(bad)}")
    return {k.removeprefix(DDP_PREFIX): v for k, v in state.items()}


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - LISTED} more" if len(keys) > LISTED else ""
    return ", ".join(keys[:LISTED]) + more


def load_checked(adapted: Adapted, state: dict[str, torch.Tensor], origin: dict[str, str], what: str,
                 hint: str = "") -> None:
    """Load `state` (peft's names) into the adapted model after checking that it fits exactly: every key is one of
    the model's adapter or head tensors with the same shape, and none of those is missing. `origin` gives each key's
    name in the file, for the one-line error."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    own = get_peft_model_state_dict(adapted.model)
    unfit = [origin.get(k, k) for k in state if k not in own]
    unfit += [f"{origin.get(k, k)} {tuple(v.shape)} (model: {tuple(own[k].shape)})" for k, v in state.items()
              if k in own and v.shape != own[k].shape]
    missing = [k.removeprefix(PEFT_PREFIX) for k in own if k not in state]
    if unfit or missing:
        parts = [f"{len(unfit)} key(s) that do not fit: {_listed(unfit)}"] if unfit else []
        parts += [f"missing {len(missing)} the model needs: {_listed(missing)}"] if missing else []
        raise ReproError(f"{what}: {'; '.join(parts)}{hint}")
    result = set_peft_model_state_dict(adapted.model, state)
    if result.unexpected_keys:
        raise ReproError(f"{what}: keys peft did not load: {_listed(list(result.unexpected_keys))}")


@dataclass(frozen=True)
class Fused:
    """The harness's view of a fused q/k/v projection (GPT-2's `attn.c_attn`, model config `fused_qkv`): the parts
    it is split into, in output order, and those the method adapts (= loralib's enable_lora)."""

    path: str  # e.g. attn.c_attn
    enabled: tuple[tuple[str, str], ...]  # (paper name, child module) of each adapted part, e.g. (q, q), (v, v)

    @classmethod
    def of(cls, cfg: DictConfig) -> Fused | None:
        fused = cfg.model.get("fused_qkv")
        if not fused:
            return None
        parts = [(name, path[len(fused) + 1:]) for name, path in cfg.model.matrices.items()
                 if path.startswith(fused + ".")]
        return cls(fused, tuple((name, child) for name, child in parts if name in cfg.method.targets))

    def owns(self, module: str) -> bool:
        return module == self.path or module.endswith("." + self.path)


def file_rank(state: dict[str, torch.Tensor], fused: Fused | None, path: Path) -> int:
    """r from the file's A matrices (a fused A stacks one r x d block per enabled part); all must agree."""
    ranks: dict[str, int] = {}
    for key, tensor in state.items():
        module, _, leaf = key.rpartition(".")
        if leaf != "lora_A" or tensor.dim() != 2:
            continue
        parts = len(fused.enabled) if fused is not None and fused.owns(module) else 1
        if parts == 0 or tensor.shape[0] % parts:
            raise ReproError(f"{path}: {key} has {tensor.shape[0]} rows, not a multiple of the {parts} parts of "
                             f"{fused.path if fused else module} that method.targets adapts")
        ranks[key] = tensor.shape[0] // parts
    if not ranks:
        raise ReproError(f"{path} holds no LoRA matrices (keys ending in .lora_A / .lora_B): "
                         f"{_listed(sorted(state))}")
    if len(set(ranks.values())) > 1:
        raise ReproError(f"{path}: LoRA ranks differ between matrices: "
                         + _listed([f"{k} r={r}" for k, r in ranks.items()]))
    return next(iter(ranks.values()))


def loralib_to_peft(state: dict[str, torch.Tensor], adapted: Adapted,
                    fused: Fused | None) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, Any]]:
    """loralib names -> peft names on the harness's model: `X.lora_A` -> `base_model.model.X.lora_A.weight`; a
    MergedLinear's stacked A and B on the fused projection -> one A and B per enabled part (`X.q.lora_A.weight`,
    `X.v.lora_A.weight`: block i of the stack is part i, as loralib's grouped conv1d computes B_i A_i); any other
    key (the head) -> `base_model.model.<key>`. Keys naming a frozen base weight of the same shape are left out and
    summarised (count, max |file - model|). Returns the mapped state, each mapped key's file name, and notes."""
    from peft import get_peft_model_state_dict

    own = get_peft_model_state_dict(adapted.model)
    model_state = adapted.model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    base_keys, base_diff = [], 0.0
    for key, tensor in state.items():
        module, _, leaf = key.rpartition(".")
        if leaf in LORA_LEAVES and fused is not None and fused.owns(module) and fused.enabled \
                and tensor.shape[0] % len(fused.enabled) == 0:
            for (name, child), block in zip(fused.enabled, tensor.chunk(len(fused.enabled), dim=0)):
                target = f"{PEFT_PREFIX}{module}.{child}.{leaf}.weight"
                mapped[target], origin[target] = block.contiguous(), f"{key}[{name}]"
            continue
        if leaf in LORA_LEAVES:
            target = f"{PEFT_PREFIX}{module}.{leaf}.weight"
        elif PEFT_PREFIX + key in own:  # the task head (peft's trainable copy)
            target = PEFT_PREFIX + key
        else:
            frozen = next((model_state[k] for k in (PEFT_PREFIX + key, f"{PEFT_PREFIX}{module}.base_layer.{leaf}")
                           if k in model_state and model_state[k].shape == tensor.shape), None)
            if frozen is not None:
                base_keys.append(key)
                base_diff = max(base_diff, float((tensor.float() - frozen.float().cpu()).abs().max()))
                continue
            target = PEFT_PREFIX + key
        mapped[target], origin[target] = tensor, key
    notes = {"file_base_weights": {"keys": len(base_keys), "max_abs_diff_to_model": base_diff}} if base_keys else {}
    return mapped, origin, notes


# --- the three sources ----------------------------------------------------------------------------------------

def import_run(source: Source, overrides: list[str]) -> Imported:
    """A run folder: its own config (plain overrides on top) and weights."""
    groups = [o for o in overrides if o.lstrip("+~").partition("=")[0] in PUBLIC_GROUPS]
    if groups:
        raise ConfigError(f"a run folder carries its own task, model and method; drop {' '.join(groups)} (plain "
                          f"key=value overrides such as data.root=... apply)")
    record = read_result(source.path)
    if record is None or record.get("status") != "complete":
        raise ReproError(f"{source.path} is not a complete run (no result.json with status complete)")
    cfg = OmegaConf.create(record["config"])
    with open_dict(cfg):
        cfg.output_root = str(default_runs_root())
        cfg.force = False
    cfg = checked(OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides])))
    _, adapted = rebuild_run(source.path)
    return Imported(cfg, adapted, cfg.method.get("r"), cfg.method.get("alpha"))


def _paper_names(modules: list[str], cfg: DictConfig, path: Path) -> list[str]:
    """peft `target_modules` (module paths or their last names) -> the paper's matrix names of this model."""
    names, unknown = [], []
    for module in modules:
        hit = [n for n, p in cfg.model.matrices.items() if p == module or p.endswith("." + module)]
        (names.extend(hit) if hit else unknown.append(module))
    if unknown:
        raise ReproError(f"{path}: target modules {', '.join(unknown)} are none of model {cfg.model.name}'s "
                         f"matrices ({', '.join(f'{n}: {p}' for n, p in cfg.model.matrices.items())})")
    return [n for n in cfg.model.matrices if n in names]  # the model config's order


def import_peft(source: Source, overrides: list[str]) -> Imported:
    """A peft LoRA adapter folder: r, alpha, targets and scaling rule from adapter_config.json."""
    from peft import load_peft_weights

    adapter = json.loads((source.path / PEFT_CONFIG).read_text())
    cfg = compose(overrides)
    wanted = next((m for option, m in PEFT_METHOD_OPTIONS.items() if adapter.get(option)), "lora")
    if cfg.method.name != wanted or cfg.method.name not in PEFT_METHODS:
        raise ConfigError(f"{source.path} is a peft {wanted} adapter; evaluate it with method={wanted}")
    alpha = adapter.get("lora_alpha")
    if given(overrides, "method.alpha") and float(cfg.method.alpha) != float(alpha):
        raise ConfigError(f"{source.path} stores lora_alpha={alpha}; method.alpha={cfg.method.alpha} would change "
                          f"its scaling (drop the override)")
    modules = adapter.get("target_modules") or []
    targets = _paper_names([modules] if isinstance(modules, str) else list(modules), cfg, source.path)
    set_method(cfg, r=adapter["r"], alpha=alpha, targets=targets)
    adapted = build_adapted(checked(cfg))
    state = load_peft_weights(str(source.path))
    load_checked(adapted, state, {k: k.removeprefix(PEFT_PREFIX) for k in state}, str(source.path))
    return Imported(cfg, adapted, adapter["r"], alpha)


def import_loralib(source: Source, overrides: list[str]) -> Imported:
    """A loralib state dict: r from the file, alpha from the command line, keys mapped onto the harness's model."""
    state = read_state_dict(source.path)
    cfg = compose(overrides)
    if cfg.method.name not in LORALIB_METHODS:
        raise ConfigError(f"a loralib checkpoint is LoRA with scaling alpha / r: use method="
                          f"{' or '.join(LORALIB_METHODS)}, not {cfg.method.name}")
    fused = Fused.of(cfg)
    r = file_rank(state, fused, source.path)
    if not given(overrides, "method.alpha"):
        raise ConfigError(f"{source.path} does not store LoRA's alpha (the update is scaled by alpha / r, r={r} from "
                          f"the file): give method.alpha=<the value it was trained with>")
    set_method(cfg, r=r)
    adapted = build_adapted(checked(cfg))
    mapped, origin, notes = loralib_to_peft(state, adapted, fused)
    hint = ""
    if fused is not None:
        hint = (f" (a MergedLinear stacks one block per enabled part of {fused.path}; method.targets="
                f"[{','.join(cfg.method.targets)}] enables {', '.join(n for n, _ in fused.enabled) or 'none'}: the "
                f"file's enable_lora must match)")
    load_checked(adapted, mapped, origin, str(source.path), hint)
    return Imported(cfg, adapted, r, float(cfg.method.alpha), notes)


IMPORTERS: dict[str, Callable[[Source, list[str]], Imported]] = {
    "run": import_run,
    "peft": import_peft,
    "loralib": import_loralib,
}


def import_adapter(path: Path, overrides: list[str]) -> tuple[Source, Imported]:
    """ADAPTER -> the adapted model with its weights loaded, checked key by key."""
    source = detect(path)
    return source, IMPORTERS[source.kind](source, overrides)


# --- scoring and the record -----------------------------------------------------------------------------------

def imported_run_id(cfg: DictConfig, sha256: str) -> str:
    """`<task>_<model>_<method>_imported_<hash>`: never a trained run's id (those end in `_s<seed>_<hash>`); the
    same file under the same config is the same run."""
    digest = config_digest({"config": identity_config(cfg), "sha256": sha256})
    return f"{cfg.task.name}_{cfg.model.name}_{cfg.method.name}_{SOURCE_IMPORTED}_{digest}"


def evaluate(path: Path, overrides: list[str]) -> dict[str, Any]:
    """Import ADAPTER, score it on the task's eval splits as a trained run is scored, and write its record."""
    from repro.runlog import run_log
    from repro.runner import base_record, complete_record, run_lock, start_lines

    source, imported = import_adapter(path, overrides)
    cfg, adapted = imported.cfg, imported.adapted
    sha256 = sha256_of(source.weights_file)
    rid = imported_run_id(cfg, sha256)
    run_dir = Path(cfg.output_root) / rid
    if is_complete(run_dir) and not cfg.force:
        print(f"skip {rid}: complete result exists ({run_dir / RESULT_FILE}); force=true to re-run")
        return read_result(run_dir)
    device = resolve_device(cfg.train.device)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    kind = kind_of(cfg)
    created = not run_dir.exists()
    started, start = datetime.now(timezone.utc), time.perf_counter()
    provenance.reset_peak_memory(device)
    base = base_record(cfg, rid, kind.method_config(cfg))
    with run_lock(run_dir), run_log(run_dir, every_s=cfg.train.get("log_every_seconds")):
        start_lines(run_dir, rid, base["config"], device, main=True)  # train.log and config.yaml, as a run's
        try:
            outcome = kind.evaluate(cfg, adapted, RunContext(device, lambda record: None, run_dir=run_dir))
        except ReproError:
            if created:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        adapted.model.cpu()
        adapted.save(run_dir / WEIGHTS_DIR)
        match_umask(run_dir / WEIGHTS_DIR)
        elapsed = time.perf_counter() - start
        result = outcome.train
        record = complete_record(
            base, cfg, outcome, adapted, device, started, [elapsed],
            run_dir, source=SOURCE_IMPORTED, imported_from=str(path.resolve()), import_format=source.kind,
            sha256=sha256, sha256_file=source.weights_file.name, r=imported.r, alpha=imported.alpha,
            **imported.notes)
        write_json_atomic(run_dir / RESULT_FILE, record)
        best = ", ".join(f"{k}={v:.4f}" for k, v in result.best_metrics.items() if "/" not in k)
        print(f"imported {path} ({source.kind}, r={imported.r}, alpha={imported.alpha}, sha256 {sha256[:12]}): "
              f"{best} -> {run_dir}")
    return record


USAGE = "usage: python -m repro.evaluate ADAPTER [task=... model=... method=lora method.alpha=... key=value ...]"


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    from repro.runner import quiet_library_noise

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(f"{USAGE}\n\n{__doc__}")
        return None
    if not argv or "=" in argv[0]:
        raise ReproError(f"name the adapter first (a run folder, a peft adapter folder or a loralib file); {USAGE}")
    check_group_overrides(argv[1:])  # an unknown task/model/method before any file is read
    quiet_library_noise()
    return evaluate(Path(argv[0]), argv[1:])


if __name__ == "__main__":
    main()
