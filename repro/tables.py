"""`python -m repro.tables [--runs results/runs] [--out results/tables] [--scale cpu]`: the paper's tables from runs.

Builds every table of the registry (repro/paper_tables/: Table 2 GLUE, Tables 5 and 6 sweeps, Tables 3, 13, 14,
SAMSum and 18 from generation runs, learning curves, LoRA's successors, the learning-rate search, LongLoRA), each as
`<name>.{md,csv,tex}` (and its figures), and `all_runs.{md,csv}`: every run and the tables it is in. Per cell: the
median and standard deviation over seeds of the run's best-epoch main metric (x 100, the paper's 0-100 scale), the
number of seeds, the paper's value and the difference. Missing cells say so; a table with no runs here keeps its
committed file. Every table carries a trivial-baseline row; claims get holds / fails / inconclusive by the rule of
conf/paper/verdict_rule.yaml (repro/verdicts.py), printed under the table with its numbers. Incomplete runs are
ignored and counted.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from repro.analysis.reference import write_table
from repro.cells import RELEASED_LABEL
from repro.config import identity_tree
from repro.errors import ReproError, exit_on_user_error
from repro.kinds import DEFAULT_KIND, Traits, traits
from repro.paper_tables import build_order, runs_for, section_precision, tables
from repro.paper_tables.common import (BASELINE_LABEL, SCALE_PERCENT, decided, get, run_budgets, section,
                                       write_paper_table)
from repro.paper_tables.spec import Claims
from repro.results import SOURCE_IMPORTED, complete_records, corrupt_records, is_complete, is_records_folder
from repro.results import _row as record_row  # load()'s row of a record, without reading the records again
from repro.verdicts import FAILS, HOLDS, INCONCLUSIVE, Rule, load_rule

# what other modules read from here (the report, repro.decide)
__all__ = ["BASELINE_LABEL", "SCALE_PERCENT", "Claims", "all_claims", "all_runs", "build", "main", "run_budgets",
           "runs_frame"]


# --- records -> one flat frame --------------------------------------------------------------------------------

def runs_frame(root: Path) -> tuple[pd.DataFrame, int]:
    """Complete runs, one row each with the fields the tables need (and the whole record, `record`); and the number
    of run folders ignored. Reads each record once."""
    pairs = complete_records(root)
    folders = [d for d in sorted(root.glob("*/")) if d.is_dir()]
    # a run folder without a complete result.json is ignored (a records folder holds none)
    ignored = sum(not is_complete(d) for d in folders) if is_records_folder(root) else len(folders) - len(pairs)
    frame = pd.DataFrame([record_row(r) for _, r in pairs])
    if frame.empty:
        return frame, ignored
    # what record_row leaves out: the trivial baseline, the run folder and the saved outputs (generation)
    cfg = frame["config"]
    frame = frame.assign(
        run_dir=[str(d) if d is not None else None for d, _ in pairs],
        best_outputs=[r.get("best_outputs") for _, r in pairs],
        train_examples=[r.get("train_examples") for _, r in pairs],
        source=[r.get("source") or "trained" for _, r in pairs],
        baseline=[classification_baseline(r, main) for (_, r), main in zip(pairs, frame["main_metric"])],
        epochs_run=[len(r.get("epochs") or []) for _, r in pairs],
        curve=[dev_curve(r, main) for (_, r), main in zip(pairs, frame["main_metric"])],
        code=[(r.get("git_commit") or "unknown")[:7] + ("-dirty" if str(r.get("git_commit")).endswith("-dirty")
                                                         else "") for _, r in pairs],
        cpu=[describe_cpu(r.get("hardware") or {}) for _, r in pairs],
        record=[r for _, r in pairs],
    )
    frame = frame.assign(
        scale=cfg.map(lambda c: get(c, "scale_name")),
        paper_row=cfg.map(lambda c: get(c, "paper_row")),
        variant=[run_variant(get(c, "paper_variant.name") or "", source, precision)
                 for c, source, precision in zip(cfg, frame["source"], frame["precision"])],
        sweep=cfg.map(lambda c: get(c, "sweep_name")),
        paper_task=cfg.map(lambda c: get(c, "task.paper_key")),
        kind=cfg.map(lambda c: get(c, "task.kind") or DEFAULT_KIND),
        r=cfg.map(lambda c: get(c, "method.r")),
        learning_rate=cfg.map(lambda c: get(c, "train.learning_rate")),
        lr_factor=cfg.map(lambda c: get(c, "lr_factor")),
        search_row=cfg.map(lambda c: get(c, "search_row")),
        targets=cfg.map(lambda c: ",".join(get(c, "method.targets") or [])),
        # classification metrics are stored as fractions; generation metrics already on the paper's scales, and
        # long_context's (minus the NLL per token) on their own
        value=[row[f"best.{row['main_metric']}"] * traits(get(c, "task.kind")).metric_scale
               for c, (_, row) in zip(cfg, frame.iterrows())],
    )
    return frame, ignored


def record_traits(record: dict) -> Traits:
    """The traits of a record's task kind (records from before `task.kind` existed: DEFAULT_KIND)."""
    return traits(get(record.get("config") or {}, "task.kind"))


def dev_curve(record: dict, main_metric: str | None) -> tuple[float, ...] | None:
    """A run's main dev metric per epoch on the table's scale (the verdicts' convergence); None for kinds whose
    per-epoch scores are not on that scale (Traits.dev_curve) and for runs whose epochs lack the metric."""
    kind = record_traits(record)
    if not kind.dev_curve or not main_metric:
        return None
    values = [(e.get("metrics") or {}).get(main_metric) for e in record.get("epochs") or []]
    return tuple(float(v) * kind.metric_scale for v in values) if values and None not in values else None


def describe_cpu(hardware: dict) -> str:
    """Which CPU a run's numbers came from ("Intel(R) Xeon(R) Processor, AVX512"), or the device for GPU runs."""
    if hardware.get("gpu"):
        return str(hardware["gpu"])
    if not hardware.get("cpu_model"):
        return "CPU not recorded"
    return f"{hardware['cpu_model']}, {hardware.get('cpu_capability') or '?'}" + (
        f" ({'/'.join(hardware['cpu_bf16'])})" if hardware.get("cpu_bf16") else "")


def run_variant(variant: str, source: str, precision: str = "fp32") -> str:
    """A run's variant of its paper row: the experiment's own (`paper_variant.name`), then "released checkpoint"
    for an imported record and the precision of a run that did not train in fp32 ("bf16"), so that Table 2 puts
    each in a row of its own beside the reproduced fp32 row of the same paper row (cells never pool precisions)."""
    parts = [variant] if variant else []
    if source == SOURCE_IMPORTED:
        parts.append(RELEASED_LABEL)
    if precision != "fp32":
        parts.append(precision)
    return ", ".join(parts)


def classification_baseline(record: dict, main_metric: str | None) -> float:
    """The run's trivial baseline on its main metric on the table's scale (NaN when the run did not store one:
    runs made before `trivial_baseline` was recorded, and generation runs, whose baseline is computed from their
    outputs)."""
    value = (record.get("trivial_baseline") or {}).get(main_metric)
    return math.nan if value is None else float(value) * record_traits(record).metric_scale


# --- building -------------------------------------------------------------------------------------------------

def scaled_runs(runs: Path, scale: str | None = None) -> tuple[pd.DataFrame, int]:
    """`runs_frame` of the runs or records under `runs` (only those at `scale` when given), and how many were
    ignored."""
    if not runs.is_dir():
        raise ReproError(f"no runs or records folder {runs} (the committed records are results/records; your own runs: "
                         "--runs results/runs)")
    frame, ignored = runs_frame(runs)
    return (frame[frame["scale"] == scale] if scale is not None and not frame.empty else frame), ignored


def build(runs: Path, out: Path, scale: str | None = None) -> dict[str, list[Path]]:
    """Every registered table from the runs or records under `runs`, into `out`; returns table -> files written."""
    frame, ignored = scaled_runs(runs, scale)
    print(f"{len(frame)} complete run(s) under {runs}{f' at scale {scale}' if scale else ''}; ignored {ignored} "
          "incomplete")
    out.mkdir(parents=True, exist_ok=True)
    rule = load_rule()
    written = {table.name: (table.write or write_paper_table)(table, runs_for(table, frame), out, rule)
               for table in build_order()}
    written["all_runs"] = write_table(all_runs(frame), out / "all_runs",
                                      f"Every complete run{f' at scale {scale}' if scale else ''} (main metric x100 "
                                      "for GLUE, generation on its printed scale), the tables it appears in, and "
                                      "the settings that differ among runs of the same task, model and method "
                                      "(run identity, seed aside). A run in no table says why.", ".4g")
    for paths in filter(None, written.values()):
        print("wrote " + ", ".join(str(p) for p in paths))
    return written


def all_claims(frame: pd.DataFrame, rule: Rule) -> dict[tuple[str, str, str], Claims]:
    """(table, scale, model) -> its claims, decided: what the tables print under each section, as data (for
    `repro.decide`, which adds seeds to the inconclusive ones)."""
    out: dict[tuple[str, str, str], Claims] = {}
    if frame.empty:
        return out
    for table in tables():
        if table.claims is None:
            continue
        runs = table.select(runs_for(table, frame))
        for (scale, model), _ in (runs.groupby(["scale", "model"]) if not runs.empty else []):
            out[(table.name, scale, model)] = decided(table.claims(section(runs, scale, model), rule), rule)
    return out


# --- every run and its tables ---------------------------------------------------------------------------------

NOT_IN_A_TABLE = "none: no paper row (run without +experiment=...) and no sweep of a paper table"
OTHER_PRECISION = "none: trained in {}, beside {} runs of its scale and model (its table counts one precision)"


def tables_of(frame: pd.DataFrame) -> list[str]:
    """Per run of `frame`, the generated tables it is counted in (each table's `select`, as `build` applies it), or
    why none."""
    names: dict[object, list[str]] = {i: [] for i in frame.index}
    for table in tables():
        for i, row in table.select(runs_for(table, frame)).iterrows():
            names[i].append(table.stem(row["task"]))
    counted = section_precision(frame)
    return [", ".join(names[i]) if names[i] else
            OTHER_PRECISION.format(precision, counted[i]) if precision != counted[i] else
            NOT_IN_A_TABLE if not isinstance(sweep, str) else f"none: sweep {sweep} has no table"
            for i, sweep, precision in zip(frame.index, frame["sweep"], frame["precision"])]


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(configs: list[dict]) -> list[str]:
    """Per run, `key=value` for the identity settings that vary among `configs` (seed aside)."""
    flat = [_flatten(identity_tree(c)) for c in configs]
    keys = sorted({k for f in flat for k in f} - {"seed"})
    varying = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    return ["; ".join(f"{k}={f.get(k)}" for k in varying) for f in flat]


def all_runs(frame: pd.DataFrame) -> pd.DataFrame:
    columns = ["task", "model", "method", "scale", "seed", "main_metric", "value", "tables", "differences", "run_id"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.assign(tables=tables_of(frame), differences="")
    for _, part in frame.groupby(["task", "model", "method"], sort=False):
        frame.loc[part.index, "differences"] = config_differences(list(part["config"]))
    return frame.sort_values(["task", "model", "method", "scale", "seed"])[columns].reset_index(drop=True)


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """A table's CSV rows for W&B: numeric columns stay numbers (ours, paper, difference: sortable, plottable), the
    others become text (missing: "")."""
    text = frame.select_dtypes(exclude="number").columns
    return frame.assign(**{c: frame[c].fillna("").astype(str) for c in text})


def claim_rows(name: str, claims: dict[tuple[str, str, str], Claims]) -> pd.DataFrame:
    """One row per verdict of table `name`'s claims: scale, model, claim, verdict (holds / fails / inconclusive,
    statistical or not; "" for another line, e.g. "not testable: ...") and its full text."""
    words = (HOLDS, FAILS, INCONCLUSIVE)
    return pd.DataFrame([{"scale": scale, "model": model, "claim": text,
                          "verdict": word if (word := str(v).partition(":")[0]) in words else "", "text": str(v)}
                         for (table, scale, model), section_claims in claims.items() if table == name
                         for text, judged in section_claims for v in judged])


def log_to_wandb(written: dict[str, list[Path]], project: str, folder: Path,
                 claims: dict[tuple[str, str, str], Claims] | None = None) -> None:
    """Log each table to W&B in the group its sweep's runs use (`logger.group` = `sweep_name`): `<name>/table`, its
    CSV with numeric columns, `<name>/claims`, its verdicts (`all_claims`), and its figures as images
    (`<name>/<figure file stem>`); offline unless WANDB_MODE=online. wandb's run files go to `folder`/wandb, named
    on each init: wandb would otherwise keep the folder of the process's first run."""
    import os

    import wandb

    folder.mkdir(parents=True, exist_ok=True)
    for name, paths in written.items():
        csvs = [p for p in paths if p.suffix == ".csv"]
        frame = pd.concat([pd.read_csv(p) for p in csvs], ignore_index=True) if csvs else pd.DataFrame()
        if frame.empty:  # nothing written for it (no runs)
            continue
        values = {f"{name}/table": wandb.Table(dataframe=typed(frame)),
                  **{f"{name}/{p.stem}": wandb.Image(str(p)) for p in paths if p.suffix == ".png"}}
        verdicts = claim_rows(name, claims or {})
        if not verdicts.empty:
            values[f"{name}/claims"] = wandb.Table(dataframe=verdicts)
        run = wandb.init(project=project, group=name, name=f"{name}-table", job_type="tables", dir=folder,
                         mode=os.environ.get("WANDB_MODE", "offline"), reinit="finish_previous")
        run.log(values)
        run.finish()


def default_paths(base: Path, runs: Path | None, out: Path | None) -> tuple[Path, Path]:
    """(source, out). The committed tables (`base`/tables) are built from the committed records (`base`/records)
    only; run folders of one's own build into `base`/local/tables unless `--out` says where, and never into the
    committed tables (one-line refusal): those change only by adding records (python -m repro.records add)."""
    committed = base / "tables"
    source = runs or base / "records"
    from_records = source.is_dir() and is_records_folder(source)
    if out is None:
        out = committed if from_records else base / "local" / "tables"
    if not from_records and out.resolve() == committed.resolve():
        raise ReproError(f"{committed} is built from the committed records ({base / 'records'}) alone; add your "
                         f"runs to them first (python -m repro.records add --runs {source}) or pass another --out")
    return source, out


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m repro.tables", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=None,
                        help="run folders, or a folder of records (default: the committed records, "
                             "$REPRO_RESULTS/records or results/records)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: results/tables for the committed records, results/local/tables for runs")
    parser.add_argument("--scale", help="only runs at this scale (paper, cpu, smoke)")
    parser.add_argument("--wandb", metavar="PROJECT", help="also log the tables to this W&B project, one group per "
                                                           "sweep (offline unless WANDB_MODE=online)")
    parser.add_argument("--wandb-report", action="store_true",
                        help="with --wandb, online: also create a saved W&B report of the tables, their verdicts "
                             "and figures (needs the wandb-workspaces package)")
    args = parser.parse_args(argv)
    import os

    base = Path(os.environ.get("REPRO_RESULTS", "results"))
    source, out = default_paths(base, args.runs, args.out)
    for problem in corrupt_records(source) if source.is_dir() and not is_records_folder(source) else []:
        print(f"warning: {problem}; left out", file=sys.stderr)
    written = build(source, out, args.scale)
    if args.wandb_report and not args.wandb:
        raise ReproError("--wandb-report needs --wandb PROJECT (the project the report's panels read)")
    if args.wandb:
        claims = all_claims(scaled_runs(source, args.scale)[0], load_rule())
        log_to_wandb(written, args.wandb, Path(os.environ.get("WANDB_DIR") or base / "local"), claims)
        if args.wandb_report:
            from repro import wandb_report

            if reason := wandb_report.why_no_report():
                print(f"no W&B report: {reason}; the tables were logged", file=sys.stderr)
            else:
                print(f"W&B report: {wandb_report.save_report(args.wandb, written, claims)}")


if __name__ == "__main__":
    main()
