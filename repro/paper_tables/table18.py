"""Table 18 (GPT-2 LoRA rank on E2E): the generation rank sweep (sweeps/gpt2_rank.yaml), one row per rank, Table 3's
metrics and the validation loss, laid out like the generation tables."""

from __future__ import annotations

from dataclasses import replace

from repro.generation.tables import GENERATION_CELL, RANK_SWEEP, generation_notes, rank_sweep_long
from repro.paper_tables.common import in_sweep, label
from repro.paper_tables.generation import LAYOUT
from repro.paper_tables.spec import PaperTable

# the report finds a cell's runs by its row, "r=<rank>"
RANK_LAYOUT = replace(LAYOUT, keyed=lambda runs: runs.assign(row=[f"r={label(r)}" for r in runs["r"]]))

TABLE = PaperTable(
    name="table18", title="Table 18 (GPT-2 LoRA rank, E2E)",
    note="Paper: GPT-2 medium, 26,000 steps; METEOR and ROUGE_L x100 here.", select=in_sweep(RANK_SWEEP),
    long=rank_sweep_long, layout=RANK_LAYOUT, notes=lambda long, tables: generation_notes(long),
    paper="table18_gpt2_rank", cell_text=GENERATION_CELL)
