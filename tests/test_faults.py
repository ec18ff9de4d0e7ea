"""Fault tolerance: a SIGKILLed run resumes from its checkpoint and ends with the same metrics as an
uninterrupted one; failures are recorded with their reason and a sweep goes on; re-running a sweep runs only
what is missing or failed; concurrent writers never leave a partial record; a dependency run (MNLI init) is
resolved by the runner; the jobs of a parallel sweep stop when the sweep process is killed."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repro.checkpoint import CHECKPOINT_FILE, Checkpointer
from repro.loop import TrainResult
from repro.results import RESULT_FILE, load, read_result, write_json_atomic
from repro.runner import RunInProgress, run, run_lock

REPO = Path(__file__).resolve().parent.parent
HANG_GUARD_S = 1800  # subprocess timeouts guard against a hang; they are not speed requirements


def tiny_overrides(data_root, *extra):
    return ["model=tiny-bert", "task=glue/sst2", "scale=smoke", f"data.root={data_root}",
            "data.max_train_samples=800", "data.max_eval_samples=200", "train.batch_size=4", "train.epochs=2",
            "train.checkpoint_every_steps=25", "seed=3", *extra]


def env_for(results: Path) -> dict:
    return {**os.environ, "REPRO_RESULTS": str(results), "HF_HUB_OFFLINE": "1"}


def test_sigkilled_run_resumes_and_matches_uninterrupted(compose, data_root, tmp_path):
    started = time.perf_counter()
    reference = run(compose(*tiny_overrides(data_root)))
    # waits scale with this machine's measured speed (a loaded machine is slow, not broken): ten times what the
    # same run just took in this process, plus a subprocess's imports
    patience = 120 + 10 * (time.perf_counter() - started)

    results = tmp_path / "killed"
    args = [sys.executable, "-m", "repro.train", *tiny_overrides(data_root)]
    proc = subprocess.Popen(args, cwd=REPO, env=env_for(results), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + patience
    checkpoints = []
    while time.time() < deadline and proc.poll() is None:
        checkpoints = list(results.glob(f"runs/*/{CHECKPOINT_FILE}"))
        if checkpoints and checkpoints[0].stat().st_size > 0:
            time.sleep(0.3)  # let it run on past the checkpoint before the kill
            break
        time.sleep(0.05)
    assert checkpoints and proc.poll() is None, "run ended before it could be killed mid-way"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = checkpoints[0].parent
    assert not (run_dir / RESULT_FILE).exists()

    resumed = subprocess.run(args, cwd=REPO, env=env_for(results), capture_output=True, text=True,
                             timeout=patience)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from checkpoint" in resumed.stdout
    record = read_result(run_dir)
    assert record["status"] == "complete" and record["run_id"] == reference["run_id"]
    assert record["best_metrics"] == reference["best_metrics"]
    assert [e["train_loss"] for e in record["epochs"]] == pytest.approx(
        [e["train_loss"] for e in reference["epochs"]], rel=1e-6)
    assert record["optimizer_steps"] == reference["optimizer_steps"]
    assert not (run_dir / CHECKPOINT_FILE).exists()
    # the killed process's time counts too
    assert len(record["wall_time_segments_s"]) == 2 and record["wall_time_s"] == sum(record["wall_time_segments_s"])


def _session_workers(sid: int) -> list[str]:
    """The joblib (loky) worker processes left in a session (`ps -ww`: never cut at the terminal width)."""
    listing = subprocess.run(["ps", "-ww", "-o", "args=", "--sid", str(sid)], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if "LokyProcess" in line]


@pytest.mark.slow
def test_killing_a_parallel_sweep_stops_its_jobs(data_root, tmp_path):
    """SIGTERM to the sweep process alone (as a script or scheduler sends it) must not leave its joblib workers
    training unseen: each job notices its sweep is gone, stops as on Ctrl-C (keeping its checkpoint) and exits.
    The sweep starts with SIGINT ignored, as a script's `make ... &` starts it (where a plain `interrupt_main`
    does nothing); with Python's own handler the job stops the same way."""
    args = [sys.executable, "-m", "repro.train", "--multirun", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            *tiny_overrides(data_root, "train.epochs=100", "seed=3,4")]  # each job alone would train for minutes
    log = tmp_path / "sweep.err"
    with open(log, "w") as err:
        sweep = subprocess.Popen(args, cwd=REPO, env=env_for(tmp_path), stdout=subprocess.DEVNULL, stderr=err,
                                 start_new_session=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.time() + 180
        while time.time() < deadline and len(list(tmp_path.glob(f"runs/*/{CHECKPOINT_FILE}"))) < 2:
            assert sweep.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        assert len(_session_workers(sweep.pid)) == 2 and len(list(tmp_path.glob(f"runs/*/{CHECKPOINT_FILE}"))) == 2
        sweep.terminate()  # the sweep process only, not its process group
        sweep.wait(timeout=30)
        deadline = time.time() + 60
        while time.time() < deadline and _session_workers(sweep.pid):
            time.sleep(0.5)
        assert not _session_workers(sweep.pid), "the sweep's workers outlived it"
    finally:
        try:
            os.killpg(sweep.pid, signal.SIGKILL)  # what is left of the group (loky's resource trackers)
        except ProcessLookupError:
            pass
    err = log.read_text()
    assert err.count(f"the sweep (pid {sweep.pid}) that started this job is gone") == 2, err[-3000:]
    assert err.count("interrupted: the same command resumes") == 2, err[-3000:]
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 2 and not list(tmp_path.glob(f"runs/*/{RESULT_FILE}"))  # stopped mid-way, no results
    # each resumes from a checkpoint (the newest, or the one before if the interrupt came between the two renames)
    assert all(Checkpointer(run_dir, 25).load(allowed=[TrainResult]) is not None for run_dir in run_dirs)


def test_failed_run_is_recorded_and_the_sweep_goes_on_then_reruns_only_missing(data_root, tmp_path):
    # 600 prefix tokens overflow the tiny model's 512 positions: a real runtime failure, not a config error
    args = [sys.executable, "-m", "repro.train", "--multirun", "method=prefix_embed",
            "method.prefix_length=4,600", *tiny_overrides(data_root, "data.max_train_samples=40",
                                                         "data.max_eval_samples=40", "train.epochs=1")]
    first = subprocess.run(args, cwd=REPO, env=env_for(tmp_path), capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert first.returncode == 1, first.stderr  # the sweep goes on, then says a run failed
    assert "sweep: 2 runs: 1 complete, 0 skipped (already complete), 0 busy (run by another process), 1 failed" \
        in first.stderr
    frame = load(tmp_path / "runs", include_incomplete=True)
    assert sorted(frame["status"]) == ["complete", "failed"]
    failed_dir = next((tmp_path / "runs").glob("*/"))
    records = {d.name: read_result(d) for d in (tmp_path / "runs").iterdir()}
    failed = next(r for r in records.values() if r["status"] == "failed")
    assert re.match(r"^\w+Error: .+", failed["error"]) and "Traceback" in failed["traceback"]
    assert failed["config"]["method"]["prefix_length"] == 600
    assert failed_dir.exists()

    second = subprocess.run(args, cwd=REPO, env=env_for(tmp_path), capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert second.returncode == 1
    assert second.stdout.count("skip ") == 1  # the complete run is not repeated
    # the failed one ran again (and fails again)
    assert "sweep: 2 runs: 0 complete, 1 skipped (already complete), 0 busy (run by another process), 1 failed" \
        in second.stderr
    assert len(load(tmp_path / "runs")) == 1


def _writer(path: str, tag: int, n: int) -> None:
    for i in range(n):
        write_json_atomic(Path(path), {"tag": tag, "i": i, "payload": "x" * 200_000})


def test_concurrent_writers_never_leave_a_partial_record(tmp_path):
    path = tmp_path / "run" / RESULT_FILE
    write_json_atomic(path, {"tag": -1, "i": -1, "payload": ""})
    ctx = mp.get_context("spawn")
    writers = [ctx.Process(target=_writer, args=(str(path), tag, 60)) for tag in range(2)]
    for w in writers:
        w.start()
    reads = 0
    while any(w.is_alive() for w in writers):
        record = json.loads(path.read_text())  # raises on a partial file
        assert set(record) == {"tag", "i", "payload"}
        reads += 1
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert reads > 0 and json.loads(path.read_text())["i"] == 59
    assert not list(path.parent.glob(".*.tmp"))


def test_a_run_is_trained_by_one_worker_at_a_time(tmp_path):
    with run_lock(tmp_path / "r"):
        with pytest.raises(RunInProgress):
            with run_lock(tmp_path / "r"):
                pass
    with run_lock(tmp_path / "r"):  # released after the first holder finished
        pass


def test_mnli_style_dependency_runs_first_and_is_reused(compose, data_root, tmp_path, capsys):
    overrides = tiny_overrides(data_root, "task=glue/rte", "init_from_task=glue/stsb", "data.max_train_samples=40",
                               "data.max_eval_samples=40", "train.epochs=1")
    record = run(compose(*overrides))
    assert "starts from the glue/stsb run" in capsys.readouterr().out
    assert record["init_from"].startswith(str(tmp_path / "runs" / "stsb_tiny-bert_lora_s3_"))
    frame = load(tmp_path / "runs")
    assert sorted(frame["task"]) == ["rte", "stsb"]
    run(compose(*overrides, "force=true"))  # the dependency's result is reused, not re-run
    assert "starts from" not in capsys.readouterr().out


def test_missing_dependency_data_fails_with_a_clear_message(compose, data_root):
    from repro.errors import DataError

    with pytest.raises(DataError, match=r"rte starts from a glue/mnli checkpoint, which cannot be produced: "
                                        r"missing data file .*glue/mnli/train.tsv"):
        run(compose(*tiny_overrides(data_root, "task=glue/rte", "init_from_task=glue/mnli")))


def test_two_process_data_parallel_run_writes_one_complete_record(data_root, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    args = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "repro.train", "model=tiny-bert",
            "scale=smoke", f"data.root={data_root}", "data.max_train_samples=96", "data.max_eval_samples=64",
            "train.batch_size=8", "train.num_threads=1"]
    proc = subprocess.run(args, cwd=REPO, env=env_for(tmp_path), capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    record = read_result(runs[0])
    assert record["status"] == "complete" and record["hardware"]["processes"] == 2
    assert record["train_examples"] == 96 and record["throughput"]["samples_per_s"] > 0
    # 96 examples, 2 processes x 8 per step: 6 optimizer steps, all examples seen once
    assert record["optimizer_steps"] == 6
    # every rank writes its own timestamped log; only rank 0 prints to the console
    logs = {rank: runs[0] / name for rank, name in ((0, "train.log"), (1, "train.rank1.log"))}
    for rank, log in logs.items():
        epoch_lines = [line for line in log.read_text().splitlines() if " epoch 1: train_loss " in line]
        assert len(epoch_lines) == 1 and re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", epoch_lines[0]), (rank, log)
    assert proc.stdout.count("epoch 1: train_loss ") == 1, proc.stdout[-2000:]
