"""`python -m repro.bench.compile [--methods lora,full_ft] [--threads 1] [train overrides ...]`: does
`train.compile=true` pay for a whole run on this machine?

`torch.compile` saves time per step only after it has compiled, and it compiles again for every new input shape;
a cpu-scale run (length-grouped batches of varying length, a few hundred steps) may never win that back. So this
benchmark times what a user waits for: the same `python -m repro.train` run twice per method, eager and compiled,
each in a fresh process with a fresh Inductor cache, from start to exit (model loading, compilation, training and
every evaluation). It reports each run's wall time, its training time, its best dev metric (the two should agree to
noise: compilation reorders floating-point sums) and the compiled/eager speed-up. The project's rule (issue 30):
use compilation where a whole run gets at least 1.2x faster; the caption says whether it does here.

The default job is a short Table 2-like run: SST-2 on the embedded MiniLM, 1,000 training and 500 dev examples,
2 epochs. Overrides after the options replace or extend it (e.g. `train.epochs=8 task=glue/stsb`).
Writes results/bench/compile_<model>.{md,csv}.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from repro.bench import hardware_label, write_and_show
from repro.errors import ReproError, exit_on_user_error
from repro.results import complete_records

DEFAULT_JOB = ["task=glue/sst2", "model=minilm-l6", "scale=cpu", "init_from_task=null", "seed=0",
               "data.max_train_samples=1000", "data.max_eval_samples=500", "train.epochs=2"]
# the rule issue 30 set for adopting compilation: a whole run, compilation included, this much faster
ADOPT_AT = 1.2


def run_once(overrides: list[str], compiled: bool, threads: int, root: Path) -> dict:
    """One `python -m repro.train` in a fresh process (its own output folder and Inductor cache); its wall time
    and what its record says."""
    out = root / ("compiled" if compiled else "eager")
    env = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **os.environ,
           "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor_cache")}  # offline unless the user said otherwise
    cmd = [sys.executable, "-m", "repro.train", *overrides, f"train.compile={str(compiled).lower()}",
           f"train.num_threads={threads}", f"output_root={out}", "force=true", "logger=none"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ReproError(f"benchmark run {' '.join(cmd[3:])} failed: {tail}")
    finished = complete_records(out)
    if len(finished) != 1:
        raise ReproError(f"expected one complete run under {out}, found {len(finished)}")
    [(_, record)] = finished
    best = record["best_metrics"][record["main_metric"]]
    return {"wall_s": wall, "train_time_s": record["train_time_s"], "main_metric": record["main_metric"],
            "best": 100 * best, "epochs_run": len(record["epochs"]), "optimizer_steps": record["optimizer_steps"]}


def compare(methods: list[str], overrides: list[str], threads: int) -> pd.DataFrame:
    """Eager then compiled, per method; the speed-up of the compiled run's wall and training time."""
    rows = []
    for method in methods:
        job = [*overrides, f"method={method}"]
        with tempfile.TemporaryDirectory(prefix="bench_compile_") as tmp:
            eager = run_once(job, False, threads, Path(tmp))
        with tempfile.TemporaryDirectory(prefix="bench_compile_") as tmp:
            compiled = run_once(job, True, threads, Path(tmp))
        for name, r in (("eager", eager), ("compiled", compiled)):
            rows.append({"method": method, "mode": name, **r,
                         "speedup_wall": eager["wall_s"] / r["wall_s"],
                         "speedup_train": eager["train_time_s"] / r["train_time_s"]})
    return pd.DataFrame(rows)


def verdict(frame: pd.DataFrame) -> str:
    """One sentence per method: does compilation meet the adoption rule on this machine?"""
    parts = []
    for method, rows in frame[frame["mode"] == "compiled"].groupby("method", sort=False):
        s = float(rows["speedup_wall"].iloc[0])
        parts.append(f"{method} {s:.2f}x ({'use it' if s >= ADOPT_AT else 'keep eager'})")
    return f"Whole-run speed-up compiled vs eager, rule >= {ADOPT_AT}x: " + "; ".join(parts) + "."


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], prog="python -m repro.bench.compile")
    parser.add_argument("--methods", default="lora,full_ft", help="comma-separated method configs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args, overrides = parser.parse_known_args(argv)
    unknown = [o for o in overrides if o.startswith("-")]
    if unknown:
        raise ReproError(f"unknown option(s) {' '.join(unknown)}; train overrides take the form key=value")
    if args.threads < 1:
        raise ReproError("--threads must be positive")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise ReproError("--methods names no method")
    args.methods = methods
    return args, overrides


@exit_on_user_error
def main(argv: list[str] | None = None) -> list[Path]:
    args, extra = parse_args(argv)
    overrides = list({o.split("=", 1)[0]: o for o in [*DEFAULT_JOB, *extra]}.values())  # an override replaces its key
    frame = compare(args.methods, overrides, args.threads)
    torch.set_num_threads(args.threads)
    model = next(o.split("=", 1)[1] for o in overrides if o.startswith("model="))
    command = "python -m repro.bench.compile --methods " + ",".join(args.methods) + f" --threads {args.threads}" + (
        " " + " ".join(extra) if extra else "")
    caption = (f"torch.compile for a whole training run ({' '.join(overrides)}; each run a fresh process with an "
               f"empty Inductor cache, wall time from start to exit: loading, compilation, training, evaluation; "
               f"train.compile wraps the training forward only; {hardware_label(torch.device('cpu'))}). "
               f"{verdict(frame)} Command: {command}")
    return write_and_show(frame, args.out / f"compile_{model}", caption, ".4g")


if __name__ == "__main__":
    main()
