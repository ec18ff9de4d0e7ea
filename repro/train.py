"""`python -m repro.train task=glue/sst2 model=minilm-l6 method=lora seed=0`

One run: config -> task data -> model -> method -> train/evaluate -> result record. Runs are stored under
`results/runs/<run_id>/`; a run whose complete result exists is skipped unless `force=true`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import _thread
import traceback
import warnings
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
from repro.config import (CONF_DIR, check_device, check_group_overrides, check_writable, identity_config, run_id,
                          validate)
from repro.data.generation import check_local_generation_files
from repro.data.glue import check_local_data
from repro.longcontext.data import check_local_files as check_local_long_text
from repro.checkpoint import Checkpointer
from repro.errors import DataError, ReproError, exit_on_user_error
from repro.distributed import device_for, init_world, resolve_device
from repro.loggers import NoLogger, make_logger
from repro.methods import check_backend
from repro.precision import use_fast_fp32_matmul
from repro.kinds import RunContext, kind_of
from repro.results import (LOCK_FILE, RESULT_FILE, WEIGHTS_DIR, is_complete, read_result, record_problem,
                           write_json_atomic)


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


def watch_sweep(sweep_pid: int, interval_s: float = 2.0, grace_s: float = 10.0) -> bool:
    """Stop this job when the sweep process that started it is gone. A parallel sweep's jobs run in worker
    processes (joblib/loky); killing only the sweep (SIGTERM from a script, a scheduler, `kill PID`) leaves them
    training on, unseen, and writing into the results folder. A daemon thread checks every `interval_s` that this
    process is still the sweep's child; when it is not, it interrupts the job as Ctrl-C would (the run keeps its
    last checkpoint and resumes on the next call) and ends the process `grace_s` later (an orphaned worker would
    otherwise hang on its dead parent's queue; checkpoints and results are written atomically, so no exit corrupts
    them).
    Armed once per process (a worker runs many jobs), only in a direct child of `sweep_pid` (a SLURM job that
    inherits the variable on another node is not one); returns whether a watcher is running."""
    if any(thread.name == "watch-sweep" for thread in threading.enumerate()):
        return True
    if sweep_pid == os.getpid() or os.getppid() != sweep_pid:
        return False

    def watch() -> None:
        while os.getppid() == sweep_pid:
            time.sleep(interval_s)
        print(f"error: the sweep (pid {sweep_pid}) that started this job is gone; stopping the job",
              file=sys.stderr, flush=True)
        _thread.interrupt_main()
        time.sleep(grace_s)
        os._exit(EXIT_INTERRUPTED)

    threading.Thread(target=watch, name="watch-sweep", daemon=True).start()
    return True


# per task kind: the check that the offline data files a task reads exist (before anything is loaded)
LOCAL_DATA_CHECKS = {"classification": check_local_data, "generation": check_local_generation_files,
                     "long_context": check_local_long_text}


def preflight(cfg: DictConfig, this_machine: bool = True) -> None:
    """Everything that can be checked before a file is written or a model is loaded: the config's values, and
    with `this_machine` (false for a job that a launcher sends elsewhere, e.g. SLURM) the device, the results
    folder and the data files. Raises ConfigError / DataError with one line."""
    validate(cfg)
    if not this_machine:
        return
    check_device(cfg.train.device)
    check_backend(cfg.method, resolve_device(cfg.train.device))  # e.g. qlora's 4-bit kernels: CUDA only
    check_writable(cfg.output_root, "results folder")
    if cfg.data.root is not None:
        LOCAL_DATA_CHECKS[cfg.task.kind](cfg.task, cfg.data.root)


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


def run(cfg: DictConfig) -> dict[str, Any]:
    """Execute one run (or return the stored result when it is complete and `force` is false).

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
        seed_everything(cfg.seed)
        provenance.reset_peak_memory(device)  # this run's own peak, also when a multirun shares the process
        logger = (make_logger(cfg, rid, {**resolved, "world_size": world.size}, str(run_dir)) if world.is_main
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
                **base_record, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), "started_at": started.isoformat(),
                "wall_time_s": sum(segments), "wall_time_segments_s": segments,
                "versions": provenance.package_versions(), "git_commit": provenance.git_commit(),
                "hardware": provenance.hardware(device)})
            raise  # the entry point reports it in one line
        adapted, counts, train = outcome.adapted, outcome.counts, outcome.train
        if not world.is_main:
            return {**base_record, "status": "complete", "rank": world.rank, "best_metrics": train.best_metrics}

        adapted.model.load_state_dict(train.best_state, strict=False)  # save the best epoch's weights
        adapted.model.cpu()
        adapted.save(run_dir / WEIGHTS_DIR)
        segments = checkpointer.segments_s()  # every process that worked on this run (resumed segments)
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
            "wall_time_s": sum(segments),
            "wall_time_segments_s": segments,
            "train_time_s": train.train_time_s,
            "precision": train.precision,
            # an evaluation-only run (method=base) has no training time
            "throughput": {"samples_per_s": train.train_samples / train.train_time_s if train.train_time_s else None,
                           "tokens_per_s": train.train_tokens / train.train_time_s if train.train_time_s else None},
            "peak_memory_bytes": provenance.peak_memory_bytes(device),
            "started_at": started.isoformat(),
            "weights": {"dir": WEIGHTS_DIR, "format": "peft" if adapted.is_peft else "safetensors"},
            "versions": provenance.package_versions(),
            "git_commit": provenance.git_commit(),
            "hardware": {**provenance.hardware(device), "processes": world.size},
            "invocation": invocation(),
            **outcome.extra,
            **save_predictions(run_dir, train.predictions),
        }
        write_json_atomic(run_dir / RESULT_FILE, record)
        checkpointer.remove()
        logger.finish(record)
    best = ", ".join(f"{k}={v:.4f}" for k, v in train.best_metrics.items() if "/" not in k)
    print(f"done {rid}: best epoch {train.best_epoch}: {best} ({record['wall_time_s']:.1f}s) -> {run_dir}")
    return record


# --- the command line: checks before Hydra writes anything, one line per failure, a sweep summary -------------

EXIT_FAILED, EXIT_USER_ERROR, EXIT_INTERRUPTED = 1, 2, 130
TRACEBACK_FILE = "traceback.txt"  # in the job's Hydra folder: the full traceback of an unexpected error
REPORT_ENV = "REPRO_SWEEP_REPORT"  # folder where each job of a multirun leaves its outcome for the summary
SWEEP_PID_ENV = "REPRO_SWEEP_PID"  # the sweep's process, which parallel jobs watch (`watch_sweep`)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def resume_hint(cfg: DictConfig) -> str:
    """Where an interrupted run continues from when the same command is run again."""
    run_dir = Path(cfg.output_root) / run_id(cfg)
    checkpoint = Checkpointer(run_dir, 0)
    for path in (checkpoint.path, checkpoint.previous):
        if path.is_file():
            return f"the same command resumes {run_dir.name} from its checkpoint {path}"
    return f"{run_dir.name} had no checkpoint yet; the same command starts it from the beginning"


def _remove_job_folder(job_dir: Path) -> None:
    """Bad input writes nothing: drop the folder Hydra made for this job, and its parents left empty up to the
    results folder."""
    shutil.rmtree(job_dir, ignore_errors=True)
    results = Path(os.environ.get("REPRO_RESULTS", "results")).absolute()
    for parent in job_dir.absolute().parents:
        if parent == results.parent:
            break
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break


def job_log() -> str | None:
    """The file this job's console output goes to when a submitit launcher (SLURM, local) runs it; else None."""
    try:
        import submitit

        return str(submitit.JobEnvironment().paths.stdout)
    except Exception:  # not a submitit job, or submitit not installed
        return None


def _report(job: int, run: str | None, status: str, reason: str = "") -> None:
    folder = os.environ.get(REPORT_ENV)
    if folder and Path(folder).is_dir():
        write_json_atomic(Path(folder) / f"{job}.json", {"job": job, "run_id": run, "status": status,
                                                         "reason": reason, "log": job_log()})


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    """One job. Any failure is one line on stderr; alone, the process exits with its status (2 bad input, 1 an
    unexpected error, 130 Ctrl-C); in a multirun the job's outcome goes to the sweep summary and the sweep goes on."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    job_dir = Path(hydra_cfg.runtime.output_dir)
    rid = run_id(cfg)
    if multirun and os.environ.get(SWEEP_PID_ENV, "").isdigit():
        watch_sweep(int(os.environ[SWEEP_PID_ENV]))
    try:
        skipped = is_complete(Path(cfg.output_root) / rid) and not cfg.force
        record = run(cfg)
    except KeyboardInterrupt:
        print(f"interrupted: {resume_hint(cfg)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
    except (ReproError, RunInProgress) as exc:
        status, reason, code = ("busy" if isinstance(exc, RunInProgress) else "failed"), str(exc), EXIT_USER_ERROR
        print(f"error: {reason}", file=sys.stderr)
        if not multirun and isinstance(exc, ReproError):
            _remove_job_folder(job_dir)
    except Exception as exc:
        trace = job_dir / TRACEBACK_FILE
        trace.write_text(traceback.format_exc())
        status, code = "failed", EXIT_FAILED
        reason = f"{type(exc).__name__}: {_first_line(exc)} (full traceback: {trace})"
        print(f"error: {rid} failed: {reason}", file=sys.stderr)
    else:
        if multirun:  # hydra.job.num exists only in a multirun
            _report(hydra_cfg.job.num, rid, "skipped" if skipped else "complete")
        return record["best_metrics"].get(cfg.task.main_metric)
    if not multirun:
        sys.exit(code)
    _report(hydra_cfg.job.num, rid, status, reason)
    return None


def check_command_line(argv: list[str]) -> tuple[bool, int] | None:
    """Compose every job of the command line and `preflight` it, before Hydra creates any folder: bad input
    anywhere in a sweep stops it with one line. Returns (multirun, number of jobs), or None when Hydra only
    prints (--cfg, --info, --help)."""
    from hydra._internal.utils import get_args_parser

    from repro.plan import Composer, expand

    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion or args.experimental_rerun:
        return None
    sweep_file = None
    if args.config_dir or args.config_name:
        sweep_file = Path(args.config_dir or CONF_DIR) / f"{args.config_name or 'train'}.yaml"
    compose = Composer(sweep_file)
    jobs = expand(compose, args.overrides) if args.multirun else [args.overrides]
    hydra_cfg = compose(jobs[0], hydra_cfg=True).hydra
    # a SLURM job runs on another machine: its device, data and results folder are checked there
    this_machine = "slurm" not in str(hydra_cfg.launcher.get("_target_", "")).lower()
    for i, job in enumerate(jobs):
        try:
            preflight(compose(job), this_machine)
        except ReproError as exc:
            where = f" (sweep job {i}: {' '.join(job)})" if args.multirun else ""
            raise type(exc)(f"{exc}{where}") from None
    check_writable(hydra_cfg.sweep.dir if args.multirun else hydra_cfg.run.dir, "Hydra's output folder")
    return args.multirun, len(jobs)


def sweep_summary(folder: Path, n_jobs: int) -> tuple[str, bool]:
    """The summary of a multirun from its jobs' reports, and whether any job failed (or never reported)."""
    reports = {r["job"]: r for r in (json.loads(p.read_text()) for p in folder.glob("*.json"))}
    counts = {s: sum(r["status"] == s for r in reports.values()) for s in ("complete", "skipped", "busy", "failed")}
    missing = [j for j in range(n_jobs) if j not in reports]
    lines = [f"sweep: {n_jobs} runs: {counts['complete']} complete, {counts['skipped']} skipped (already complete), "
             f"{counts['busy']} busy (run by another process), {counts['failed'] + len(missing)} failed"]
    lines += [f"  failed: job {j} {r['run_id']}: {r['reason']}" + (f" (log: {r['log']})" if r.get("log") else "")
              for j, r in sorted(reports.items()) if r["status"] == "failed"]
    lines += [f"  failed: job {j}: no report (the job died; see its log)" for j in missing]
    logs = sorted({str(Path(r["log"]).parent) for r in reports.values() if r.get("log")})
    lines += [f"  job logs (submitit): {folder}" for folder in logs]
    return "\n".join(lines), bool(counts["failed"] or missing)


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


def quiet_library_noise() -> None:
    """Routine library chatter off the console: the head's load report, FutureWarnings (deprecations for the
    code's maintainers, not about the run)."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("transformers.modeling_utils").addFilter(_NoRoutineLoadReport())


@exit_on_user_error
def _main(argv: list[str]) -> None:
    check_group_overrides(argv)
    quiet_library_noise()
    checked = check_command_line(argv)
    if checked is None or not checked[0]:
        _hydra_main()
        return
    reports = Path(os.environ.get("REPRO_RESULTS", "results")) / "hydra"
    reports.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".sweep-report-", dir=reports))
    os.environ[REPORT_ENV] = str(folder)
    os.environ[SWEEP_PID_ENV] = str(os.getpid())
    try:
        _hydra_main()
        summary, failed = sweep_summary(folder, checked[1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(summary, file=sys.stderr if failed else sys.stdout)
    if failed:
        sys.exit(EXIT_FAILED)


def main() -> None:
    try:
        _main(sys.argv[1:])
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
