"""A saved W&B report of the reproduction (`python -m repro.tables --wandb PROJECT --wandb-report`): one section per
paper table with its verdicts, the table as `repro.tables.log_to_wandb` logged it (`<name>/table`, `<name>/claims`)
and its figures (`<name>/<figure>`), read from the runs of the table's group.

Optional: it needs the `wandb-workspaces` package (`pip install 'repro-lora[wandb-report]'`) and an online W&B
login (WANDB_MODE=online); without either, the tables are still logged and one line says why no report was made.
The blocks are built without the network (`report_blocks`), so what a report holds is tested offline."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from repro.paper_tables.spec import Claims

REPORT_TITLE = "repro-lora: the LoRA paper's tables and verdicts, reproduced"
REPORT_DESCRIPTION = ("Every paper table rebuilt from run records, each reproduced number beside the paper's, and "
                      "each claim judged holds / fails / inconclusive by the verdict rule (conf/paper/verdict_rule.yaml).")
WORKSPACES = "wandb_workspaces"  # the optional package with W&B's reports API


def why_no_report() -> str | None:
    """Why a saved report cannot be made here (None: it can)."""
    if importlib.util.find_spec(WORKSPACES) is None:
        return "the W&B reports API is not installed (pip install 'repro-lora[wandb-report]')"
    if os.environ.get("WANDB_MODE", "offline") != "online":
        return "W&B is offline (a saved report needs WANDB_MODE=online and a login)"
    return None


def verdict_lines(name: str, claims: dict[tuple[str, str, str], Claims]) -> list[str]:
    """Markdown bullets: each claim of table `name` per (scale, model), with its verdicts."""
    lines = []
    for (table, scale, model), section_claims in claims.items():
        if table != name:
            continue
        for text, judged in section_claims:
            lines.append(f"- **{text}** ({scale}, {model}): " + "; ".join(str(v) for v in judged))
    return lines


def report_blocks(project: str, entity: str, written: dict[str, list[Path]],
                  claims: dict[tuple[str, str, str], Claims]) -> list[Any]:
    """The report's blocks: a table of contents, then per table that has rows a heading, its verdicts and a panel
    grid over the runs of its W&B group (the table, its claims, its figures)."""
    import wandb_workspaces.reports.v2 as wr

    blocks: list[Any] = [wr.TableOfContents()]
    for name, paths in written.items():
        if not any(p.suffix == ".csv" for p in paths):
            continue
        figures = [f"{name}/{p.stem}" for p in paths if p.suffix == ".png"]
        panels = [wr.WeavePanelSummaryTable(table_name=f"{name}/table", layout=wr.Layout(w=24, h=12))]
        lines = verdict_lines(name, claims)
        if lines:
            panels.append(wr.WeavePanelSummaryTable(table_name=f"{name}/claims", layout=wr.Layout(w=24, h=8)))
        if figures:
            panels.append(wr.MediaBrowser(media_keys=figures, layout=wr.Layout(w=24, h=12)))
        runset = wr.Runset(entity=entity, project=project, name=name, filters=f"Group = '{name}'")
        blocks += [wr.H2(text=name), wr.MarkdownBlock(text="\n".join(lines) or "No claim is judged on this table."),
                   wr.PanelGrid(runsets=[runset], panels=panels)]
    return blocks


def save_report(project: str, written: dict[str, list[Path]], claims: dict[tuple[str, str, str], Claims],
                entity: str | None = None) -> str:
    """Create the saved report online; returns its URL."""
    import wandb_workspaces.reports.v2 as wr

    kwargs = {"entity": entity} if entity else {}  # default: the logged-in user's entity
    report = wr.Report(project=project, title=REPORT_TITLE, description=REPORT_DESCRIPTION, width="fluid", **kwargs)
    report.blocks = report_blocks(project, report.entity, written, claims)
    report.save()
    return report.url
