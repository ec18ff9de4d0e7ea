"""`python -m repro.train task=glue/sst2 model=minilm-l6 method=lora seed=0`: the command line.

Checks every job of the command line before Hydra writes anything (one line per failure, exit 2), runs each job
(repro.runner.run: config -> task data -> model -> method -> train/evaluate -> result record), and summarises a
sweep. Runs are stored under `results/runs/<run_id>/`; a run whose complete result exists is skipped unless
`force=true`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import _thread
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from repro.checkpoint import Checkpointer
from repro.config import CONF_DIR, check_group_overrides, check_writable, run_id
from repro.errors import ConfigError, ReproError, exit_on_user_error, one_line
from repro.results import write_json_atomic
from repro.runner import RunInProgress, preflight, quiet_library_noise, run, stored_result

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
    orphaned = threading.Event()
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, signal.SIG_DFL):
        # a sweep started in the background by a script (`make ... &`) inherits SIGINT ignored, and then
        # `interrupt_main` does nothing: keep ignoring Ctrl-C from outside (where it was ignored), but stop when
        # the sweep is gone
        def interrupt_when_orphaned(signum: int, frame: object) -> None:
            if orphaned.is_set() or previous == signal.SIG_DFL:
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, interrupt_when_orphaned)

    def watch() -> None:
        while os.getppid() == sweep_pid:
            time.sleep(interval_s)
        print(f"error: the sweep (pid {sweep_pid}) that started this job is gone; stopping the job",
              file=sys.stderr, flush=True)
        orphaned.set()
        _thread.interrupt_main()
        time.sleep(grace_s)
        os._exit(EXIT_INTERRUPTED)

    threading.Thread(target=watch, name="watch-sweep", daemon=True).start()
    return True


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
    quiet_library_noise()  # also here: a parallel sweep's jobs run in worker processes that `_main` never ran in
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    job_dir = Path(hydra_cfg.runtime.output_dir)
    rid = run_id(cfg)
    if multirun and os.environ.get(SWEEP_PID_ENV, "").isdigit():
        watch_sweep(int(os.environ[SWEEP_PID_ENV]))
    try:
        skipped = stored_result(cfg, rid) is not None
        record = run(cfg)
    except KeyboardInterrupt:
        print(f"interrupted: {resume_hint(cfg)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
    except (ReproError, RunInProgress) as exc:
        status, reason, code = ("busy" if isinstance(exc, RunInProgress) else "failed"), str(exc), EXIT_USER_ERROR
        print(f"error: {one_line(reason)}", file=sys.stderr)
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


def check_overrides_apply(cfg: DictConfig, overrides: list[str]) -> None:
    """An explicit `method.learning_rate=` that the composed run would not use (a scale's recipe sets
    `train.learning_rate` for this task and method) is refused, naming the setting that applies."""
    keys = {o.partition("=")[0].lstrip("+~") for o in overrides}
    if "method.learning_rate" not in keys or "train.learning_rate" in keys:
        return
    used, given = cfg.train.learning_rate, cfg.method.learning_rate
    if used != given:
        raise ConfigError(f"method.learning_rate={given} does not apply here: scale={cfg.get('scale_name')} sets "
                          f"train.learning_rate={used} for task {cfg.task.name} and method {cfg.method.name} "
                          f"(its recipe); override train.learning_rate instead")


def check_command_line(argv: list[str]) -> tuple[bool, int] | None:
    """Compose every job of the command line and `preflight` it, before Hydra creates any folder: bad input
    anywhere in a sweep stops it with one line. Returns (multirun, number of jobs), or None when Hydra only
    prints (--cfg, --info, --help); `--cfg job` gets Hydra's `--resolve` added to sys.argv, which Hydra reads."""
    from hydra._internal.utils import get_args_parser

    from repro.plan import Composer, expand

    args = get_args_parser().parse_args(argv)
    if args.cfg == "job" and not args.resolve:
        sys.argv.append("--resolve")  # print the values the run gets, not its `${oc.select:...}` interpolations
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
            cfg = compose(job)
            check_overrides_apply(cfg, job)
            preflight(cfg, this_machine)
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
