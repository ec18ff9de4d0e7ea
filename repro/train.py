"""`python -m repro.train task=glue/sst2 model=minilm-l6 method=lora seed=0`

One run: config -> task data -> model -> method -> train/evaluate -> result record. Runs are stored under
`results/runs/<run_id>/`; a run whose complete result exists is skipped unless `force=true`.
"""

from __future__ import annotations

import fcntl
import json
import random
import shutil
import sys
import time
import traceback
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from repro import provenance
from repro.config import CONF_DIR, check_group_overrides, identity_config, run_id, validate
from repro.data.glue import check_local_files
from repro.checkpoint import Checkpointer
from repro.errors import DataError, ReproError, exit_on_user_error
from repro.distributed import device_for, init_world, resolve_device
from repro.loggers import NoLogger, make_logger
from repro.methods import check_backend
from repro.kinds import RunContext, kind_of
from repro.results import LOCK_FILE, RESULT_FILE, WEIGHTS_DIR, is_complete, read_result, write_json_atomic


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
            run(dependency)
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


def run(cfg: DictConfig) -> dict[str, Any]:
    """Execute one run (or return the stored result when it is complete and `force` is false).

    A failure while training (an exception, a NaN loss) is recorded as `status: failed` with its reason and
    re-raised; a later invocation runs it again, resuming from its last checkpoint if there is one."""
    validate(cfg)
    device = resolve_device(cfg.train.device)
    check_backend(cfg.method, device)  # e.g. qlora's 4-bit kernels: CUDA only
    if cfg.data.root is not None and cfg.task.kind == "classification":  # generation checks its own files
        check_local_files(cfg.task, cfg.data.root)
    kind = kind_of(cfg)
    world = init_world(device)
    device = device_for(world, device)
    rid = run_id(cfg, world.size)
    run_dir = Path(cfg.output_root) / rid
    if is_complete(run_dir) and not cfg.force:
        print(f"skip {rid}: complete result exists ({run_dir / RESULT_FILE}); force=true to re-run")
        return read_result(run_dir)
    init_from = resolve_init_from(cfg, world.size)

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["method"] = OmegaConf.to_container(kind.method_config(cfg), resolve=True)  # what the run uses
    base_record = {"run_id": rid, "task": cfg.task.name, "model": cfg.model.name, "method": cfg.method.name,
                   "seed": cfg.seed, "scale": cfg.get("scale_name"), "config": resolved,
                   "identity_config": identity_config(cfg), "init_from": str(init_from) if init_from else None}
    created = not run_dir.exists()
    with (run_lock(run_dir) if world.is_main else nullcontext()):
        checkpointer = Checkpointer(run_dir, cfg.train.checkpoint_every_steps)
        if cfg.force:
            checkpointer.remove()
        started = datetime.now(timezone.utc)
        wall_start = time.perf_counter()
        seed_everything(cfg.seed)
        provenance.reset_peak_memory(device)  # this run's own peak, also when a multirun shares the process
        logger = make_logger(cfg, rid, resolved, str(run_dir)) if world.is_main else NoLogger()
        try:
            outcome = kind.run(cfg, RunContext(device, logger.log_epoch, checkpointer, init_from, world, run_dir))
        except ReproError:
            if created and not checkpointer.path.exists():  # bad input: leave nothing behind
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        except Exception as exc:
            if not world.is_main:
                raise
            write_json_atomic(run_dir / RESULT_FILE, {
                **base_record, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=-8), "started_at": started.isoformat(),
                "wall_time_s": time.perf_counter() - wall_start, "versions": provenance.package_versions(),
                "git_commit": provenance.git_commit(), "hardware": provenance.hardware(device)})
            print(f"failed {rid}: {type(exc).__name__}: {exc} (recorded in {run_dir / RESULT_FILE})",
                  file=sys.stderr)
            raise
        adapted, counts, train = outcome.adapted, outcome.counts, outcome.train
        if not world.is_main:
            return {**base_record, "status": "complete", "rank": world.rank, "best_metrics": train.best_metrics}

        adapted.model.load_state_dict(train.best_state, strict=False)  # save the best epoch's weights
        adapted.model.cpu()
        adapted.save(run_dir / WEIGHTS_DIR)
        record = {
            **base_record,
            "status": "complete",
            "params": counts.as_dict(),
            "main_metric": cfg.task.main_metric,
            "epochs": train.epochs,
            "best_epoch": train.best_epoch,
            "best_metrics": train.best_metrics,
            "train_examples": outcome.train_examples,
            "eval_examples": outcome.eval_examples,
            "optimizer_steps": train.optimizer_steps,
            # examples per optimizer step over all processes (torchrun: each takes train.batch_size)
            "effective_batch_size": cfg.train.batch_size * cfg.train.grad_accum_steps * world.size,
            "wall_time_s": time.perf_counter() - wall_start,
            "train_time_s": train.train_time_s,
            "throughput": {"samples_per_s": train.train_samples / train.train_time_s,
                           "tokens_per_s": train.train_tokens / train.train_time_s},
            "peak_memory_bytes": provenance.peak_memory_bytes(device),
            "started_at": started.isoformat(),
            "weights": {"dir": WEIGHTS_DIR, "format": "peft" if adapted.is_peft else "safetensors"},
            "versions": provenance.package_versions(),
            "git_commit": provenance.git_commit(),
            "hardware": {**provenance.hardware(device), "processes": world.size},
            **outcome.extra,
            **save_predictions(run_dir, train.predictions),
        }
        write_json_atomic(run_dir / RESULT_FILE, record)
        checkpointer.remove()
        logger.finish(record)
    best = ", ".join(f"{k}={v:.4f}" for k, v in train.best_metrics.items() if "/" not in k)
    print(f"done {rid}: best epoch {train.best_epoch}: {best} ({record['wall_time_s']:.1f}s) -> {run_dir}")
    return record


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    """In a multirun a failed or busy run is reported and the sweep goes on; alone, it exits non-zero."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        record = run(cfg)
    except (ReproError, RunInProgress) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if not multirun:
            sys.exit(2)
        return None
    except Exception:
        if not multirun:
            sys.exit(1)
        return None
    return record["best_metrics"].get(cfg.task.main_metric)


@exit_on_user_error
def main() -> None:
    check_group_overrides(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
