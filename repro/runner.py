"""One run: config -> task data -> model -> method -> train/evaluate -> result record, stored under
`results/runs/<run_id>/` (a run whose complete result exists is skipped unless `force=true`). The command line
(`python -m repro.train`, Hydra, sweeps, one line per failure) is repro/train.py; this module is what it runs, and
what other tools share (the run lock, seeding, the checks before anything is written)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import shutil
import sys
import traceback
import warnings
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from repro import provenance
from repro.checkpoint import Checkpointer
from repro.config import CONF_DIR, check_device, check_writable, identity_config, run_id, validate
from repro.distributed import device_for, init_world, resolve_device
from repro.errors import ConfigError, DataError, ReproError
from repro.kinds import kind_of
from repro.kinds.base import RunContext
from repro.loggers import NoLogger, make_logger
from repro.methods import check_backend
from repro.precision import use_fast_fp32_matmul
from repro.results import (LOCK_FILE, RESULT_FILE, WEIGHTS_DIR, is_complete, match_umask, read_result,
                           record_problem, write_json_atomic)
from repro.runlog import run_log


class RunInProgress(Exception):
    """Another worker holds this run's lock."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_init_from(cfg: DictConfig, processes: int = 1) -> Path | None:
    """The paper starts MRPC, RTE and STS-B (non-† rows) from the MNLI run of the same model and method.
    `init_from_task=glue/mnli` names that dependency: its stored result is used when complete, otherwise it
    runs first (same overrides, the other task)."""
    if not cfg.get("init_from_task"):
        return None
    dependency = cfg.copy()
    with open_dict(dependency):
        dependency.task = OmegaConf.load(CONF_DIR / "task" / f"{cfg.init_from_task}.yaml")
        dependency.init_from_task = None
        dependency.force = False
    dep_dir = Path(dependency.output_root) / run_id(dependency, processes)
    if not is_complete(dep_dir):
        print(f"{cfg.task.name} starts from the {cfg.init_from_task} run {dep_dir.name}: running it first")
        try:
            run(dependency, reuse_record=False)  # its weights are what this run starts from
        except ReproError as exc:
            raise DataError(f"{cfg.task.name} starts from a {cfg.init_from_task} checkpoint, which cannot be "
                            f"produced: {exc}") from None
    return dep_dir / WEIGHTS_DIR


PREDICTIONS_DIR = "predictions"


def save_predictions(run_dir: Path, predictions: dict[str, dict[str, list]]) -> dict[str, Any]:
    """Dev predictions of every epoch as `predictions/<split>.epoch<k>.jsonl` (one `{"prediction", "label"}` line
    per example, in the split's order), so that `repro.score` can recompute metrics without re-training."""
    if not predictions:
        return {}
    folder = run_dir / PREDICTIONS_DIR
    folder.mkdir(exist_ok=True)
    files = {}
    for key, values in predictions.items():
        split, epoch = key.split("/")
        path = folder / f"{split}.{epoch}.jsonl"
        lines = [json.dumps({"prediction": p, "label": y}) for p, y in zip(values["prediction"], values["label"])]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        files[key] = str(path.relative_to(run_dir))
    return {"predictions": files}


@contextmanager
def run_lock(run_dir: Path):
    """Exclusive lock on a run directory, so two workers never train (and write) the same run at once."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInProgress(f"{run_dir.name} is being run by another process") from None
        yield


def preflight(cfg: DictConfig, this_machine: bool = True) -> None:
    """Everything that can be checked before a file is written or a model is loaded: the config's values, and
    with `this_machine` (false for a job that a launcher sends elsewhere, e.g. SLURM) the device, the results
    folder and the data files. Raises ConfigError / DataError with one line."""
    validate(cfg)
    if not this_machine:
        return
    check_device(cfg.train.device)
    check_backend(cfg.method, resolve_device(cfg.train.device), cfg.model)  # e.g. qlora's 4-bit kernels
    check_writable(cfg.output_root, "results folder")
    check_model_reachable(cfg.model)
    if cfg.data.root is not None:
        kind_of(cfg).check_local_data(cfg.task, cfg.data.root)


def check_model_reachable(model: DictConfig) -> None:
    """A hub model with HF_HUB_OFFLINE=1 must already be in the local Hugging Face cache: say so before anything
    is written, not late while loading."""
    if model.get("source") != "hub" or os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes"):
        return
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(model.hub_id, "config.json"), str):
        raise ConfigError(f"model {model.name} ({model.hub_id}) is not in the local Hugging Face cache and "
                          f"HF_HUB_OFFLINE=1: cache it once online (huggingface-cli download {model.hub_id}) or "
                          f"allow the hub (HF_HUB_OFFLINE=0)")


def invocation() -> dict[str, Any] | None:
    """How Hydra composed this run: config name, the `--config-dir` it was given (relative to the working folder
    where it is inside it) and the job's overrides, so that the run can be run again with another seed
    (`make decide`) or as it was (`python -m repro.records rerun`). None outside Hydra (a test calling `run`)."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    dirs = [src.path.removeprefix("file://") for src in hydra_cfg.runtime.config_sources
            if src.provider == "command-line" and src.schema == "file"]
    config_dir = None
    if dirs:
        path = Path(dirs[0]).resolve()
        config_dir = str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)
    return {"config_name": hydra_cfg.job.config_name, "config_dir": config_dir,
            "overrides": list(hydra_cfg.overrides.task)}


def base_record(cfg: DictConfig, rid: str, method_config: DictConfig, init_from: Path | None = None
                ) -> dict[str, Any]:
    """What a run's record says before it has a result (a failed run's record is this and its error)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["method"] = OmegaConf.to_container(method_config, resolve=True)  # what the run uses
    return {"run_id": rid, "task": cfg.task.name, "model": cfg.model.name, "method": cfg.method.name,
            "seed": cfg.seed, "scale": cfg.get("scale_name"), "config": resolved,
            "identity_config": identity_config(cfg), "init_from": str(init_from) if init_from else None}


def complete_record(base: dict[str, Any], cfg: DictConfig, outcome: Any, adapted: Any, device: torch.device,
                    started: datetime, segments: list[float], run_dir: Path, processes: int = 1,
                    **fields: Any) -> dict[str, Any]:
    """The one builder of a complete run's result.json, for trained runs (repro.runner.run) and imported
    checkpoints scored without training (repro.evaluate, which adds its `fields`)."""
    train = outcome.train
    return {
        **base,
        "status": "complete",
        **fields,
        "params": outcome.counts.as_dict(),
        "main_metric": cfg.task.main_metric,
        "epochs": train.epochs,
        "best_epoch": train.best_epoch,
        "best_step": train.best_step,  # the optimizer step of the best evaluation (train.eval_every_steps)
        "best_metrics": train.best_metrics,
        "train_examples": outcome.train_examples,
        "eval_examples": outcome.eval_examples,
        "optimizer_steps": train.optimizer_steps,
        # examples per optimizer step over all processes (torchrun: each takes train.batch_size)
        "effective_batch_size": cfg.train.batch_size * cfg.train.grad_accum_steps * processes,
        "wall_time_s": sum(segments),
        "wall_time_segments_s": segments,
        "train_time_s": train.train_time_s,
        "time_per_step_s": train.train_time_s / train.optimizer_steps if train.optimizer_steps else None,
        "precision": train.precision,
        # an evaluation-only run (method=base, an imported checkpoint) has no training time
        "throughput": {"samples_per_s": train.train_samples / train.train_time_s if train.train_time_s else None,
                       "tokens_per_s": train.train_tokens / train.train_time_s if train.train_time_s else None},
        "peak_memory_bytes": provenance.peak_memory_bytes(device),
        "started_at": started.isoformat(),
        "weights": {"dir": WEIGHTS_DIR, "format": "peft" if adapted.is_peft else "safetensors"},
        # the saved trainable weights on disk (the adapter and head; all weights under full fine-tuning), kept in the
        # committed record, which drops `weights`
        "adapter_bytes": sum(f.stat().st_size for f in (run_dir / WEIGHTS_DIR).rglob("*") if f.is_file()),
        "versions": provenance.package_versions(),
        "git_commit": provenance.git_commit(),
        "hardware": {**provenance.hardware(device), "processes": processes},
        **outcome.extra,
        **save_predictions(run_dir, train.predictions),
    }


def committed_record(cfg: DictConfig, rid: str) -> Path | None:
    """The committed record of this run (`<results>/records/<run_id>.json`, beside the runs folder), if any: a
    sweep whose finished runs were committed continues on another machine without running them again."""
    path = Path(cfg.output_root).parent / "records" / f"{rid}.json"
    return path if path.is_file() else None


def stored_result(cfg: DictConfig, rid: str, reuse_record: bool = True) -> tuple[dict[str, Any], str] | None:
    """(the stored result, where it is) when this run need not run: its complete result.json, or (with
    `reuse_record`) its committed record; None when it must run (or `force=true`)."""
    if cfg.force:
        return None
    run_dir = Path(cfg.output_root) / rid
    if is_complete(run_dir):
        return read_result(run_dir), str(run_dir / RESULT_FILE)
    record = committed_record(cfg, rid) if reuse_record else None
    if record is not None:
        return json.loads(record.read_bytes()), f"committed record {record}, no weights here"
    return None


CONFIG_FILE = "config.yaml"  # the run's fully resolved config, beside its result


def start_lines(run_dir: Path, rid: str, resolved: dict[str, Any], device: torch.device, main: bool) -> None:
    """The first lines of a run's log (its resolved config and hardware), and the resolved config as a file."""
    text = OmegaConf.to_yaml(OmegaConf.create(resolved))
    if main:
        (run_dir / CONFIG_FILE).write_text(text, encoding="utf-8")
    print(f"start {rid}: hardware {json.dumps(provenance.hardware(device))}")
    print("resolved config:\n" + text.rstrip())


def run(cfg: DictConfig, reuse_record: bool = True) -> dict[str, Any]:
    """Execute one run (or return the stored result when it is complete or its record is committed, and `force`
    is false; `reuse_record=False` when the run's weights are needed, as a dependency's are).

    A failure while training (an exception, a NaN loss) is recorded as `status: failed` with its reason and
    re-raised; a later invocation runs it again, resuming from its last checkpoint if there is one. A corrupt
    result.json counts as missing: the run is done again."""
    preflight(cfg)
    device = resolve_device(cfg.train.device)
    kind = kind_of(cfg)
    world = init_world(device)
    device = device_for(world, device)
    use_fast_fp32_matmul(device)
    rid = run_id(cfg, world.size)
    run_dir = Path(cfg.output_root) / rid
    if problem := record_problem(run_dir):
        print(f"warning: {problem}; running {rid} again", file=sys.stderr)
    if stored := stored_result(cfg, rid, reuse_record):
        print(f"skip {rid}: complete result exists ({stored[1]}); force=true to re-run")
        return stored[0]
    init_from = resolve_init_from(cfg, world.size)

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    base = base_record(cfg, rid, kind.method_config(cfg), init_from)
    created = not run_dir.exists()
    log = run_log(run_dir, world.rank, world.is_main, cfg.train.get("log_every_seconds"))
    with (run_lock(run_dir) if world.is_main else nullcontext()), log:
        start_lines(run_dir, rid, base["config"], device, world.is_main)
        checkpointer = Checkpointer(run_dir, cfg.train.checkpoint_every_steps)
        if cfg.force:
            checkpointer.remove()
        started = datetime.now(timezone.utc)
        seed_everything(cfg.seed)
        provenance.reset_peak_memory(device)  # this run's own peak, also when a multirun shares the process
        logger = (make_logger(cfg, rid, {**base["config"], "world_size": world.size}, str(run_dir)) if world.is_main
                  else NoLogger())
        try:
            outcome = kind.run(cfg, RunContext(device, logger.log_epoch, checkpointer, init_from, world, run_dir,
                                               on_step=logger.log_step))
        except ReproError:
            if created and not checkpointer.path.exists():  # bad input: leave nothing behind
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        except Exception as exc:
            if not world.is_main:
                raise
            segments = checkpointer.segments_s()
            write_json_atomic(run_dir / RESULT_FILE, {
                **base, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), "started_at": started.isoformat(),
                "wall_time_s": sum(segments), "wall_time_segments_s": segments,
                "versions": provenance.package_versions(), "git_commit": provenance.git_commit(),
                "hardware": provenance.hardware(device)})
            raise  # the entry point reports it in one line
        adapted, train = outcome.adapted, outcome.train
        if not world.is_main:
            return {**base, "status": "complete", "rank": world.rank, "best_metrics": train.best_metrics}

        adapted.model.load_state_dict(train.best_state, strict=False)  # save the best epoch's weights
        adapted.model.cpu()
        adapted.save(run_dir / WEIGHTS_DIR)
        match_umask(run_dir / WEIGHTS_DIR)
        segments = checkpointer.segments_s()  # every process that worked on this run (resumed segments)
        record = complete_record(base, cfg, outcome, adapted, device, started, segments, run_dir,
                                 world.size, invocation=invocation())
        write_json_atomic(run_dir / RESULT_FILE, record)
        checkpointer.remove()
        logger.finish(record)
        best = ", ".join(f"{k}={v:.4f}" for k, v in train.best_metrics.items() if "/" not in k)
        print(f"done {rid}: best epoch {train.best_epoch}: {best} ({record['wall_time_s']:.1f}s) -> {run_dir}")
    return record


HEAD_PREFIXES = ("classifier", "score", "pooler", "bert.pooler", "roberta.pooler", "pooler.", "lm_head", "qa_outputs")


class _NoRoutineLoadReport(logging.Filter):
    """transformers prints a multi-line LOAD REPORT whenever a checkpoint lacks the new task head: routine here.
    It passes only when a weight outside the head is missing (a real problem)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        missing = [line.split("|")[0].strip() for line in message.splitlines() if "|" in line and "MISSING" in line]
        return any(not key.startswith(HEAD_PREFIXES) for key in missing if key)


_ROUTINE_LOAD_REPORT = _NoRoutineLoadReport()  # one instance: adding it again (every job of a worker) is a no-op


def quiet_library_noise() -> None:
    """Routine library chatter off the console: the head's load report, FutureWarnings (deprecations for the
    code's maintainers, not about the run), and, when stderr is not a terminal (nohup, SLURM, joblib, `2> file`),
    transformers' "Loading weights" bar, whose carriage returns would fill the redirected log. Idempotent: called
    by each command's main and by each job, which may run in a worker process that no main ran in."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("transformers.modeling_utils").addFilter(_ROUTINE_LOAD_REPORT)
    if not sys.stderr.isatty():
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
