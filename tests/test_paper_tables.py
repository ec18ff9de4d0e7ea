"""The registry of paper tables (repro/paper_tables/): every table declares a title, layout and builder in one
place; `repro.tables`, the report and the verdicts summary read the registry and nothing else, so a table registered
here (a toy one, in a test) is built, listed in all_runs and shown on the report without editing another module."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from repro import paper_tables, report, tables
from repro.paper import PAPER_DIR
from repro.paper_tables.common import aggregate, in_sweep, label, task_baseline_notes
from repro.paper_tables.spec import Layout, PaperTable
from repro.paper_tables.sweeps import SWEEP_COLUMNS
from repro.results import RESULT_FILE, write_json_atomic
from repro.verdicts import load_rule


def test_every_table_has_a_title_a_layout_and_a_builder():
    registered = paper_tables.tables()
    assert [t.name for t in registered] == list(paper_tables.REGISTRY)
    assert {"table2", "rank", "targets", "table3", "table13", "table14", "samsum", "table18", "learning_curve",
            "lora_variants", "lr_search", "longlora"} <= set(paper_tables.REGISTRY)
    for table in registered:
        assert table.title and table.note and callable(table.select), table.name
        assert table.write is not None or (table.long is not None and table.layout is not None), table.name
        if table.layout is not None:
            assert callable(table.layout.wide) and table.layout.rows and table.layout.run_keys, table.name
            needed = {*table.layout.rows, table.layout.value, table.layout.n, *(c for c, _ in table.layout.run_keys)}
            assert needed <= {*table.layout.columns, "row"}, table.name  # "row": the generation tables' row label
        if table.paper is not None:
            assert (PAPER_DIR / f"{table.paper}.yaml").is_file(), table.name  # paper numbers live in conf/paper
        assert set(table.after) <= set(paper_tables.REGISTRY), table.name
        assert table.select(pd.DataFrame()).empty


def test_build_order_puts_a_table_after_what_it_reads():
    order = [t.name for t in paper_tables.build_order()]
    assert sorted(order) == sorted(paper_tables.REGISTRY)
    for table in paper_tables.tables():
        assert all(order.index(name) < order.index(table.name) for name in table.after)


def test_report_shows_the_registry_and_no_other_list(tmp_path):
    """An empty tables folder: the page has one section per registered table the report shows, in registry order."""
    (tmp_path / "tables").mkdir()
    sections = []
    original = report.table_section
    try:
        report.table_section = lambda page, table, *args: sections.append(table.name) or original(page, table, *args)
        report.build(None, tmp_path / "tables", tmp_path / "out", pdf=False)
    finally:
        report.table_section = original
    assert sections == [t.name for t in paper_tables.tables() if t.report]


# --- a toy table, registered by a test only -------------------------------------------------------------------

TOY = PaperTable(
    name="toy", title="Toy table (alpha sweep)", note="A table registered by a test.", select=in_sweep("toy"),
    long=lambda runs: (aggregate(runs, ["scale", "model", "task", "method", "targets", "r"])
                       .assign(paper=None, diff=None)[SWEEP_COLUMNS] if not runs.empty
                       else pd.DataFrame(columns=SWEEP_COLUMNS)),
    layout=Layout(rows=("task", "method"),
                  wide=lambda long: {key: part.assign(cell=[f"{m:.1f} [{n}]" for m, n in zip(part["median"], part["n"])])
                                     .pivot_table(index=["task", "method"], columns="r", values="cell",
                                                  aggfunc="first").reset_index()
                                     for key, part in long.groupby(["scale", "model"])},
                  cell=lambda r: ((label(r["task"]), label(r["method"])), label(r["r"])),
                  columns=tuple(SWEEP_COLUMNS),
                  run_keys=tuple((c, c) for c in ("scale", "model", "task", "method", "r"))),
    notes=lambda long, folder: task_baseline_notes(long))


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(paper_tables.REGISTRY, TOY.name, TOY)


def _toy_records(folder, values=(0.6, 0.7)):
    for seed, value in enumerate(values):
        record = {"run_id": f"toy_{seed}", "status": "complete", "task": "rte", "model": "minilm-l6", "method": "lora",
                  "seed": seed, "params": {"trainable": 10, "total": 100}, "main_metric": "accuracy",
                  "best_metrics": {"accuracy": value}, "trivial_baseline": {"accuracy": 0.5},
                  "config": {"scale_name": "cpu", "sweep_name": "toy", "task": {"name": "rte", "paper_key": "RTE"},
                             "method": {"r": 4, "targets": ["q", "v"]}}}
        write_json_atomic(folder / f"toy_{seed}" / RESULT_FILE, record)


def test_a_registered_table_is_built_listed_and_shown(toy_registered, tmp_path):
    _toy_records(tmp_path / "runs")
    written = tables.build(tmp_path / "runs", tmp_path / "tables")
    assert [p.name for p in written["toy"]] == ["toy.md", "toy.csv", "toy.tex"]
    md = (tmp_path / "tables" / "toy.md").read_text()
    assert "Toy table (alpha sweep)" in md and "65.0 [2]" in md and "Trivial baseline row" in md
    listing = pd.read_csv(tmp_path / "tables" / "all_runs.csv")
    assert set(listing["tables"]) == {"toy"}
    report.main(["--runs", str(tmp_path / "runs"), "--tables", str(tmp_path / "tables"), "--out",
                 str(tmp_path / "report"), "--no-pdf"])
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert '<section id="toy">' in page and "Toy table (alpha sweep)" in page


def test_claims_summary_reads_the_registry(toy_registered, tmp_path, monkeypatch):
    """A table with a judge gets its claims in `all_claims` (what `make decide` adds seeds for)."""
    monkeypatch.setitem(paper_tables.REGISTRY, "toy", PaperTable(
        **{**TOY.__dict__, "claims": lambda runs, rule: [("toy claim", [f"holds: {len(runs)} runs"])]}))
    _toy_records(tmp_path / "runs")
    frame, _ = tables.runs_frame(tmp_path / "runs")
    claims = tables.all_claims(frame, load_rule())
    assert claims == {("toy", "cpu", "minilm-l6"): [("toy claim", ["holds: 2 runs"])]}


def test_runs_frame_reads_each_record_once(tmp_path, monkeypatch):
    _toy_records(tmp_path / "runs")
    (tmp_path / "runs" / "crashed").mkdir()
    reads = []
    original = json.loads
    monkeypatch.setattr("repro.results.json.loads", lambda data, *a, **k: reads.append(1) or original(data, *a, **k))
    frame, ignored = tables.runs_frame(tmp_path / "runs")
    assert len(frame) == 2 and ignored == 1 and frame["record"].iloc[0]["run_id"] == "toy_0"
    assert len(reads) == 2  # once per complete record (the folder without a result.json has nothing to read)


def test_longlora_is_built_by_repro_tables_and_shown_on_the_report(tmp_path):
    """The LongLoRA comparison is a registered table: `python -m repro.tables` writes longlora.md from long_context
    runs (its own layout and claims) and the report shows the CSV as it is, with the claims under it."""
    import math

    from repro.paper_tables.longlora import BASELINE_ROW

    for row, nll in (("longlora.lora_qv", 4.0), ("longlora.lora_embed_norm", 3.5)):
        for seed in range(2):
            value = nll + 0.01 * seed
            metrics = {"nll@128": value, "ppl@128": math.exp(value), "passkey@128": 0.0, "neg_nll": -value}
            write_json_atomic(tmp_path / "runs" / f"{row}{seed}" / RESULT_FILE, {
                "run_id": f"{row}{seed}", "status": "complete", "task": "long_context", "model": "tiny-llama",
                "method": "lora", "scale": "cpu", "seed": seed, "main_metric": "neg_nll", "best_metrics": metrics,
                "params": {"trainable": 1000, "total": 10_000},
                "config": {"paper_row": row, "scale_name": "cpu", "task": {"name": "long_context",
                                                                          "kind": "long_context"}},
                "long_context": {"target_context": 128, "original_context": 64, "interpolation_factor": 2.0,
                                 "s2_attn": False, "eval_lengths": [128], "source": "local"},
                "trivial_baseline": {"nll@128": 9.0, "ppl@128": math.exp(9.0), "passkey@128": 2e-5}})
    written = tables.build(tmp_path / "runs", tmp_path / "tables")
    assert [p.name for p in written["longlora"]] == ["longlora.csv", "longlora.md"]
    md = (tmp_path / "tables" / "longlora.md").read_text()
    assert BASELINE_ROW in md and "Claims:" in md
    assert set(pd.read_csv(tmp_path / "tables" / "all_runs.csv")["tables"]) == {"longlora"}
    report.main(["--runs", str(tmp_path / "runs"), "--tables", str(tmp_path / "tables"), "--out",
                 str(tmp_path / "report"), "--no-pdf"])
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    section = page[page.index('<section id="longlora">'):]
    section = section[:section.index("</section>")]
    assert BASELINE_ROW in section and "Claims:" in section and "LoRA (W_q, W_v)" in section
