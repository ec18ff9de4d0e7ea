"""`python -m repro.report [--runs results/records] [--tables results/tables] [--out results/report]`: one HTML page.

Writes `<out>/index.html`: one self-contained page (inline CSS; its figures beside it under `<out>/`, or inside it
with `--embed`) that a reader opens in a browser to see what was run, at what scale, what reproduced and what did
not: every generated table (from the long CSVs `python -m repro.tables` writes, laid out by the same functions), each
cell coloured by its difference from the paper and showing its seed count, the trivial-baseline rows, the claim
verdicts (judged again from the records or runs under `--runs` by repro.verdicts, as `repro.tables` does), per cell the learning
curves of the runs behind it, the rank-sweep and learning-curve plots, the subspace heatmaps, latency and throughput
charts, provenance (commits, package versions, hardware, scale and budget, dates) and links to the run folders.
Missing results are shown as missing: a cell without runs, a table whose CSV is absent, a verdict without runs.
With a Chromium on the PATH it also prints the page to `<out>/index.pdf` (and, with `--screenshot`, a PNG).
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import pandas as pd
import yaml

from repro import tables as T
from repro.cells import MISSING
from repro.config import CONF_DIR
from repro.errors import ReproError, exit_on_user_error
from repro.generation.tables import VALIDATION_LOSS
from repro.paper_tables import runs_for, tables as registered
from repro.paper_tables.common import judged_lines, label as _label
from repro.paper_tables.spec import Layout, PaperTable
from repro.results import corrupt_records, is_records_folder
from repro.verdicts import FAILS, HOLDS, INCONCLUSIVE, load_rule

TEMPLATE = "report.html.j2"
PAGE = "index.html"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
NOT_TESTABLE = "not testable"
VERDICT_WORDS = (HOLDS, FAILS, INCONCLUSIVE, NOT_TESTABLE)
REPORT_PACKAGES = ("jinja2", "matplotlib", "pandas")


def report_config() -> dict:
    """conf/report.yaml: colour scale, figure sizes and caps."""
    with open(CONF_DIR / "report.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


# --- the tables: the registry's (repro/paper_tables/), each from the long CSV repro.tables wrote ----------------------

def read_long(path: Path, layout: Layout) -> pd.DataFrame:
    """A table's long CSV with every column the current layout needs (absent ones, from older CSVs, are NaN and
    show as missing); text keys read as text."""
    long = pd.read_csv(path, keep_default_na=False, na_values=[""])
    long = long.reindex(columns=list(dict.fromkeys([*layout.columns, *long.columns])))
    for column in layout.text_columns:
        long[column] = long[column].map(_label)
    return long


# --- cells: colour, text, the runs behind them -------------------------------------------------------------------

@dataclass
class Colours:
    """(reproduced - paper) / |paper| in percent -> a background colour on a diverging scale."""

    limit: float
    legend_steps: list[float]
    colormap: str
    strength: float

    @classmethod
    def from_config(cls, cfg: dict) -> "Colours":
        c = cfg["colour"]
        return cls(float(c["limit_percent"]), [float(v) for v in c["legend_percent"]], c["colormap"],
                   float(c["strength"]))

    def of(self, percent: float) -> str:
        from matplotlib import colormaps
        from matplotlib.colors import to_hex

        clipped = max(-self.limit, min(self.limit, percent))
        rgb = colormaps[self.colormap](0.5 + clipped / (2 * self.limit))[:3]
        return to_hex(tuple(1 - self.strength * (1 - v) for v in rgb))

    def legend(self) -> list[dict]:
        return [{"label": f"{v:+g}%" if v else "0%", "colour": self.of(v)} for v in self.legend_steps]


def relative_percent(value: float, paper: float) -> float | None:
    """(value - paper) / |paper| x 100; None without both numbers or for a paper value of 0."""
    try:
        value, paper = float(value), float(paper)
    except (TypeError, ValueError):
        return None
    if math.isnan(value) or math.isnan(paper) or paper == 0:
        return None
    return 100 * (value - paper) / abs(paper)


@dataclass
class Card:
    """The learning curves of one set of runs (one table cell, or several cells with the same runs)."""

    anchor: str
    caption: str
    cells: list[str] = field(default_factory=list)
    image: str | None = None
    note: str = ""
    runs: list[dict] = field(default_factory=list)  # {run_id, seed, href}


class Page:
    """What the template gets; collects figures (beside the page or embedded) and cards as sections are built."""

    def __init__(self, out: Path, embed: bool, cfg: dict):
        self.out, self.embed, self.cfg = out, embed, cfg
        self.colours = Colours.from_config(cfg)
        self.cards_by_runs: dict[tuple, Card] = {}
        self.curve_figures = 0

    def href(self, path: Path) -> str:
        """A link from the page to a file or folder (relative, so the folder can be moved with its runs)."""
        return Path(os.path.relpath(Path(path).resolve(), self.out.resolve())).as_posix()

    def image(self, path: Path) -> str:
        """An <img src> for a PNG under `out`: relative, or a data URI with --embed."""
        if self.embed:
            return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
        return self.href(path)

    def copy_figure(self, path: Path, folder: str) -> str:
        """Copy a figure made elsewhere (tables, subspace) beside the page, so the report folder stands alone."""
        target = self.out / "figures" / folder / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return self.image(target)


def _figure(cfg: dict, key: str, ncols: int = 1):
    """A bare matplotlib Figure (no pyplot state: nothing to close) of the size conf/report.yaml gives `key`."""
    from matplotlib.figure import Figure

    size = cfg[key]
    fig = Figure(figsize=(size["width_in"], size["height_in"]), dpi=size["dpi"])
    return fig, fig.subplots(1, ncols)


def draw_curves(records: list[dict], path: Path, title: str, cfg: dict) -> None:
    """Train loss and dev main metric per epoch, one line per run (seed): does a cell's number come from runs that
    converged, diverged or were still rising? Fixed margins, no tight_layout: a page draws dozens of these."""
    from matplotlib.ticker import MaxNLocator

    fig, (loss_ax, metric_ax) = _figure(cfg, "curves", 2)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.88, wspace=0.25)
    metric_name = None
    for record in sorted(records, key=lambda r: (r.get("seed") is None, r.get("seed"))):
        epochs = record.get("epochs") or []
        main = record.get("main_metric")
        scale = T.record_traits(record).metric_scale
        label = f"seed {record.get('seed')}"
        xs = [e.get("epoch") for e in epochs]
        loss = [e.get("train_loss") for e in epochs]
        if any(v is not None for v in loss):
            loss_ax.plot(xs, [math.nan if v is None else v for v in loss], marker="o", ms=3, label=label)
        key = main if any(main in (e.get("metrics") or {}) for e in epochs) else VALIDATION_LOSS
        values = [(e.get("metrics") or {}).get(key) for e in epochs]
        if any(v is not None for v in values):
            factor = scale if key == main else 1
            metric_ax.plot(xs, [math.nan if v is None else v * factor for v in values], marker="o", ms=3, label=label)
            metric_name = key + (" x100" if factor != 1 else "")
    loss_ax.set_title("train loss per epoch", fontsize=8)
    metric_ax.set_title(f"dev {metric_name} per epoch" if metric_name else "dev metric: none stored", fontsize=8)
    for ax in (loss_ax, metric_ax):
        ax.tick_params(labelsize=6)
        ax.locator_params(axis="y", nbins=4)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))  # epochs
        if not ax.lines:
            ax.text(0.5, 0.5, f"{MISSING} not stored", ha="center", va="center", transform=ax.transAxes, fontsize=8)
    if metric_ax.lines:
        metric_ax.legend(fontsize=6, ncols=2)
    fig.savefig(path, metadata={"Title": title})  # the card's caption names the cell


def cell_card(page: Page, table: PaperTable, scale: str, model: str, caption: str, runs: pd.DataFrame,
              records: dict[str, dict]) -> Card:
    """The card (curve figure and run links) of a cell's runs; cells with the same runs share one card."""
    ids = tuple(sorted(runs["run_id"]))
    key = (table.name, scale, model, ids)
    if key in page.cards_by_runs:
        return page.cards_by_runs[key]
    card = Card(anchor=f"cell-{table.name}-{len(page.cards_by_runs)}", caption=caption)
    card.runs = [{"run_id": r.run_id, "seed": r.seed, "href": page.href(Path(r.run_dir)) if r.run_dir else None}
                 for r in runs.sort_values("seed").itertuples()]
    cap = page.cfg["curves"]["max_figures"]
    if page.curve_figures >= cap:
        card.note = f"no figure: the page draws at most {cap} (conf/report.yaml curves.max_figures)"
    else:
        path = page.out / "curves" / f"{card.anchor}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_curves([records[i] for i in ids if i in records], path, f"{caption} ({model}, {scale})", page.cfg)
        card.image = page.image(path)
        page.curve_figures += 1
    page.cards_by_runs[key] = card
    return card


def _matches(runs: pd.DataFrame, row: pd.Series, keys: Iterable[tuple[str, str]]) -> pd.DataFrame:
    mask = pd.Series(True, index=runs.index)
    for long_col, run_col in keys:
        mask &= runs[run_col].map(_label) == _label(row[long_col])
    return runs[mask]


def grid(page: Page, table: PaperTable, wide: pd.DataFrame, long: pd.DataFrame, runs: pd.DataFrame,
         records: dict[str, dict], scale: str, model: str) -> dict:
    """The wide table as header + rows of cells {text, colour, kind, href, title}: each reproduced cell coloured by
    its relative difference from the paper, a cell without runs marked missing, baseline rows set apart."""
    layout = table.layout
    by_key: dict[tuple, pd.Series] = {}
    for _, row in long.iterrows():
        labels, column = layout.cell(row)
        by_key[(labels, column)] = row
    header = [str(c) for c in wide.columns]
    rows, mismatches = [], []
    for _, wrow in wide.iterrows():
        labels = tuple(_label(wrow[c]) for c in layout.rows)
        baseline = any(T.BASELINE_LABEL in label for label in labels)  # also "trivial baseline (copy the input)"
        cells = []
        for column in wide.columns:
            text = _label(wrow[column])
            cell = {"text": text, "kind": "label" if column in layout.rows else "baseline" if baseline else "plain",
                    "colour": None, "href": None, "title": ""}
            row = by_key.get((labels, str(column)))
            if row is not None and not baseline:
                n = row[layout.n]
                has_value = not pd.isna(row[layout.value]) and not (pd.isna(n) or int(n) == 0)
                percent = relative_percent(row[layout.value], row.get("paper"))
                if not has_value:
                    cell.update(kind="missing", title="no complete run for this cell")
                elif percent is None:
                    cell.update(kind="nopaper", title="no paper value to compare with")
                else:
                    cell.update(kind="value", colour=page.colours.of(percent),
                                title=f"{percent:+.1f}% of the paper's value")
                hits = _matches(runs, row, layout.run_keys) if has_value and not runs.empty else runs.iloc[0:0]
                seeds = hits["seed"].nunique() if len(hits) else 0
                # a per-task table's other tasks are not built from these runs (their curves were run elsewhere)
                judged = not runs.empty and not (table.per_task and not (runs["task"] == row["task"]).any())
                if has_value and judged and seeds != int(n):
                    mismatches.append(f"{' · '.join(labels)} · {column}: {int(n)} seed(s) in the table, {seeds} "
                                      "under --runs")
                    cell["title"] += f"; the runs under --runs differ ({seeds} seed(s))"
                if len(hits):
                    card = cell_card(page, table, scale, model, " · ".join([*labels, str(column)]), hits, records)
                    card.cells.append(f"{' · '.join(labels)} · {column}")
                    cell["href"] = f"#{card.anchor}"
                elif has_value:
                    cell["title"] += "; its runs are not under --runs (no curves)"
            elif text.startswith(MISSING):
                cell["kind"] = "missing" if not baseline else "baseline"
            cells.append(cell)
        rows.append({"baseline": baseline, "cells": cells})
    return {"header": header, "rows": rows, "mismatches": mismatches}


# --- verdicts -----------------------------------------------------------------------------------------------

def verdict_blocks(lines: list[str]) -> dict:
    """repro.tables' claims summary (`- claim:` then `  - verdict` lines, then the rule) as claims with verdicts,
    each verdict with its word (holds / fails / inconclusive / not testable) for colouring."""
    claims, rule = [], ""
    for line in lines:
        if line.startswith("  - ") and claims:
            text = line[4:]
            found = re.search("|".join(re.escape(w) for w in VERDICT_WORDS), text)
            claims[-1]["verdicts"].append({"word": found.group(0) if found else "", "text": text})
        elif line.startswith("- "):
            claims.append({"claim": line[2:].rstrip(":"), "verdicts": []})
        elif line.startswith("Verdict rule"):
            rule = line
    return {"claims": claims, "rule": rule}


# --- sections -----------------------------------------------------------------------------------------------

def _section_of(frame: pd.DataFrame, scale: str, model: str) -> pd.DataFrame:
    if frame.empty or "scale" not in frame:
        return frame
    return frame[(frame["scale"].map(_label) == scale) & (frame["model"].map(_label) == model)]


def table_section(page: Page, table: PaperTable, tables: Path, frame: pd.DataFrame, records: dict[str, dict],
                  rule, runs_root: Path | None) -> dict:
    """One table: per (scale, model) its coloured grid, notes, verdicts and cell cards; its plots; its files."""
    csvs = sorted(tables.glob(f"{table.name}_*.csv")) if table.per_task else [tables / f"{table.name}.csv"]
    csv_name = f"{table.name}_<task>.csv" if table.per_task else f"{table.name}.csv"
    section = {"name": table.name, "title": table.title, "note": table.note, "cell_text": table.cell_text,
               "parts": [], "missing": None, "files": [], "figures": [], "stale": [], "plain": None, "notes": []}
    section["files"] = [{"name": p.name, "href": page.href(p)} for csv in csvs
                        for p in (csv.with_suffix(f".{ext}") for ext in ("md", "csv", "tex")) if p.is_file()]
    for png in sorted(tables.glob(f"{table.name}*.png")):
        section["figures"].append({"src": page.copy_figure(png, "tables"), "caption": png.name})
    if not any(csv.is_file() for csv in csvs):
        section["missing"] = f"no {csv_name} under {tables} (run `make tables`)"
        return section
    if table.layout is None:  # the CSV is the table as written (LongLoRA): shown as it is, with its notes
        section["plain"] = plain_table(pd.read_csv(csvs[0], keep_default_na=False),
                                       page.cfg["tables"]["max_plain_rows"])
        section["notes"] = table.notes(pd.DataFrame(), tables) if table.notes else []
        return section
    layout = table.layout
    try:
        long = pd.concat([read_long(csv, layout) for csv in csvs], ignore_index=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        section["missing"] = f"{csv_name} is unreadable ({type(exc).__name__}); run `make tables`"
        return section
    runs = table.select(runs_for(table, frame)) if not frame.empty else frame
    if layout.keyed is not None and not runs.empty:
        runs = layout.keyed(runs)
    if long.empty:
        section["missing"] = "no complete runs for this table"
    budgets = T.run_budgets(runs) if not runs.empty else {}
    wide = layout.wide(long) if not long.empty else {}
    for (scale, model), grid_frame in wide.items():
        scale, model = _label(scale), _label(model)
        part_long = _section_of(long, scale, model)
        part_runs = _section_of(runs, scale, model)
        claims = None
        if table.claims is not None:
            claims = verdict_blocks(judged_lines(table.claims(part_runs, rule), rule)) if not part_runs.empty else {
                "missing": f"no runs at scale {scale} with model {model} under {runs_root or '--runs'}: claims are "
                           f"judged from per-seed values, which the CSV does not hold (see {table.name}.md)"}
        cells = grid(page, table, grid_frame, part_long, part_runs, records, scale, model)
        stale = ""
        if cells["mismatches"]:
            stale = (f"The runs under --runs do not match {csv_name} in {len(cells['mismatches'])} cell(s) (e.g. "
                     f"{cells['mismatches'][0]}): the table shows the CSV; its curves"
                     f"{' and claim verdicts' if table.claims else ''} come from the runs under --runs. "
                     f"`make tables` rebuilds the table from those runs.")
        section["parts"].append({
            "scale": scale, "model": model, "budget": budgets.get((scale, model), ""), "grid": cells, "stale": stale,
            "notes": [line for line in table.notes(part_long, tables) if line] if table.notes else [],
            "claims": claims, "runs": len(part_runs),
            "headline": table.headline(part_long, tables) if table.headline else []})
    if not runs.empty:
        shown = {(p["scale"], p["model"]) for p in section["parts"]}
        for (scale, model), part in runs.groupby(["scale", "model"]):
            if (_label(scale), _label(model)) not in shown:
                section["stale"].append(f"{len(part)} run(s) at scale {scale} with model {model} are under --runs "
                                        f"but not in {csv_name} (run `make tables` to add them)")
    return section


def plain_table(frame: pd.DataFrame, max_rows: int) -> dict:
    """A CSV shown as it is (numbers to 4 significant digits), cut after `max_rows` rows with a note."""
    def text(v) -> str:
        if isinstance(v, float):
            return MISSING if math.isnan(v) else f"{v:.0f}" if abs(v) >= 1000 else f"{v:.4g}"
        return str(v)

    rows = [[text(v) for v in row] for row in frame.head(max_rows).itertuples(index=False)]
    cut = f"first {max_rows} of {len(frame)} rows" if len(frame) > max_rows else ""
    return {"header": [str(c) for c in frame.columns], "rows": rows, "cut": cut}


def table7_section(page: Page, tables: Path, figures: Path | None) -> dict:
    """Table 7 analogues (tables/table7_*.csv) and the subspace heatmaps (figures/subspace_*.png)."""
    max_rows = page.cfg["tables"]["max_plain_rows"]
    items = [{"name": p.name, "href": page.href(p), "table": plain_table(pd.read_csv(p), max_rows)}
             for p in sorted(tables.glob("table7_*.csv"))]
    heatmaps, summaries = [], []
    if figures is not None and figures.is_dir():
        heatmaps = [{"src": page.copy_figure(p, "subspace"), "caption": p.stem} for p in sorted(figures.glob("*.png"))]
        summaries = [{"name": p.name, "href": page.href(p)} for p in sorted(figures.glob("*summary*.md"))]
    return {"tables": items, "heatmaps": heatmaps, "summaries": summaries,
            "missing": [] if items else [f"no table7_*.csv under {tables}"]}


@dataclass(frozen=True)
class Panel:
    value: str                 # the CSV column drawn as bars
    ylabel: str
    error: str | None = None   # its error bar column
    paper: str | None = None   # the paper's column, drawn beside (only where it is comparable: ratios, not ms)


# benchmark CSV name prefix -> (label columns, panels) of its chart; other CSVs are shown as tables only. Latency in
# ms is ours alone (the paper's is a GPU's); the overhead over the base model is what the paper's claim is about.
BENCH_CHARTS: dict[str, tuple[tuple[str, ...], tuple[Panel, ...]]] = {
    "latency_": (("setting", "variant"), (Panel("mean_ms", "forward-pass latency (ms), ours", "std_ms"),
                                          Panel("overhead_pct", "latency overhead vs base (%)",
                                                paper="paper_overhead_pct"))),
    "train_": (("method",), (Panel("tokens_per_s", "training throughput (tokens/s)"),
                             Panel("step_ms", "time per training step (ms)", "step_std_ms"))),
    "hf_trainer_": (("side",), (Panel("tokens_per_s", "training throughput (tokens/s)"),)),
}


def bench_chart(page: Page, csv: Path, frame: pd.DataFrame) -> str | None:
    """A bar chart of a latency or throughput CSV: one panel per quantity, the paper's bars beside ours where the
    CSV has comparable paper values."""
    spec = next((v for k, v in BENCH_CHARTS.items() if csv.stem.startswith(k)), None)
    if spec is None or frame.empty:
        return None
    labels, panels = spec
    panels = tuple(p for p in panels if p.value in frame and set(labels) <= set(frame.columns))
    if not panels:
        return None
    fig, axes = _figure(page.cfg, "chart", len(panels))
    axes = axes if len(panels) > 1 else [axes]
    names = [" ".join(str(row[c]) for c in labels) for _, row in frame.iterrows()]
    xs = list(range(len(frame)))
    for ax, panel in zip(axes, panels):
        paper = panel.paper if panel.paper in frame and frame[panel.paper].notna().any() else None
        width = 0.4 if paper else 0.8
        shift = width / 2 if paper else 0
        ax.bar([x - shift for x in xs], frame[panel.value].fillna(0), width=width, label="ours",
               yerr=frame[panel.error].fillna(0) if panel.error in frame else None, capsize=3)
        if paper:
            ax.bar([x + shift for x in xs], frame[paper].fillna(0), width=width, label="paper", color="grey")
            ax.legend(fontsize=7)
        ax.set_xticks(xs, names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(panel.ylabel, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(csv.stem, fontsize=9)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.32, top=0.88, wspace=0.35)
    path = page.out / "figures" / "bench" / f"{csv.stem}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return page.image(path)


def bench_section(page: Page, bench: Path | None) -> dict:
    if bench is None or not bench.is_dir():
        return {"items": [], "missing": f"no benchmarks folder {bench} (run `make bench`)"}
    items = []
    for csv in sorted(bench.glob("*.csv")):
        frame = pd.read_csv(csv)
        md = csv.with_suffix(".md")
        items.append({"name": csv.stem, "chart": bench_chart(page, csv, frame),
                      "table": plain_table(frame, page.cfg["tables"]["max_plain_rows"]),
                      "files": [{"name": p.name, "href": page.href(p)} for p in (md, csv) if p.is_file()]})
    return {"items": items, "missing": None if items else f"no CSV under {bench} (run `make bench`)"}


def _distinct(values: Iterable) -> list[str]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return [f"{k} ({n} run{'s' if n != 1 else ''})" for k, n in sorted(counts.items())]


def provenance(frame: pd.DataFrame, records: dict[str, dict]) -> list[dict]:
    """Per (scale, model): how many runs, tasks, budgets, git commits, package versions, hardware and dates."""
    if frame.empty:
        return []
    budgets = T.run_budgets(frame)
    out = []
    for (scale, model), part in frame.groupby(["scale", "model"]):
        recs = [records[i] for i in part["run_id"] if i in records]
        dates = sorted(r["started_at"] for r in recs if r.get("started_at"))
        hardware = [", ".join(f"{k} {v}" for k, v in (r.get("hardware") or {}).items()
                              if k in ("device", "gpu", "cpu_count", "torch_threads", "processes")) or MISSING
                    for r in recs]
        out.append({
            "scale": scale, "model": model, "runs": len(part), "tasks": ", ".join(sorted(set(part["task"]))),
            "budget": budgets.get((scale, model), "").strip(" ()") or MISSING,
            "commits": _distinct((r.get("git_commit") or MISSING)[:12] for r in recs),
            "versions": _distinct(", ".join(f"{k} {v}" for k, v in (r.get("versions") or {}).items()) or MISSING
                                  for r in recs),
            "hardware": _distinct(hardware),
            "platform": _distinct((r.get("hardware") or {}).get("platform", MISSING) for r in recs),
            "dates": f"{dates[0][:16]} to {dates[-1][:16]} UTC" if dates else MISSING})
    return out


def runs_listing(page: Page, frame: pd.DataFrame) -> list[dict]:
    """repro.tables.all_runs (tables each run is in, what differs), with a link to each run's folder."""
    if frame.empty:
        return []
    folders = dict(zip(frame["run_id"], frame["run_dir"]))
    listing = T.all_runs(frame)
    return [{**{k: f"{v:.2f}" if isinstance(v, float) and not math.isnan(v) and not v.is_integer() else _label(v)
                for k, v in row.items()},
             "href": page.href(Path(folders[row["run_id"]])) if folders.get(row["run_id"]) else None}
            for row in listing.to_dict("records")]


def summary(sections: list[dict]) -> dict:
    """At a glance: verdict counts and the cells reproduced / missing per table."""
    words = {w: 0 for w in VERDICT_WORDS}
    verdicts, cells = [], []
    for section in sections:
        measured = missing = 0
        for part in section["parts"]:
            for row in part["grid"]["rows"]:
                for cell in row["cells"]:
                    measured += cell["kind"] in ("value", "nopaper")
                    missing += cell["kind"] == "missing"
            for claim in (part["claims"] or {}).get("claims", []):
                for v in claim["verdicts"]:
                    words[v["word"]] = words.get(v["word"], 0) + 1
                    verdicts.append({"table": section["title"], "anchor": section["name"], "claim": claim["claim"],
                                     **v})
        cells.append({"title": section["title"], "anchor": section["name"], "measured": measured, "missing": missing,
                      "absent": section["missing"], "runs": sum(p["runs"] for p in section["parts"]),
                      "stale": [p["stale"] for p in section["parts"] if p["stale"]] + section["stale"]})
    headlines = [{"table": s["title"], "anchor": s["name"], "lines": p["headline"]}
                 for s in sections for p in s["parts"] if p["headline"]]
    return {"words": words, "verdicts": verdicts, "cells": cells, "headlines": headlines}


def builder_info() -> dict:
    from repro.provenance import git_commit, package_versions  # here, not at the top: it imports torch

    versions = {name: version or MISSING for name, version in package_versions(REPORT_PACKAGES).items()}
    return {"commit": git_commit() or MISSING, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "python": sys.version.split()[0], "versions": versions}


# --- the page -----------------------------------------------------------------------------------------------

def render(context: dict) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("repro", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    return env.get_template(TEMPLATE).render(**context)


def build(runs: Path | None, tables: Path, out: Path, figures: Path | None = None, bench: Path | None = None,
          embed: bool = False, pdf: bool = True) -> Path:
    """Write `out`/index.html (and its figures beside it); returns the page's path."""
    if not tables.is_dir():
        raise ReproError(f"no tables folder {tables} (run `make tables`, or pass --tables)")
    if out.exists() and not out.is_dir():
        raise ReproError(f"--out {out} is a file, not a folder")
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for generated in ("curves", "figures"):  # this build's figures only, never a stale one
        shutil.rmtree(out / generated, ignore_errors=True)
    cfg = report_config()
    page = Page(out, embed, cfg)
    if runs is not None and runs.is_dir():
        for problem in [] if is_records_folder(runs) else corrupt_records(runs):
            print(f"warning: {problem}; left out", file=sys.stderr)
        frame, ignored = T.runs_frame(runs)
    else:
        frame, ignored = pd.DataFrame(), 0
    records = dict(zip(frame["run_id"], frame["record"])) if not frame.empty else {}
    rule = load_rule()
    sections = [table_section(page, table, tables, frame, records, rule, runs)
                for table in registered() if table.report]
    cards = list(page.cards_by_runs.values())
    context = {
        "title": "repro-lora: reproduction report",
        "runs_root": str(runs) if runs is not None else MISSING, "runs_href": page.href(runs) if runs and
        runs.is_dir() else None, "runs_present": runs is not None and runs.is_dir(),
        "n_runs": len(frame), "ignored": ignored, "tables_root": str(tables),
        "scales": sorted(set(frame["scale"].map(_label))) if not frame.empty else [],
        "models": sorted(set(frame["model"])) if not frame.empty else [],
        "legend": page.colours.legend(), "limit": page.colours.limit, "missing_mark": MISSING,
        "sections": sections, "summary": summary(sections), "cards": cards,
        "table7": table7_section(page, tables, figures), "bench": bench_section(page, bench),
        "provenance": provenance(frame, records), "runs": runs_listing(page, frame), "builder": builder_info(),
        "rule": load_rule().text(),
    }
    path = out / PAGE
    path.write_text(render(context), encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB, {page.curve_figures} curve figure(s)) in "
          f"{time.perf_counter() - start:.1f} s")
    if pdf:
        chromium = find_chromium()
        if chromium is None:
            print("no Chromium on the PATH (apt-get install chromium): no PDF")
        elif print_page(chromium, path, out / "index.pdf", "pdf"):
            print(f"wrote {out / 'index.pdf'}")
    return path


# --- a headless browser: PDF and screenshot ------------------------------------------------------------------

def find_chromium() -> str | None:
    return next((p for name in CHROMIUM_NAMES if (p := shutil.which(name))), None)


def print_page(chromium: str, page: Path, target: Path, kind: str, timeout_s: float = 120,
               window: str = "1400,3000") -> bool:
    """Render `page` with headless Chromium to a PDF (`kind` "pdf") or a PNG screenshot ("png"). False (with a
    warning) when the browser fails: the page itself is written either way."""
    flag = {"pdf": f"--print-to-pdf={target}", "png": f"--screenshot={target}"}[kind]
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-pdf-header-footer", f"--window-size={window}", flag, page.resolve().as_uri()]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"warning: {chromium} failed ({type(exc).__name__}); no {kind}", file=sys.stderr)
        return False
    if done.returncode != 0 or not target.is_file():
        print(f"warning: {chromium} exited {done.returncode}; no {kind}: {done.stderr.strip()[-300:]}",
              file=sys.stderr)
        return False
    return True


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m repro.report", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=None, help="run folders or a folder of records (default: the "
                                                                 "committed records, $REPRO_RESULTS/records or "
                                                                 "results/records; absent = tables only)")
    parser.add_argument("--tables", type=Path, default=None, help="the tables `python -m repro.tables` wrote "
                                                                   "(default: $REPRO_RESULTS/tables or results/tables)")
    parser.add_argument("--figures", type=Path, default=None, help="subspace heatmaps (default: .../figures)")
    parser.add_argument("--bench", type=Path, default=None, help="benchmark CSVs (default: .../bench)")
    parser.add_argument("--out", type=Path, default=None, help="default: $REPRO_RESULTS/report or results/report")
    parser.add_argument("--embed", action="store_true", help="put the figures inside index.html (one file to send)")
    parser.add_argument("--no-pdf", action="store_true", help="do not print index.pdf even with a Chromium")
    parser.add_argument("--screenshot", action="store_true", help="also render <out>/screenshot.png (Chromium)")
    args = parser.parse_args(argv)
    base = Path(os.environ.get("REPRO_RESULTS", "results"))
    for name in ("runs", "figures", "bench"):  # given explicitly: must exist; by default: may be absent (shown so)
        given = getattr(args, name)
        if given is not None and not given.is_dir():
            raise ReproError(f"--{name} {given}: no such folder")
    path = build(args.runs or base / "records", args.tables or base / "tables", args.out or base / "report",
                 args.figures or base / "figures", args.bench or base / "bench", args.embed, not args.no_pdf)
    if args.screenshot:
        chromium = find_chromium()
        if chromium is None:
            raise ReproError("--screenshot needs a Chromium on the PATH (apt-get install chromium)")
        if print_page(chromium, path, path.parent / "screenshot.png", "png"):
            print(f"wrote {path.parent / 'screenshot.png'}")
    print(f"open file://{path.resolve()} in a browser")


if __name__ == "__main__":
    main()
