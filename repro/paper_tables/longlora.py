"""The LongLoRA comparison (conf/experiment/longlora/, `make reproduce-longlora`): one line per row of
conf/paper/longlora.yaml (runs identified by `paper_row`) and per (scale, model, target context): trainable
parameters, perplexity at each evaluation length and passkey accuracy at each length, mean ± std over seeds with the
number of seeds, and the paper's perplexity where conf/paper/longlora.yaml has it (empty otherwise; the paper's
setting differs: Llama-2 7B, PG-19, 8k-32k). A trivial-baseline line gives a unigram model's perplexity
(training-stream token frequencies) and chance passkey accuracy, both stored by every run. Under the table, each
claim of conf/paper/longlora_claims.yaml gets a verdict by the rule of conf/paper/verdict_rule.yaml on minus the NLL
at the target context. Writes longlora.{md,csv}: the CSV is the table as shown (no long form), so the report shows
it as it is."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from repro.paper import paper_data
from repro.paper_tables.common import keep_stale
from repro.paper_tables.spec import PaperTable
from repro.results import read_result
from repro.verdicts import INCONCLUSIVE, Cell, Rule, Verdict, compare, decide, load_rule, tolerance_from_gap

NAME = "longlora"
PAPER = "longlora"  # conf/paper/longlora.yaml (rows, labels, the paper's perplexities)
TASK = "long_context"
ROW_PREFIX = "longlora."
BASELINE_ROW = "trivial baseline (unigram model; passkey by chance)"


def is_comparison_run(record: dict[str, Any]) -> bool:
    """A complete long_context run that belongs to a comparison row."""
    return (record.get("status") == "complete" and record.get("task") == TASK
            and str((record.get("config") or {}).get("paper_row") or "").startswith(ROW_PREFIX))


def long_context_runs(root: Path) -> list[dict[str, Any]]:
    """Complete long_context records under `root` (run folders) that belong to a comparison row."""
    records = (read_result(d) for d in sorted(root.glob("*/")) if d.is_dir())
    return [r for r in records if r and is_comparison_run(r)]


def select(frame: pd.DataFrame) -> pd.DataFrame:
    """The comparison's runs among repro.tables.runs_frame rows."""
    if frame.empty:
        return frame
    return frame[(frame["task"] == TASK) & frame["paper_row"].map(lambda r: str(r or "").startswith(ROW_PREFIX))]


def _cell(values: list[float], digits: int) -> str:
    if not values:
        return ""
    mean = float(np.mean(values))
    std = f" ± {np.std(values, ddof=1):.{digits}f}" if len(values) > 1 else ""
    return f"{mean:.{digits}f}{std} [{len(values)}]"


def group_key(record: dict[str, Any]) -> tuple[str, str, int]:
    return record.get("scale") or "-", record["model"], int(record["long_context"]["target_context"])


def comparison_table(records: list[dict[str, Any]]) -> dict[tuple[str, str, int], pd.DataFrame]:
    """Per (scale, model, target context) the table in the paper's row order, the baseline line last."""
    rows_cfg = paper_data(PAPER)["rows"]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[group_key(r)].append(r)
    tables = {}
    for key, part in sorted(groups.items()):
        lengths = sorted({n for r in part for n in r["long_context"]["eval_lengths"]})
        lines = []
        for row_id, spec in rows_cfg.items():
            runs = [r for r in part if r["config"]["paper_row"] == row_id]
            if not runs:
                continue
            line = {"row": spec["label"], "trainable": f"{runs[0]['params']['trainable'] / 1e6:.2f}M",
                    "PI factor": runs[0]["long_context"]["interpolation_factor"],
                    "S²-Attn": "yes" if runs[0]["long_context"]["s2_attn"] else "no"}
            for n in lengths:
                line[f"ppl@{n}"] = _cell([r["best_metrics"][f"ppl@{n}"] for r in runs if f"ppl@{n}" in r["best_metrics"]], 2)
            for n in lengths:
                line[f"passkey@{n}"] = _cell([100 * r["best_metrics"][f"passkey@{n}"] for r in runs
                                              if f"passkey@{n}" in r["best_metrics"]], 0)
            line["paper ppl"] = "" if spec.get("paper_ppl") is None else f"{spec['paper_ppl']} @ {spec['paper_context']}"
            lines.append(line)
        baseline = part[0].get("trivial_baseline") or {}
        line = {"row": BASELINE_ROW, "trainable": "", "PI factor": "", "S²-Attn": ""}
        for n in lengths:
            line[f"ppl@{n}"] = f"{baseline[f'ppl@{n}']:.2f}" if f"ppl@{n}" in baseline else ""
        for n in lengths:
            line[f"passkey@{n}"] = f"{100 * baseline[f'passkey@{n}']:.3f}" if f"passkey@{n}" in baseline else ""
        line["paper ppl"] = ""
        tables[key] = pd.DataFrame([*lines, line])
    return tables


def claim_cells(records: list[dict[str, Any]], scale: float) -> dict[str, Cell]:
    """Per row: minus the NLL at the target context of each seed, and the unigram baseline's, times `scale`."""
    by_row: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_row[r["config"]["paper_row"]].append(r)
    cells = {}
    for row, runs in by_row.items():
        target = runs[0]["long_context"]["target_context"]
        base = (runs[0].get("trivial_baseline") or {}).get(f"nll@{target}")
        cells[row] = Cell(tuple(-scale * r["best_metrics"][f"nll@{target}"] for r in runs),
                          None if base is None else -scale * base)
    return cells


def extends_past_pretraining(records: list[dict[str, Any]]) -> bool | None:
    """Whether the runs train past the context their model was pre-trained at (None: runs made before the model's
    own context was recorded). A declared `original_context` below the model's own only mimics extension: positions
    are compressed, but every length evaluated was seen in pre-training."""
    known = [r["long_context"].get("model_context") for r in records]
    if None in known:
        return None
    return max(r["long_context"]["target_context"] for r in records) > min(known)


def setting_line(records: list[dict[str, Any]]) -> str:
    """What the setting can test, said in the caption."""
    lc = records[0]["long_context"]
    extends = extends_past_pretraining(records)
    if extends:
        return f"pre-trained context {lc['model_context']} extended to {lc['target_context']}"
    if extends is None:
        return (f"declared pre-trained context {lc['original_context']} extended to {lc['target_context']}; the "
                f"model's own pre-trained context is not recorded by these runs, so whether this tests context "
                f"extension is unknown: claims about extension are not judged")
    return (f"declared pre-trained context {lc['original_context']} extended to {lc['target_context']}, but the "
            f"model was pre-trained at {lc['model_context']}: this setting does not extend past pre-training, so it "
            f"tests fine-tuning at {lc['target_context']} tokens with interpolated positions, not context extension; "
            f"claims about extension are not judged")


def verdict_lines(records: list[dict[str, Any]]) -> list[str]:
    claims, rule = paper_data("longlora_claims"), load_rule()
    cells = claim_cells(records, claims["scale"])
    labels = paper_data(PAPER)["rows"]
    judged: list[tuple[str, Verdict | str]] = []
    extends = extends_past_pretraining(records)
    for claim in claims["claims"]:
        a, b = claim["better"], claim["than"]
        if claim.get("extension") and not extends:
            judged.append((claim["text"], "not judged: this setting does not extend past the model's pre-trained "
                                          "context (see the caption)"))
            continue
        if a not in cells or b not in cells:
            missing = ", ".join(x for x in (a, b) if x not in cells)
            judged.append((claim["text"], f"no runs of {missing}"))
            continue
        judged.append((claim["text"], compare(labels[a]["label"], {TASK: cells[a]}, labels[b]["label"],
                                              {TASK: cells[b]}, tolerance_from_gap(claim["max_gap_points"]), rule)))
    final = iter(decide([v for _, v in judged if isinstance(v, Verdict)], rule))  # Holm over the table's claims
    lines = [f"- {text}: **{INCONCLUSIVE}** ({v})" if isinstance(v, str) else
             f"- {text}: **{(d := next(final)).word}** ({d.reason})" for text, v in judged]
    return lines + ["", rule.text(), "Quantity: minus the NLL per token at the target context x "
                    f"{claims['scale']:g} (conf/paper/longlora_claims.yaml)."]


def write(records: list[dict[str, Any]], out: Path) -> list[Path]:
    from repro.analysis.reference import write_table

    written = []
    for (scale, model, target), table in comparison_table(records).items():
        part = [r for r in records if group_key(r) == (scale, model, target)]
        caption = (f"LongLoRA comparison, {scale} scale: {model}, {setting_line(part)} "
                   f"(task=long_context, {part[0]['long_context']['source']} text). Cells: mean ± std over "
                   f"seeds [n]; perplexity with full attention at each length, passkey retrieval accuracy (%). The "
                   f"paper column is empty where conf/paper/longlora.yaml has no verified value.")
        stem = out / (f"longlora_{scale}_{model}_{target}" if len(records) != len(part) else "longlora")
        written += write_table(table, stem, caption, ".2f")
        md = stem.with_suffix(".md")
        md.write_text(md.read_text() + "\nClaims:\n" + "\n".join(verdict_lines(part)) + "\n")
        print(md.read_text())
    return written


def write_comparison(table: PaperTable, frame: pd.DataFrame, out: Path, rule: Rule) -> list[Path]:
    """The comparison from the runs among `frame`; nothing (the committed table kept) without any."""
    records = list(select(frame)["record"]) if not frame.empty else []
    if records:
        return write(records, out)
    return keep_stale(out / f"{NAME}.md") if (out / f"{NAME}.md").exists() else []


def notes(long: pd.DataFrame, tables: Path) -> list[str]:
    """On the report: the caption of longlora.md and the lines under its table (claims and the rule), as written
    from the runs (the CSV holds no per-seed values to judge them again)."""
    md = tables / f"{NAME}.md"
    if not md.is_file():
        return []
    lines = md.read_text(encoding="utf-8").replace("**", "").splitlines()
    after = max((i for i, line in enumerate(lines) if line.startswith("|")), default=len(lines))
    return [lines[0], *(line.removeprefix("- ") for line in lines[after + 1:] if line.strip())]


TABLE = PaperTable(
    name=NAME, title="LongLoRA comparison (context extension)",
    note="Rows of conf/paper/longlora.yaml by the experiment's `paper_row`; the paper's setting differs (Llama-2 7B, "
         "PG-19), so its perplexities are empty where they could not be verified.",
    select=select, long=None, layout=None, notes=notes,
    cell_text="mean ± std over seeds [n]; perplexity with full attention at each length, passkey accuracy (%)",
    paper=PAPER, write=write_comparison)
