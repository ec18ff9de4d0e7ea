"""The result store: one directory per run under `results/runs/<run_id>/`.

A run directory holds `result.json` (self-describing: resolved config, counts, per-epoch and best metrics,
timings, provenance) and the trained weights (`adapter/`: peft `save_pretrained` format, or
`trainable.safetensors`). `result.json` is written last and atomically, so its presence with
`status == "complete"` marks a finished run; a crash never leaves a partial record.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

RESULT_FILE = "result.json"
WEIGHTS_DIR = "adapter"
LOCK_FILE = ".lock"  # held (flock) by the process training or re-scoring a run
SOURCE_IMPORTED = "imported"  # result.json `source` of a checkpoint scored without training (repro.evaluate)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def match_umask(folder: Path) -> None:
    """Give the files a library wrote under `folder` the permissions of any new file (safetensors writes 0600),
    so that a run folder reads the same to everyone who can read the rest of it."""
    mode = 0o666 & ~_umask()
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(mode)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path` (atomic on POSIX). The file
    gets the permissions of any new file (0666 less the umask), not mkstemp's private 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_problem(run_dir: Path) -> str | None:
    """Why `run_dir/result.json` cannot be used as a record (unreadable, not JSON, not a record), or None when it
    is one or does not exist."""
    path = run_dir / RESULT_FILE
    try:
        record = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{path}: unreadable or partial record ({type(exc).__name__}: {exc})"
    if not isinstance(record, dict) or "status" not in record:
        return f"{path}: not a run record (a JSON {type(record).__name__} without a status)"
    return None


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The run's record, or None when there is none or it is corrupt (see `record_problem`)."""
    try:
        record = json.loads((run_dir / RESULT_FILE).read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and "status" in record else None


def corrupt_records(root: str | Path) -> list[str]:
    """One line per run folder under `root` whose result.json is corrupt or partial (these runs count as
    missing: `repro.train` runs them again)."""
    problems = (record_problem(d) for d in sorted(Path(root).glob("*/")) if d.is_dir())
    return [p for p in problems if p]


def is_complete(run_dir: Path) -> bool:
    record = read_result(run_dir)
    return record is not None and record.get("status") == "complete"


def is_records_folder(root: Path) -> bool:
    """A folder of committed records (`<run_id>.json` files, repro.records) rather than of run folders."""
    return any(root.glob("*.json"))


def complete_records(root: str | Path) -> list[tuple[Path | None, dict[str, Any]]]:
    """(run folder, record) of every complete run under `root`: run folders (`<root>/<run_id>/result.json`), or a
    folder of committed records (`<root>/<run_id>.json`, no run folder: None)."""
    root = Path(root)
    if is_records_folder(root):
        pairs = [(None, json.loads(p.read_bytes())) for p in sorted(root.glob("*.json"))]
    else:
        pairs = [(d, read_result(d)) for d in sorted(root.glob("*/")) if d.is_dir()]
    return [(d, r) for d, r in pairs if isinstance(r, dict) and r.get("status") == "complete"]


def _row(record: dict[str, Any]) -> dict[str, Any]:
    row = {k: record.get(k) for k in ("run_id", "status", "task", "model", "method", "seed", "best_epoch",
                                      "main_metric", "wall_time_s", "train_time_s", "optimizer_steps")}
    row.update({f"params.{k}": v for k, v in record.get("params", {}).items()})
    row.update({f"best.{k}": v for k, v in (record.get("best_metrics") or {}).items()})
    row.update({f"throughput.{k}": v for k, v in record.get("throughput", {}).items()})
    row["peak_memory_bytes"] = record.get("peak_memory_bytes")
    row["adapter_bytes"] = record.get("adapter_bytes")
    row["config"] = record.get("config")
    row["precision"] = record.get("precision") or "fp32"  # what ran (records before the knob: fp32)
    return row


def load(root: str | Path = "results/runs", include_incomplete: bool = False) -> pd.DataFrame:
    """All runs under `root` (run folders or committed records) as a DataFrame, one row per run (flattened:
    `params.*`, `best.*`, ...)."""
    if include_incomplete and not is_records_folder(Path(root)):
        records = [r for d in sorted(Path(root).glob("*/")) if d.is_dir() and (r := read_result(d))]
    else:
        records = [r for _, r in complete_records(root)]
    return pd.DataFrame([_row(r) for r in records])


def default_runs_root() -> Path:
    return Path(os.environ.get("REPRO_RESULTS", "results")) / "runs"


def main(argv: list[str] | None = None) -> None:
    """`python -m repro.results [--task T] [--model M] [--method X] [--scale S]`: print stored runs
    (under $REPRO_RESULTS/runs, or results/runs). `--task` takes `sst2` or `glue/sst2`, as `repro.train` does."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--root", type=Path, default=None, help="default: $REPRO_RESULTS/runs or results/runs")
    for key in ("task", "model", "method", "scale"):
        parser.add_argument(f"--{key}")
    args = parser.parse_args(argv)
    root = args.root or default_runs_root()
    for problem in corrupt_records(root):
        print(f"warning: {problem}; left out", file=sys.stderr)
    frame = load(root)
    if frame.empty:
        print(f"no complete runs under {root}")
        return
    frame["scale"] = frame["config"].map(lambda c: c.get("scale_name"))
    if args.task:
        args.task = args.task.rsplit("/", 1)[-1]  # glue/sst2 -> sst2 (records store the task's name)
    for key in ("task", "model", "method", "scale"):
        if getattr(args, key):
            frame = frame[frame[key] == getattr(args, key)]
    if frame.empty:
        print(f"no complete runs under {root} match " + " ".join(
            f"--{k} {getattr(args, k)}" for k in ("task", "model", "method", "scale") if getattr(args, k)))
        return
    columns = ["run_id", "method", "seed", "params.trainable", "params.head", "best_epoch", "main_metric",
               "wall_time_s"]
    frame = frame.assign(main_value=[row[f"best.{row['main_metric']}"] for _, row in frame.iterrows()])
    print(frame[columns + ["main_value"]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
