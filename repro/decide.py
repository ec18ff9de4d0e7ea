"""Seeds until decided: re-judge every claim from the committed records and add seeds to the comparisons that are
inconclusive for lack of them, round after round, until each is decided or has the rule's seed cap.

    python -m repro.decide [--dry-run] [--cap 10] [--rounds 5] [--jobs 2]      (make decide)

A round: (1) the finished runs under results/runs become records (repro.records add), (2) every table's claims are
judged again (repro.tables.all_claims, the same verdicts the tables print), (3) each inconclusive statistical verdict
that names the seeds per method that would decide it gets them, up to the cap, on every cell it counted: the cell's
runs are run again with the next unused seeds, from the Hydra invocation their records keep, `jobs` runs at a time
with one torch thread each, each run's record added as it ends. A verdict that would fail on unconverged runs gets
no seeds (more seeds cannot fix a budget). Finished runs are reused, so an interrupted `make decide` continues where
it stopped. At the end the tables are rebuilt from the records and every verdict is printed, after what the
verdicts cost from nothing (the runs the claims count, their recorded wall time per CPU). `make decide` first runs
each judged table's own first seeds (DECIDE_BASE in the Makefile), so that it starts from nothing too.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from repro import records as records_mod
from repro import tables
from repro.errors import ReproError, exit_on_user_error
from repro.results import complete_records
from repro.verdicts import INCONCLUSIVE, Rule, Verdict, load_rule


@dataclass(frozen=True)
class Job:
    """One cell to extend: how its runs were composed (config dir, config name, overrides without the seed) and
    the seeds to add."""

    config_dir: str | None
    config_name: str
    overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    run_s: float | None = None  # median wall time of the cell's recorded runs: what one more seed costs
    decides_at: int | None = None  # the fewest seeds per method that decide a claim these seeds serve

    def commands(self, jobs_threads: int = 1) -> list[list[str]]:
        """One `python -m repro.train` per seed (separate processes: the cells of a round differ in more than the
        seed, so one Hydra multirun cannot hold them)."""
        head = records_mod.train_command(self.config_dir, self.config_name,
                                         [*self.overrides, f"train.num_threads={jobs_threads}"])
        return [[*head, f"seed={seed}"] for seed in self.seeds]


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # verdicts that get no seeds, and why

    def hours(self, workers: int) -> float | None:
        """The round's wall time in hours at `workers` runs at a time, from each cell's recorded runs (as fast as
        the CPUs that made them; None when a cell has no recorded wall time)."""
        if any(j.run_s is None for j in self.jobs):
            return None
        return sum(len(j.seeds) * j.run_s for j in self.jobs) / workers / 3600

    @property
    def runs(self) -> int:
        return sum(len(j.seeds) for j in self.jobs)


def _template(record: dict) -> tuple[str | None, str, tuple[str, ...]] | None:
    """How the record's run was invoked, less its seed and per-machine settings; `train.precision=auto` pinned to
    what the run trained in, so that a seed added on another CPU joins its cell in the same precision."""
    inv = record.get("invocation")
    if not inv:
        return None
    keep = tuple(f"train.precision={record.get('precision') or 'fp32'}" if o == "train.precision=auto" else o
                 for o in records_mod.replayable_overrides(record)
                 if not o.startswith(("seed=", "train.num_threads=", "force=")))
    return inv.get("config_dir"), inv["config_name"], keep


def plan(claims: dict[tuple[str, str, str], tables.Claims], by_id: dict[str, dict], rule: Rule,
         cap: int | None = None, only: set[str] | None = None) -> Plan:
    """The seeds each inconclusive verdict's cells need this round (min(seeds that decide, cap) per method), for
    the tables named in `only` (None: every table). Runs in order of promise: the seeds of claims that the fewest
    seeds would decide come first (those within the cap before those the power figure puts beyond it), so that a
    round cut short has spent its hours where they decide most."""
    cap = cap or rule.seed_cap
    # per cell, each seed to add with the fewest seeds per method that decide a claim asking for it
    wanted: dict[tuple[str | None, str, tuple[str, ...]], dict[int, int]] = {}
    # each cell's recorded wall times by run id, so that a cell that several claims count weighs once
    wall_s: dict[tuple[str | None, str, tuple[str, ...]], dict[str, float]] = {}
    out = Plan()
    for (table, scale, model), judged in claims.items():
        if only is not None and table not in only:
            continue
        for text, verdicts in judged:
            for v in verdicts:
                if not isinstance(v, Verdict) or v.word != INCONCLUSIVE or not v.statistical:
                    continue
                where = f"{table} ({scale}, {model}): {v.reason.split(';')[0]}"
                if v.seeds_needed is None:
                    out.notes.append(f"{where}: no seeds added ({'a budget problem' if v.blocked else 'effect 0'})")
                    continue
                target = min(v.seeds_needed, cap)
                for cell in v.cells:
                    have = {int(by_id[r]["seed"]) for r in cell.run_ids if r in by_id}
                    if len(have) >= target:
                        continue
                    template = next((t for r in cell.run_ids if r in by_id and (t := _template(by_id[r]))), None)
                    if template is None:
                        out.notes.append(f"{where}: cannot add seeds to runs {', '.join(cell.run_ids[:2])}...: their "
                                         "records do not keep the invocation (made before records stored it)")
                        continue
                    cell_seeds = wanted.setdefault(template, {})
                    for seed in [s for s in range(cap * 10) if s not in have][:target - len(have)]:
                        cell_seeds[seed] = min(cell_seeds.get(seed, v.seeds_needed), v.seeds_needed)
                    wall_s.setdefault(template, {}).update((r, float(by_id[r]["wall_time_s"])) for r in cell.run_ids
                                                           if by_id.get(r, {}).get("wall_time_s"))
    for t, seeds in wanted.items():
        run_s = statistics.median(wall_s[t].values()) if wall_s.get(t) else None
        out.jobs += [Job(*t, tuple(sorted(s for s in seeds if seeds[s] == need)), run_s, need)
                     for need in sorted(set(seeds.values()))]
    out.jobs.sort(key=lambda job: job.decides_at)  # stable: cells of equal promise keep the tables' order
    return out


def from_nothing(claims: dict[tuple[str, str, str], tables.Claims], by_id: dict[str, dict], workers: int,
                 only: set[str] | None = None) -> str:
    """What the verdicts cost from nothing: the recorded runs their statistical claims count (of the tables in
    `only`; None: every table), their summed wall time and that spread over `workers`, and the CPUs that made them,
    so the figure says where it came from."""
    runs = {r for (table, _, _), judged in claims.items() if only is None or table in only
            for _, verdicts in judged for v in verdicts if isinstance(v, Verdict)
            for cell in v.cells for r in cell.run_ids if r in by_id}
    per_cpu: dict[str, list[float]] = {}
    for r in runs:
        if by_id[r].get("wall_time_s"):
            per_cpu.setdefault(tables.describe_cpu(by_id[r].get("hardware") or {}), []).append(
                float(by_id[r]["wall_time_s"]))
    hours = sum(map(sum, per_cpu.values())) / 3600
    untimed = len(runs) - sum(map(len, per_cpu.values()))
    where = "; ".join(f"{len(t)} on {cpu}, {sum(t) / 3600:.1f} h" for cpu, t in sorted(per_cpu.items()))
    return (f"from nothing: the claims count {len(runs)} recorded run(s), {hours:.1f} h of run time "
            f"({where or 'none timed'}{f'; {untimed} untimed' if untimed else ''}), about {hours / workers:.1f} h "
            f"at {workers} at a time")


def judge(records_dir: Path, rule: Rule) -> tuple[dict, dict[str, dict]]:
    frame, _ = tables.runs_frame(records_dir) if records_dir.is_dir() else (pd.DataFrame(), 0)
    by_id = {r["run_id"]: r for _, r in complete_records(records_dir)} if records_dir.is_dir() else {}
    return tables.all_claims(frame, rule), by_id


def run_jobs(job_list: list[Job], workers: int, log_dir: Path,
             on_finished: Callable[[], None] | None = None) -> list[str]:
    """Run every seed of every job, `workers` at a time (one torch thread each), printing a timestamped line as
    each ends; `on_finished` runs after each successful run, one at a time (main: its record is added at once, so
    records committed mid-round carry a sweep to another machine). Returns one line per failure."""
    log_dir.mkdir(parents=True, exist_ok=True)
    commands = [c for job in job_list for c in job.commands()]
    lock = threading.Lock()
    finished = 0

    def one(index_command: tuple[int, list[str]]) -> str | None:
        nonlocal finished
        index, command = index_command
        log = log_dir / f"run{index:03d}.log"
        start = time.monotonic()
        with open(log, "w") as f:
            done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT)
        with lock:
            finished += 1
            if done.returncode == 0 and on_finished:
                on_finished()
            print(f"{time.strftime('%H:%M:%S')} [{finished}/{len(commands)}] "
                  f"{'done' if done.returncode == 0 else 'FAILED'} in {time.monotonic() - start:.0f}s: "
                  f"{' '.join(command[3:])}", flush=True)
        return None if done.returncode == 0 else f"exit {done.returncode}: {' '.join(command[3:])} (log: {log})"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [r for r in pool.map(one, enumerate(commands)) if r]


def verdict_lines(claims: dict[tuple[str, str, str], tables.Claims]) -> list[str]:
    lines = []
    for (table, scale, model), judged in claims.items():
        lines.append(f"{table} ({scale}, {model}):")
        for text, verdicts in judged:
            lines += [f"  - {text}:", *(f"    - {v}" for v in verdicts)]
    return lines


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m repro.decide", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=Path, default=records_mod.DEFAULT_RECORDS)
    parser.add_argument("--runs", type=Path, default=Path("results/runs"))
    parser.add_argument("--tables", type=Path, default=Path("results/tables"))
    parser.add_argument("--cap", type=int, default=None, help="seeds per method at most (default: the rule's)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--table", action="append", default=None, metavar="NAME",
                        help="add seeds only for this table's claims (repeatable; e.g. rank, targets, table2)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one torch thread each")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the verdicts and the first round's runs, and stop; records and tables unchanged")
    args = parser.parse_args(argv)
    if args.cap is not None and args.cap < 2:
        raise ReproError(f"--cap {args.cap}: at least 2 seeds per method")
    if args.jobs < 1 or args.rounds < 1:
        raise ReproError("--jobs and --rounds must be at least 1")
    rule = load_rule()
    only = set(args.table) if args.table else None
    if args.dry_run:  # judge a copy: a dry run previews what the finished runs would add, and changes nothing
        preview = Path(tempfile.mkdtemp(prefix="repro_decide_"))
        if args.records.is_dir():
            shutil.copytree(args.records, preview / "records")
        args.records = preview / "records"
    try:
        for round_ in range(1, args.rounds + 1):
            if args.runs.is_dir():
                new, replaced = records_mod.add(args.runs, args.records)
                if new or replaced:
                    print(f"round {round_}: {len(new)} new and {len(replaced)} replaced record(s)")
            claims, by_id = judge(args.records, rule)
            judged_tables = {table for table, _, _ in claims}
            if only and not only <= judged_tables:
                unknown = ", ".join(sorted(only - judged_tables))
                raise ReproError(f"--table {unknown}: no claims judged there; tables with claims: "
                                 f"{', '.join(sorted(judged_tables))}")
            todo = plan(claims, by_id, rule, args.cap, only)
            for note in todo.notes:
                print(f"round {round_}: {note}")
            hours, cost = todo.hours(args.jobs), ""
            if todo.jobs:
                cost = (f", about {hours:.1f} h at {args.jobs} at a time (the median wall time of each cell's recorded "
                        "runs, on the CPUs that made them)" if hours is not None else ", wall time unknown")
            print(f"round {round_}: {todo.runs} run(s) to add in {len(todo.jobs)} cell(s){cost}")
            for job in todo.jobs:  # in the order they run: the most promising first
                beyond = ", beyond the cap" if job.decides_at > (args.cap or rule.seed_cap) else ""
                print("  " + " ".join(job.commands()[0][3:-1]) + f" seed={','.join(map(str, job.seeds))}"
                      f"  (a claim decided at ~{job.decides_at} seeds per method{beyond})")
            if args.dry_run:
                print(from_nothing(claims, by_id, args.jobs, only))
                print("\n".join(verdict_lines(claims)))
                return
            if not todo.jobs:
                break
            failures = run_jobs(todo.jobs, args.jobs, args.runs.parent / "local" / "decide_logs" / f"round{round_}",
                                on_finished=lambda: records_mod.add(args.runs, args.records))
            for line in failures:
                print(f"round {round_}: failed: {line}", file=sys.stderr)
            if failures and len(failures) == todo.runs:
                raise ReproError(f"round {round_}: every run failed; see the logs above")
    finally:
        if args.dry_run:  # the copy goes, whatever happened
            shutil.rmtree(args.records.parent, ignore_errors=True)
    if args.runs.is_dir():
        records_mod.add(args.runs, args.records)
    tables.build(args.records, args.tables)
    claims, by_id = judge(args.records, rule)
    print(from_nothing(claims, by_id, args.jobs, only))
    print("\n".join(verdict_lines(claims)))


if __name__ == "__main__":
    main()
