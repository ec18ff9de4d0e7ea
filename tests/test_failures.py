"""Faults say what happened: an unexpected error is one line with the path of its full traceback (exit 1), Ctrl-C
says where the run resumes from (exit 130), a multirun ends with a summary and exits 1 when a run failed; a
corrupt checkpoint is moved aside and the previous one (or the start) is used; a corrupt result.json is reported
with its path and counts as missing; records respect the umask; wall time adds up over resumed segments.

The entry-point tests run Hydra in-process with `repro.train.run` replaced by a stand-in, so no model trains."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

import repro.train as train
from repro import results, runner, tables
from repro.checkpoint import CHECKPOINT_FILE, PREVIOUS_FILE, Checkpointer
from repro.results import RESULT_FILE, corrupt_records, is_complete, read_result, write_json_atomic


# --- the entry point ------------------------------------------------------------------------------------------

def _cli(monkeypatch, tmp_path: Path, data_root: Path, fake_run, *argv: str) -> int:
    """`python -m repro.train <argv>` with `run` replaced by `fake_run`; returns the exit status. It runs in a forked
    child (the stand-in and the environment are inherited), whose stdout/stderr are replayed here for `capsys`: run
    in the test process itself, Hydra's set-up (logging, streams) outlived the test and closed pytest's capture
    ("I/O operation on closed file", "lost sys.stderr") later in the session."""
    monkeypatch.setenv("REPRO_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("REPRO_DATA_ROOT", str(data_root))
    monkeypatch.setattr(train, "run", fake_run)
    args = [*argv, "model=tiny-bert", "scale=smoke"]
    flags = [a for a in args if a.startswith("-")]
    monkeypatch.setattr(sys, "argv", ["repro.train", *flags, *(a for a in args if a not in flags)])
    out, err = tmp_path / "cli.out", tmp_path / "cli.err"
    sys.stdout.flush(), sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            sys.stdout, sys.stderr = open(out, "w"), open(err, "w")
            train.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - reported through the exit status
            code = 99
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(code)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    sys.stdout.write(out.read_text()), sys.stderr.write(err.read_text())
    return status


def _complete(cfg):
    return {"status": "complete", "best_metrics": {cfg.task.main_metric: 0.5}}


def test_single_run_that_completes_exits_0_without_a_sweep_summary(monkeypatch, tmp_path, data_root, capsys):
    # a single run has no hydra.job.num: reading it there crashed every successful `python -m repro.train`
    assert _cli(monkeypatch, tmp_path, data_root, _complete) == 0
    err = capsys.readouterr().err
    assert "error" not in err and "sweep:" not in err, err


def test_unexpected_error_is_one_line_with_the_traceback_file(monkeypatch, tmp_path, data_root, capsys):
    def broken(cfg):
        raise RuntimeError("CUDA out of memory\nsecond line")

    assert _cli(monkeypatch, tmp_path, data_root, broken) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("error: sst2_tiny-bert_lora_s0_") and " failed: RuntimeError: CUDA out of memory " in err[0]
    trace = Path(err[0].split("(full traceback: ")[1].rstrip(")"))
    assert trace.is_file() and "Traceback" in trace.read_text() and "second line" in trace.read_text()


def test_ctrl_c_says_where_the_run_resumes_and_exits_130(monkeypatch, tmp_path, data_root, capsys):
    def interrupted(cfg):
        run_dir = Path(cfg.output_root) / train.run_id(cfg)
        Checkpointer(run_dir, 0).save({"model": {}, "optimizer": {}, "scheduler": {}})
        raise KeyboardInterrupt

    assert _cli(monkeypatch, tmp_path, data_root, interrupted) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted: the same command resumes sst2_tiny-bert_lora_s0_"), err
    assert err[0].endswith(f"from its checkpoint {tmp_path}/results/runs/{err[0].split()[5]}/{CHECKPOINT_FILE}")


def test_sweep_ends_with_a_summary_and_fails_when_a_run_failed(monkeypatch, tmp_path, data_root, capsys):
    def seed_1_breaks(cfg):
        if cfg.seed == 1:
            raise ValueError("loss is NaN")
        return _complete(cfg)

    assert _cli(monkeypatch, tmp_path, data_root, seed_1_breaks, "-m", "seed=0,1,2") == 1
    captured = capsys.readouterr()
    assert ("sweep: 3 runs: 2 complete, 0 skipped (already complete), 0 busy (run by another process), 1 failed"
            in captured.err)
    failed = [line for line in captured.err.splitlines() if line.startswith("  failed: job 1 sst2_tiny-bert_lora_s1_")]
    assert len(failed) == 1 and "ValueError: loss is NaN (full traceback: " in failed[0]
    assert not list((tmp_path / "results" / "hydra").glob(".sweep-report-*"))  # the reports are cleaned up

    assert _cli(monkeypatch, tmp_path, data_root, _complete, "-m", "seed=0,1,2") == 0
    assert "sweep: 3 runs: 3 complete, 0 skipped" in capsys.readouterr().out


def test_sweep_counts_runs_already_complete_as_skipped(monkeypatch, tmp_path, data_root, capsys):
    def done_already(cfg):
        run_dir = Path(cfg.output_root) / train.run_id(cfg)
        write_json_atomic(run_dir / RESULT_FILE, {"status": "complete"})
        return _complete(cfg)

    assert _cli(monkeypatch, tmp_path, data_root, done_already, "-m", "seed=0,1") == 0
    assert _cli(monkeypatch, tmp_path, data_root, done_already, "-m", "seed=0,1") == 0
    assert "sweep: 2 runs: 0 complete, 2 skipped (already complete)" in capsys.readouterr().out


# --- checkpoints ----------------------------------------------------------------------------------------------

def _state(step: int) -> dict:
    return {"model": {"w": torch.full((2,), float(step))}, "optimizer": {}, "scheduler": {}, "step": step}


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "not a checkpoint"])
def test_corrupt_checkpoint_is_moved_aside_and_the_previous_one_used(tmp_path, capsys, damage):
    checkpointer = Checkpointer(tmp_path, every_steps=10)
    checkpointer.save(_state(10))
    checkpointer.save(_state(20))
    assert (tmp_path / PREVIOUS_FILE).is_file()  # the last two are kept
    newest = tmp_path / CHECKPOINT_FILE
    if damage == "truncated":
        newest.write_bytes(newest.read_bytes()[:100])
    elif damage == "random bytes":
        newest.write_bytes(os.urandom(4096))
    else:
        torch.save([1, 2, 3], newest)

    state = Checkpointer(tmp_path, every_steps=10).load()
    assert state["step"] == 10
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"warning: corrupt checkpoint {newest} (")
    assert out[0].endswith(f"; trying {tmp_path / PREVIOUS_FILE}")
    aside = list(tmp_path.glob(f"{CHECKPOINT_FILE}.corrupt-*"))
    assert len(aside) == 1 and f"moved to {aside[0]}" in out[0] and not newest.exists()


class _Payload:
    """A pickled callable: unpickling it would create a file (what a crafted checkpoint could do with any code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_carrying_a_pickled_callable_is_refused_without_running_it(tmp_path, capsys):
    checkpointer = Checkpointer(tmp_path, every_steps=10)
    marker = tmp_path / "code-ran"
    torch.save({**_state(10), "evil": _Payload(marker)}, tmp_path / CHECKPOINT_FILE)
    assert Checkpointer(tmp_path, every_steps=10).load() is None
    assert not marker.exists()  # the payload never ran
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"warning: corrupt checkpoint {tmp_path / CHECKPOINT_FILE} (")
    checkpointer.save(_state(20))  # a real checkpoint (the loop's TrainResult included) still loads
    from repro.loop import TrainResult

    checkpointer.save({**_state(30), "result": TrainResult(best_epoch=2, epochs=[{"epoch": 1}])})
    assert Checkpointer(tmp_path, every_steps=10).load(allowed=[TrainResult])["result"].best_epoch == 2


def test_interrupted_save_leaves_the_last_checkpoint_and_no_partial_file(tmp_path, monkeypatch):
    checkpointer = Checkpointer(tmp_path, every_steps=10)
    checkpointer.save(_state(10))

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save(_state(20))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE]
    assert Checkpointer(tmp_path, every_steps=10).load()["step"] == 10


def test_ctrl_c_during_a_save_stops_after_the_checkpoint_is_complete(tmp_path, monkeypatch, request):
    """torch's zip writer turns a KeyboardInterrupt raised inside it into a RuntimeError (the run would fail
    instead of stopping): a Ctrl-C that arrives mid-write is held until the checkpoint is written. Python's Ctrl-C
    handler is set first: a suite started in the background by a script inherits SIGINT ignored."""
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, outer))  # restored even when an assertion fails
    checkpointer = Checkpointer(tmp_path, every_steps=10)
    real_save = torch.save

    def ctrl_c_mid_write(obj, f, *args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", ctrl_c_mid_write)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save(_state(20))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE]
    assert Checkpointer(tmp_path, every_steps=10).load()["step"] == 20
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_loadable_checkpoint_means_starting_from_the_beginning(tmp_path, capsys):
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"\x00" * 10)
    assert Checkpointer(tmp_path, every_steps=10).load() is None
    assert capsys.readouterr().out.strip().endswith("; starting from the beginning")
    assert Checkpointer(tmp_path, every_steps=10).load() is None  # moved aside: not reported again
    assert capsys.readouterr().out == ""


def test_wall_time_adds_up_over_resumed_segments(tmp_path):
    first = Checkpointer(tmp_path, every_steps=10)
    first.segment_start -= 5.0  # this process has been running for 5 s
    first.save(_state(10))
    second = Checkpointer(tmp_path, every_steps=10)
    second.load()
    segments = second.segments_s()
    assert len(segments) == 2 and segments[0] == pytest.approx(5.0, abs=1.0) and segments[1] < 5.0
    second.remove()
    assert not (tmp_path / CHECKPOINT_FILE).exists() and not (tmp_path / PREVIOUS_FILE).exists()


# --- result records -------------------------------------------------------------------------------------------

def _record(run_id: str) -> dict:
    return {"run_id": run_id, "status": "complete", "task": "sst2", "model": "tiny-bert", "method": "lora", "seed": 0,
            "best_epoch": 1, "main_metric": "accuracy", "best_metrics": {"accuracy": 0.75}, "wall_time_s": 1.0,
            "params": {"trainable": 10, "head": 2}, "config": {"scale_name": "smoke", "task": {"name": "sst2"}}}


@pytest.fixture
def runs_with_corrupt_records(tmp_path) -> Path:
    runs = tmp_path / "results" / "runs"
    write_json_atomic(runs / "good" / RESULT_FILE, _record("good"))
    (runs / "truncated").mkdir()
    (runs / "truncated" / RESULT_FILE).write_text(json.dumps(_record("truncated"))[:40])
    (runs / "list").mkdir()
    (runs / "list" / RESULT_FILE).write_text("[]")
    return runs


def test_corrupt_records_count_as_missing(runs_with_corrupt_records):
    runs = runs_with_corrupt_records
    assert is_complete(runs / "good")
    assert not is_complete(runs / "truncated") and read_result(runs / "list") is None
    problems = corrupt_records(runs)
    assert [p.split(":")[0] for p in problems] == [str(runs / "list" / RESULT_FILE),
                                                   str(runs / "truncated" / RESULT_FILE)]


def test_results_reports_corrupt_records_honours_repro_results_and_glue_task(runs_with_corrupt_records, monkeypatch,
                                                                            capsys):
    monkeypatch.setenv("REPRO_RESULTS", str(runs_with_corrupt_records.parent))
    results.main(["--task", "glue/sst2"])
    captured = capsys.readouterr()
    assert f"warning: {runs_with_corrupt_records / 'truncated' / RESULT_FILE}: unreadable or partial record" in \
        captured.err
    assert f"warning: {runs_with_corrupt_records / 'list' / RESULT_FILE}: not a run record" in captured.err
    assert "good" in captured.out and "0.7500" in captured.out
    results.main(["--task", "glue/rte"])
    assert "no complete runs under" in capsys.readouterr().out


def test_tables_report_corrupt_records_and_do_not_crash(runs_with_corrupt_records, monkeypatch, capsys):
    monkeypatch.setenv("REPRO_RESULTS", str(runs_with_corrupt_records.parent))
    try:
        tables.main(["--runs", str(runs_with_corrupt_records)])
    except SystemExit as exc:  # a one-line user error is fine; a traceback is not
        assert exc.code == 2
    err = capsys.readouterr().err
    assert f"warning: {runs_with_corrupt_records / 'list' / RESULT_FILE}: not a run record" in err


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_records_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / RESULT_FILE, {"status": "complete"})
    finally:
        os.umask(old)
    assert (tmp_path / RESULT_FILE).stat().st_mode & 0o777 == mode


def test_routine_load_report_is_silenced_but_a_missing_encoder_weight_is_not():
    import logging

    def passes(message: str) -> bool:
        record = logging.LogRecord("transformers.modeling_utils", logging.WARNING, "", 0, message, None, None)
        return runner._NoRoutineLoadReport().filter(record)

    report = ("BertForSequenceClassification LOAD REPORT from: model\nKey | Status | \n---+---\n"
              "classifier.{weight, bias} | MISSING | \nbert.pooler.dense.weight | UNEXPECTED | | \n\nNotes:\n"
              "- MISSING:\tthose params were newly initialized because missing from the checkpoint.")
    assert not passes(report)
    assert passes(report.replace("classifier.{weight, bias}", "bert.encoder.layer.0.attention.self.query.weight"))
    assert passes("some other warning")
