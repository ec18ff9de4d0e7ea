"""`python -m repro.tables [--runs results/runs] [--out results/tables] [--scale cpu]`: the paper's tables from runs.

Writes `table2.{md,csv,tex}` (GLUE, Table 2 layout) and one table per sweep (`rank`: Table 6, `targets`: Table 5)
with a PNG plot. Per cell: the median and standard deviation over seeds of the run's best-epoch main metric (x 100,
the paper's 0-100 scale), the number of seeds, the paper's value and the difference. Missing cells say so.

Runs map to the paper by what they computed, not by model: a Table 2 experiment stores its `paper_row` (method and
size), so at cpu scale the embedded MiniLM stands in for RoBERTa and every table header names the model and scale
that produced the numbers. Sweep runs carry `sweep_name`; the paper's sweeps are on GPT-3 (WikiSQL, MultiNLI), so
their MultiNLI row is shown as the reference for any GLUE task. Incomplete runs are ignored and counted.
Generation runs give Tables 3, 13, 14, a SAMSum table and Table 18 (the GPT-2 rank sweep): repro/generation/tables.py.
`lora_variants.*` compares LoRA with rsLoRA, DoRA, AdaLoRA and QLoRA (sweeps/lora_variants.yaml).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

import pandas as pd

from repro.errors import ReproError, exit_on_user_error
from repro.paper import paper_data
from repro.results import is_complete, load

MISSING = "—"
SCALE_PERCENT = 100  # results store fractions; the paper prints 0-100
# the paper's sweep dataset shown as reference for our GLUE task (Tables 5 and 6 are GPT-3 on WikiSQL/MultiNLI)
SWEEP_REFERENCE_DATASET = "MultiNLI"


# --- records -> one flat frame --------------------------------------------------------------------------------

def _get(config: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def runs_frame(root: Path) -> tuple[pd.DataFrame, int]:
    """Complete runs, one row each with the fields the tables need; and the number of run folders ignored."""
    folders = [d for d in sorted(root.glob("*/")) if d.is_dir()]
    ignored = sum(not is_complete(d) for d in folders)
    frame = load(root)
    if frame.empty:
        return frame, ignored
    cfg = frame["config"]
    frame = frame.assign(
        scale=cfg.map(lambda c: _get(c, "scale_name")),
        paper_row=cfg.map(lambda c: _get(c, "paper_row")),
        variant=cfg.map(lambda c: _get(c, "paper_variant.name") or ""),
        sweep=cfg.map(lambda c: _get(c, "sweep_name")),
        paper_task=cfg.map(lambda c: _get(c, "task.paper_key")),
        r=cfg.map(lambda c: _get(c, "method.r")),
        targets=cfg.map(lambda c: ",".join(_get(c, "method.targets") or [])),
        # classification metrics are stored as fractions; generation metrics already on the paper's scales
        value=[row[f"best.{row['main_metric']}"] * (1 if _get(c, "task.kind") == "generation" else SCALE_PERCENT)
               for c, (_, row) in zip(cfg, frame.iterrows())],
    )
    return frame, ignored


def aggregate(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Median, standard deviation (over seeds, ddof 1; undefined for one seed) and seed count per group."""
    grouped = frame.groupby(keys, dropna=False)
    return grouped.agg(median=("value", "median"), std=("value", "std"), n=("seed", "nunique"),
                       trainable=("params.trainable", "median")).reset_index()


def fmt_cell(median: float | None, std: float | None, n: int | None, paper: float | None, digits: int = 1) -> str:
    paper_s = MISSING if paper is None else f"{paper:.{digits}f}"
    if median is None or (isinstance(median, float) and math.isnan(median)):
        return f"{MISSING} / {paper_s}"
    std_s = "" if std is None or math.isnan(std) else f"±{std:.{digits}f}"
    diff = "" if paper is None else f" ({median - paper:+.{digits}f})"
    return f"{median:.{digits}f}{std_s} [{n}] / {paper_s}{diff}"


# --- Table 2 --------------------------------------------------------------------------------------------------

def table2_long(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (scale, model, paper row, variant, task) with every paper cell present (missing ones NaN)."""
    paper = paper_data("table2_glue")
    runs = frame[frame["paper_row"].notna()] if not frame.empty else frame
    agg = aggregate(runs, ["scale", "model", "paper_row", "variant", "paper_task"]) if not runs.empty else None
    rows = []
    groups = agg[["scale", "model"]].drop_duplicates().itertuples(index=False) if agg is not None else []
    for scale, model in groups:
        for row_id, row in paper["rows"].items():
            variants = sorted(set(agg[(agg.scale == scale) & (agg.model == model) & (agg.paper_row == row_id)]
                                  ["variant"])) or [""]
            for variant in variants:
                for task in paper["tasks"]:
                    hit = agg[(agg.scale == scale) & (agg.model == model) & (agg.paper_row == row_id)
                              & (agg.variant == variant) & (agg.paper_task == task)]
                    cell = hit.iloc[0] if len(hit) else None
                    rows.append({"scale": scale, "model": model, "paper_row": row_id, "variant": variant,
                                 "task": task, "median": cell["median"] if cell is not None else math.nan,
                                 "std": cell["std"] if cell is not None else math.nan,
                                 "n_seeds": int(cell["n"]) if cell is not None else 0,
                                 "trainable": cell["trainable"] if cell is not None else math.nan,
                                 "paper": row["results"][task]["value"], "paper_pm": row["results"][task]["pm"],
                                 "paper_params": row["params"]["printed"]})
    long = pd.DataFrame(rows, columns=["scale", "model", "paper_row", "variant", "task", "median", "std", "n_seeds",
                                       "trainable", "paper", "paper_pm", "paper_params"])
    if not long.empty:
        long["diff"] = long["median"] - long["paper"]
    return long


def table2_wide(long: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (scale, model): the paper's layout, rows x tasks, formatted cells."""
    paper = paper_data("table2_glue")
    out = {}
    for (scale, model), part in long.groupby(["scale", "model"], sort=False):
        rows = []
        for (row_id, variant), cells in part.groupby(["paper_row", "variant"], sort=False):
            label = row_id + (f" [{variant}]" if variant else "")
            params = cells["trainable"].dropna()
            record = {"row": label, "params (paper)": cells["paper_params"].iloc[0],
                      "params (ours)": f"{params.iloc[0] / 1e6:.2f}M" if len(params) else MISSING}
            for cell in cells.itertuples():
                record[cell.task] = fmt_cell(cell.median, cell.std, cell.n_seeds, cell.paper)
            complete = cells["median"].notna().all()
            record["Avg."] = fmt_cell(cells["median"].mean() if complete else None, None, None,
                                      paper["rows"][row_id]["avg"])
            rows.append(record)
        out[(scale, model)] = pd.DataFrame(rows)
    return out


# --- claims ---------------------------------------------------------------------------------------------------

def _averages(part: pd.DataFrame) -> dict[str, tuple[pd.Series, float]]:
    """Per (row, variant) label: per-task medians and median trainable parameters."""
    out = {}
    for (row_id, variant), cells in part.groupby(["paper_row", "variant"], sort=False):
        cells = cells.dropna(subset=["median"])
        if len(cells):
            out[row_id + (f" [{variant}]" if variant else "")] = (cells.set_index("task")["median"],
                                                                   cells["trainable"].median())
    return out


def _pairs(averages: dict, first: Callable[[str], bool], second: Callable[[str], bool]):
    for a, (ma, pa) in averages.items():
        for b, (mb, pb) in averages.items():
            if a != b and first(a) and second(b) and a.split(".")[0] == b.split(".")[0]:
                common = ma.index.intersection(mb.index)
                if len(common):
                    yield a, b, ma[common].mean(), mb[common].mean(), pa, pb, len(common)


def claim_lora_matches_ft(averages: dict, crit: dict) -> list[str]:
    return [f"{'holds' if la >= fa - crit['max_gap_points'] else 'does not hold'}: {a} {la:.1f} vs {b} {fa:.1f} "
            f"on {n} task(s) (criterion: at most {crit['max_gap_points']} points below)"
            for a, b, la, fa, _, _, n in _pairs(averages, lambda s: ".lora" in s, lambda s: s.endswith(".ft"))]


def claim_lora_fewer_params(averages: dict, crit: dict) -> list[str]:
    out = []
    for a, b, _, _, pa, pb, _ in _pairs(averages, lambda s: ".lora" in s, lambda s: s.endswith(".ft")):
        pct = 100 * pa / pb
        out.append(f"{'holds' if pct <= crit['max_percent'] else 'does not hold'}: {a} trains {pct:.2f}% of {b}'s "
                   f"parameters (criterion: at most {crit['max_percent']}%)")
    return out


def claim_lora_beats_adapters(averages: dict, crit: dict) -> list[str]:
    out = []
    for a, b, la, fa, pa, pb, n in _pairs(averages, lambda s: ".lora" in s, lambda s: ".adapter_" in s):
        if ("houlsby" in a) == ("houlsby" in b) and pb >= crit["min_param_ratio"] * pa:
            ok = la >= fa - crit["max_gap_points"]
            out.append(f"{'holds' if ok else 'does not hold'}: {a} {la:.1f} vs {b} {fa:.1f} on {n} task(s), "
                       f"adapter with {pb / pa:.1f}x LoRA's parameters")
    return out


CLAIMS: dict[str, Callable[[dict, dict], list[str]]] = {
    "lora_matches_ft": claim_lora_matches_ft,
    "lora_fewer_params": claim_lora_fewer_params,
    "lora_beats_adapters": claim_lora_beats_adapters,
}


def claims_summary(part: pd.DataFrame) -> list[str]:
    criteria = paper_data("table2_claims")
    averages = _averages(part)
    lines = []
    for name, fn in CLAIMS.items():
        results = fn(averages, criteria[name]) or ["not testable: the rows it compares are missing"]
        lines.append(f"- {criteria[name]['text']}:")
        lines.extend(f"  - {r}" for r in results)
    return lines


# --- sweeps ---------------------------------------------------------------------------------------------------

def _sweep_reference(name: str) -> Callable[[str, int | None], float | None]:
    """Paper value for (targets "q,v", rank) in Table 6 (rank) or Table 5 (targets), MultiNLI row."""
    if name == "rank":
        paper = paper_data("table6_rank")
        values = {(",".join(r["targets"]), int(k)): v for r in paper["rows"]
                  if r["dataset"] == SWEEP_REFERENCE_DATASET for k, v in r["by_rank"].items()}
    else:
        paper = paper_data("table5_weight_types")
        values = {(",".join(c["targets"]), c["rank"]): c["results"][SWEEP_REFERENCE_DATASET]
                  for c in paper["columns"]}
    return lambda targets, r: values.get((targets, r))


def sweep_long(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    runs = frame[frame["sweep"] == name] if not frame.empty else frame
    if runs.empty:
        return pd.DataFrame(columns=["scale", "model", "task", "method", "targets", "r", "median", "std", "n", "paper",
                                     "diff"])
    # by method too: the rank sweep also compares scaling rules (method=lora,rslora)
    agg = aggregate(runs, ["scale", "model", "task", "method", "targets", "r"])
    reference = _sweep_reference(name)
    agg["paper"] = [reference(t, int(r)) for t, r in zip(agg["targets"], agg["r"])]
    agg["diff"] = agg["median"] - agg["paper"].astype(float)
    return agg.drop(columns="trainable")


SWEEP_LAYOUT = {  # sweep -> (row keys, column key) of its paper layout
    "rank": (["task", "method", "targets"], "r"),
    "targets": (["task", "method"], "targets"),
}


def sweep_wide(long: pd.DataFrame, name: str) -> dict[tuple[str, str], pd.DataFrame]:
    index, column = SWEEP_LAYOUT[name]
    out = {}
    for (scale, model), part in long.groupby(["scale", "model"], sort=False):
        part = part.assign(cell=[fmt_cell(m, s, n, p) for m, s, n, p in
                                 zip(part["median"], part["std"], part["n"], part["paper"])])
        if name == "targets":
            part = part.assign(targets=[f"{t} (r={r})" for t, r in zip(part["targets"], part["r"])])
        out[(scale, model)] = part.pivot_table(index=index, columns=column, values="cell", aggfunc="first",
                                               fill_value=MISSING).reset_index()
    return out


def plot_sweep(long: pd.DataFrame, name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (scale, model, task, method, targets), part in long.groupby(["scale", "model", "task", "method", "targets"]):
        label = f"{task} {method} {{{targets}}} ({model}, {scale})"
        if name == "rank":
            part = part.sort_values("r")
            ax.errorbar(part["r"], part["median"], yerr=part["std"].fillna(0), marker="o", capsize=3, label=label)
        else:
            ax.bar(label.replace(" (", "\n("), part["median"].iloc[0], yerr=part["std"].fillna(0).iloc[0])
    if name == "rank":
        ax.set_xscale("log", base=2)
        ax.set_xlabel("LoRA rank r")
        ax.legend(fontsize=7)
    else:
        ax.tick_params(axis="x", labelsize=6, rotation=45)
    ax.set_ylabel("main metric x 100 (median over seeds)")
    ax.set_title(f"{name} sweep")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- LoRA variants (sweeps/lora_variants.yaml) --------------------------------------------------------------

VARIANTS_SWEEP = "lora_variants"


def variants_long(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (scale, model, task, method): main metric median/std over seeds, trainable parameters, peak memory and
    time per optimizer step (medians over seeds)."""
    columns = ["scale", "model", "task", "method", "median", "std", "n", "trainable", "peak_memory_gib", "step_ms"]
    runs = frame[frame["sweep"] == VARIANTS_SWEEP] if not frame.empty else frame
    if runs.empty:
        return pd.DataFrame(columns=columns)
    runs = runs.assign(peak_memory_gib=runs["peak_memory_bytes"] / 2**30,
                       step_ms=1000 * runs["train_time_s"] / runs["optimizer_steps"].clip(lower=1))
    grouped = runs.groupby(["scale", "model", "task", "method"], sort=False)
    long = grouped.agg(median=("value", "median"), std=("value", "std"), n=("seed", "nunique"),
                       trainable=("params.trainable", "median"), peak_memory_gib=("peak_memory_gib", "median"),
                       step_ms=("step_ms", "median")).reset_index()[columns]
    from repro.methods import LORA_FAMILY  # here, not at the top: it imports torch and peft (seconds)

    order = {name: i for i, name in enumerate(LORA_FAMILY)}  # lora first, then its successors
    return long.sort_values(["scale", "model", "task", "method"], key=lambda c: c.map(order) if c.name == "method"
                            else c, kind="stable").reset_index(drop=True)


def variants_wide(long: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    out = {}
    for (scale, model), part in long.groupby(["scale", "model"], sort=False):
        out[(scale, model)] = pd.DataFrame({
            "task": part["task"], "method": part["method"],
            "main metric": [fmt_cell(m, s, n, None).removesuffix(f" / {MISSING}")
                            for m, s, n in zip(part["median"], part["std"], part["n"])],
            "trainable": [f"{t / 1e6:.3f}M" for t in part["trainable"]],
            "peak memory (GiB)": part["peak_memory_gib"].round(2), "ms / step": part["step_ms"].round(0)})
    return out


# --- writing --------------------------------------------------------------------------------------------------

MEDIAN_CELL = "median±std [seeds] / paper (difference), 0-100 scale"


def _header(title: str, scale: str, model: str, note: str, budget: str = "", cell: str = MEDIAN_CELL) -> str:
    return (f"{title}\n\nReproduced numbers: model `{model}` at scale `{scale}`{budget}. Cell: {cell}; "
            f"{MISSING} = no run. {note}")


def run_budgets(frame: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(scale, model) -> the training budgets of its runs, so a table says how much data and training it saw."""
    def describe(c: dict) -> str:
        train, dev = _get(c, "data.max_train_samples"), _get(c, "data.max_eval_samples")
        return (f"{train or 'all'} train / {dev or 'all'} eval examples, {_get(c, 'train.epochs')} epochs, "
                f"batch {_get(c, 'train.batch_size')}")

    if frame.empty:
        return {}
    budgets = frame.assign(budget=frame["config"].map(describe)).groupby(["scale", "model"])["budget"]
    return {key: " (" + "; ".join(sorted(set(values))) + ")" for key, values in budgets}


def write_tables(wide: dict, long: pd.DataFrame, out: Path, name: str, title: str, note: str,
                 extra: Callable[[pd.DataFrame], list[str]] | None = None,
                 budgets: dict[tuple[str, str], str] | None = None, cell: str = MEDIAN_CELL) -> list[Path]:
    md, tex = [], []
    for (scale, model), table in wide.items():
        budget = (budgets or {}).get((scale, model), "")
        md += [f"## {_header(title, scale, model, note, budget, cell)}", "", table.to_markdown(index=False), ""]
        if extra is not None:
            part = long[(long["scale"] == scale) & (long["model"] == model)]
            md += ["Claims at this scale:", *extra(part), ""]
        tex += [f"% {title}: model {model}, scale {scale}",
                table.to_latex(index=False, caption=f"{title} ({model}, {scale})").replace("±", r"$\pm$")]
    if not wide:
        md = [f"## {title}", "", f"no complete runs for this table ({MISSING} everywhere)."]
    paths = [out / f"{name}.md", out / f"{name}.csv", out / f"{name}.tex"]
    paths[0].write_text("\n".join(md) + "\n", encoding="utf-8")
    long.to_csv(paths[1], index=False)
    paths[2].write_text("\n".join(tex) + "\n", encoding="utf-8")
    return paths


def build(runs: Path, out: Path, scale: str | None = None) -> dict[str, list[Path]]:
    if not runs.is_dir():
        raise ReproError(f"no runs folder {runs}")
    frame, ignored = runs_frame(runs)
    print(f"{len(frame)} complete run(s) under {runs}; ignored {ignored} incomplete")
    if scale is not None and not frame.empty:
        frame = frame[frame["scale"] == scale]
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    glue = frame[frame["paper_task"].isin(paper_data("table2_glue")["tasks"])] if len(frame) else frame
    long = table2_long(glue)
    written["table2"] = write_tables(table2_wide(long), long, out, "table2", "Table 2 (GLUE)",
                                     "Rows map by the experiment's `paper_row` (method and size).",
                                     extra=claims_summary,
                                     budgets=run_budgets(glue[glue["paper_row"].notna()] if len(glue) else glue))
    # imported here: repro.generation.tables builds on this module's cell format
    from repro.generation.tables import (GENERATION_CELL, GENERATION_TABLES, RANK_SWEEP, generation_long,
                                         generation_wide, rank_sweep_long)

    for spec in GENERATION_TABLES:
        long = generation_long(frame, spec)
        written[spec.name] = write_tables(
            generation_wide(long), long, out, spec.name, spec.title,
            "Rows map by the experiment's `paper_row`; rows without one are labelled by method.",
            budgets=run_budgets(frame[frame["task"] == spec.task] if len(frame) else frame),
            cell=GENERATION_CELL)
    long = rank_sweep_long(frame)
    written["table18"] = write_tables(generation_wide(long), long, out, "table18", "Table 18 (GPT-2 LoRA rank, E2E)",
                                      "Paper: GPT-2 medium, 26,000 steps; METEOR and ROUGE_L x100 here.",
                                      budgets=run_budgets(frame[frame["sweep"] == RANK_SWEEP] if len(frame) else frame),
                                      cell=GENERATION_CELL)
    for name, title in (("rank", "Table 6 (rank r)"), ("targets", "Table 5 (weight types, equal budget)")):
        long = sweep_long(frame, name)
        written[name] = write_tables(sweep_wide(long, name), long, out, name, title,
                                     f"Paper: GPT-3 175B on {SWEEP_REFERENCE_DATASET} (the reference, not the same "
                                     "task or model).",
                                     budgets=run_budgets(frame[frame["sweep"] == name] if len(frame) else frame))
        if not long.empty:
            plot_sweep(long, name, out / f"{name}.png")
            written[name].append(out / f"{name}.png")
    long = variants_long(frame)
    written[VARIANTS_SWEEP] = write_tables(
        variants_wide(long), long, out, VARIANTS_SWEEP, "LoRA and its successors (equal rank budget)",
        "Main metric: the task's (GLUE x100, generation on its printed scale); memory: the run's peak (CPU: resident "
        "set; CUDA: torch's max allocated); ms / step: training time per optimizer step. No paper values: the paper "
        "predates these methods.", budgets=run_budgets(frame[frame["sweep"] == VARIANTS_SWEEP] if len(frame) else frame),
        cell="median±std [seeds]")
    for paths in written.values():
        print("wrote " + ", ".join(str(p) for p in paths))
    return written


def log_to_wandb(written: dict[str, list[Path]], project: str) -> None:
    """Log each table to W&B in the group its sweep's runs use (`logger.group` = `sweep_name`); offline unless
    WANDB_MODE=online."""
    import os

    import wandb

    for name, paths in written.items():
        frame = pd.read_csv(next(p for p in paths if p.suffix == ".csv"))
        if frame.empty:
            continue
        run = wandb.init(project=project, group=name, name=f"{name}-table", job_type="tables",
                         mode=os.environ.get("WANDB_MODE", "offline"), reinit="finish_previous")
        run.log({f"{name}/table": wandb.Table(dataframe=frame.astype(str))})
        run.finish()


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m repro.tables", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=None, help="run folders (default: $REPRO_RESULTS/runs or "
                                                                 "results/runs)")
    parser.add_argument("--out", type=Path, default=None, help="default: $REPRO_RESULTS/tables or results/tables")
    parser.add_argument("--scale", help="only runs at this scale (paper, cpu, smoke)")
    parser.add_argument("--wandb", metavar="PROJECT", help="also log the tables to this W&B project, one group per "
                                                           "sweep (offline unless WANDB_MODE=online)")
    args = parser.parse_args(argv)
    import os

    base = Path(os.environ.get("REPRO_RESULTS", "results"))
    written = build(args.runs or base / "runs", args.out or base / "tables", args.scale)
    if args.wandb:
        log_to_wandb(written, args.wandb)


if __name__ == "__main__":
    main()
