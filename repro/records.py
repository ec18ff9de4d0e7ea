"""Committed per-run records: the evidence from which every committed table, verdict and the report rebuild.

A run folder (results/runs/<run_id>/) holds weights, predictions and a result.json; none of it is committed. What
is committed is one compact record per finished run, `results/records/<run_id>.json`: the run's result.json less
what only makes sense beside its folder (paths to predictions and weights) — its resolved config, per-epoch metrics
and best epoch (so convergence is known), seed, trivial baseline, parameter counts, timings, hardware (which CPU)
and code version. `python -m repro.tables` builds results/tables from these records alone, so a fresh clone
rebuilds every committed table byte for byte (tests/test_records.py), and `make decide` adds seeds to them.

    python -m repro.records add [--runs results/runs] [--to results/records] [--scale cpu]
    python -m repro.records list [--to results/records]
    python -m repro.records rerun RUN_ID        (the same configuration again: the same number on the same CPU?)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from repro.errors import ReproError, exit_on_user_error
from repro.results import SOURCE_IMPORTED, complete_records, default_runs_root, write_json_atomic

DEFAULT_RECORDS = Path("results/records")
# result.json keys that point into the run folder, which is not committed
FOLDER_ONLY = ("predictions", "weights", "best_outputs", "outputs", "wall_time_segments_s")


def compact(record: dict[str, Any]) -> dict[str, Any]:
    """The committed form of a run's result.json."""
    return {k: v for k, v in record.items() if k not in FOLDER_ONLY}


def record_path(records: Path, record: dict[str, Any]) -> Path:
    run_id = str(record.get("run_id") or "")
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise ReproError(f"a record without a usable run_id ({run_id!r})")
    return records / f"{run_id}.json"


# records of recipes no table uses any more, kept as evidence under results/records/superseded/<name>/
SUPERSEDED = "superseded"
CPU_FIELDS = ("cpu_model", "cpu_capability", "cpu_bf16", "cpu_filled_in")


def with_this_cpu(record: dict[str, Any]) -> dict[str, Any]:
    """The record with the CPU fields of this machine where it has none (runs made before result.json recorded the
    CPU model), marked as filled in: only for runs the caller knows were made on this machine."""
    hardware = dict(record.get("hardware") or {})
    if hardware.get("cpu_model") or hardware.get("gpu"):
        return record
    from repro.provenance import cpu_info

    return {**record, "hardware": {**hardware, **cpu_info(), "cpu_filled_in": "repro.records add --this-machine"}}


def with_filled_in_cpu(body: dict[str, Any], committed: dict[str, Any]) -> dict[str, Any]:
    """A run added again keeps the CPU its committed record had filled in (`--this-machine`) where the run itself
    records none: adding never loses what the record says."""
    hardware, old = dict(body.get("hardware") or {}), committed.get("hardware") or {}
    if hardware.get("cpu_model") or not old.get("cpu_filled_in"):
        return body
    return {**body, "hardware": {**hardware, **{k: old[k] for k in CPU_FIELDS if k in old}}}


def add(runs: Path, records: Path, scale: str | None = None, this_machine: bool = False
        ) -> tuple[list[Path], list[Path]]:
    """Compact every complete, trained run under `runs` (at `scale`, when given) into `records`; returns (new
    records, records replaced with a different content). The same run id means the same identity config, so a
    replaced record is the same experiment run again (e.g. on another CPU). `this_machine`: the runs were made
    here; records without a CPU model get this machine's."""
    if not runs.is_dir():
        raise ReproError(f"no runs folder {runs}")
    new, replaced = [], []
    superseded = {p.name for p in (records / SUPERSEDED).rglob("*.json")} if (records / SUPERSEDED).is_dir() else set()
    for _, record in complete_records(runs):
        if record.get("source") == SOURCE_IMPORTED:  # a released checkpoint scored here: no training to record
            continue
        if scale is not None and (record.get("config") or {}).get("scale_name") != scale:
            continue
        path, body = record_path(records, record), compact(with_this_cpu(record) if this_machine else record)
        if path.name in superseded:  # moved aside with a recipe that is no longer the table's: not added back
            continue
        if path.is_file():
            old = json.loads(path.read_bytes())
            body = with_filled_in_cpu(body, old)
            if old == json.loads(json.dumps(body, default=str)):
                continue
            replaced.append(path)
        else:
            new.append(path)
        write_json_atomic(path, body)
    return new, replaced


_MISSING = object()


def replayable_overrides(record: dict[str, Any]) -> list[str]:
    """The record's invocation overrides, written so that they parse to the values the run had. Hydra records an
    override whose quoted value held an interpolation (`k="${...}"`, how `make` passes a recipe value) with the
    value it resolved to, still quoted (`k="1000"`): given again, that is the string "1000", which a numeric
    setting refuses. Such an override is written with the run's own value from its resolved config."""
    out = []
    for override in record["invocation"]["overrides"]:
        key, sep, value = override.partition("=")
        quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""
        node: Any = record.get("config", {})
        for part in key.lstrip("+~").split("."):
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if sep and quoted and (node is None or isinstance(node, (bool, int, float))):
            value = "null" if node is None else str(node).lower() if isinstance(node, bool) else repr(node)
        out.append(f"{key}{sep}{value}")
    return out


def train_command(config_dir: str | None, config_name: str, overrides: Sequence[str]) -> list[str]:
    """`python -m repro.train` as a record's invocation composed the run (repro.decide adds a seed to it)."""
    return [sys.executable, "-m", "repro.train", *(["--config-dir", config_dir] if config_dir else []),
            "--config-name", config_name, *overrides]


def rerun(records: Path, run_id: str, results: Path) -> tuple[float, float]:
    """Run a committed record's configuration again, as its invocation composed it, into `results` (a fresh results
    folder, so the committed run is not found and skipped); returns (committed, re-run) main metric."""
    path = records / f"{run_id}.json"
    if not path.is_file():
        raise ReproError(f"no record {path}")
    record = json.loads(path.read_bytes())
    inv = record.get("invocation")
    if not inv:
        raise ReproError(f"{run_id}: its record does not keep the invocation (made before records stored it)")
    command = train_command(inv.get("config_dir"), inv["config_name"], replayable_overrides(record))
    import os
    import subprocess

    print("running: " + " ".join(command[3:]), flush=True)
    done = subprocess.run(command, env={**os.environ, "REPRO_RESULTS": str(results)})
    if done.returncode != 0:
        raise ReproError(f"the re-run of {run_id} failed (exit {done.returncode})")
    again = json.loads((results / "runs" / run_id / "result.json").read_bytes())
    metric = record["main_metric"]
    return record["best_metrics"][metric], again["best_metrics"][metric]


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m repro.records", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_p = sub.add_parser("add", help="compact the complete runs of a runs folder into the records folder")
    add_p.add_argument("--runs", type=Path, default=None, help="default: $REPRO_RESULTS/runs or results/runs")
    add_p.add_argument("--scale", help="only runs at this scale (paper, cpu, smoke)")
    add_p.add_argument("--this-machine", action="store_true",
                       help="the runs were made on this machine: fill in its CPU where a record has none")
    list_p = sub.add_parser("list", help="one line per committed record")
    rerun_p = sub.add_parser("rerun", help="run a committed record's configuration again and compare its number")
    rerun_p.add_argument("run_id")
    rerun_p.add_argument("--into", type=Path, default=Path("results/local/rerun"),
                         help="results folder of the re-run (default results/local/rerun)")
    for p in (add_p, list_p, rerun_p):
        p.add_argument("--to", type=Path, default=DEFAULT_RECORDS, help=f"records folder (default {DEFAULT_RECORDS})")
    args = parser.parse_args(argv)
    if args.command == "add":
        runs = args.runs or default_runs_root()
        if args.runs is None and not runs.is_dir():  # every run of a make target reused its committed record
            print(f"0 new and 0 replaced record(s) in {args.to} (no runs folder {runs}: nothing ran here)")
            return
        new, replaced = add(runs, args.to, args.scale, args.this_machine)
        for path in replaced:
            print(f"replaced {path} (the same configuration run again)", file=sys.stderr)
        print(f"{len(new)} new and {len(replaced)} replaced record(s) in {args.to}")
        return
    if args.command == "rerun":
        committed, again = rerun(args.to, args.run_id, args.into)
        same = committed == again
        print(f"{args.run_id}: committed {committed!r}, re-run {again!r}: "
              f"{'identical' if same else f'differs by {again - committed:+.6g}'}")
        if not same:
            sys.exit(1)
        return
    if not args.to.is_dir():
        raise ReproError(f"no records folder {args.to}")
    for _, r in complete_records(args.to):
        main_metric = r.get("main_metric")
        value = (r.get("best_metrics") or {}).get(main_metric)
        print(f"{r['run_id']}\t{(r.get('config') or {}).get('scale_name')}\tseed {r.get('seed')}\t{main_metric} "
              f"{value}\tbest epoch {r.get('best_epoch')}/{len(r.get('epochs') or [])}")


if __name__ == "__main__":
    main()
