"""Tables 3/13/14/18 and the LoRA-variants table on synthetic result records: means over seeds beside the paper,
Table 14's seen/unseen/all columns, rows without a paper row, metrics kept on their printed scales, and the
variants table's memory and step time."""

from __future__ import annotations

import statistics

import pandas as pd
import pytest

from repro.paper import paper_data
from repro.results import RESULT_FILE, write_json_atomic
from repro.tables import build


def _record(root, name, *, task, paper_task, seed, metrics, row=None, method="lora", sweep=None, r=4,
            kind="generation", main="BLEU", peak=2**30, train_time=10.0, steps=20):
    config = {"scale_name": "cpu", "paper_row": row, "sweep_name": sweep,
              "task": {"name": task, "paper_key": paper_task, "kind": kind},
              "method": {"name": method, "r": r, "targets": ["q", "v"]},
              "data": {"max_train_samples": 500, "max_eval_samples": 50}, "train": {"epochs": 2, "batch_size": 8}}
    write_json_atomic(root / name / RESULT_FILE, {
        "run_id": name, "status": "complete", "task": task, "model": "smollm2-135m", "method": method, "seed": seed,
        "params": {"trainable": 230_400, "head": 0, "total": 134_745_408}, "main_metric": main,
        "best_metrics": metrics, "config": config, "peak_memory_bytes": peak, "train_time_s": train_time,
        "optimizer_steps": steps})


E2E = {"BLEU": 60.0, "NIST": 7.5, "METEOR": 40.0, "ROUGE_L": 65.0, "CIDEr": 2.0}


@pytest.fixture
def tables(tmp_path):
    root = tmp_path / "runs"
    for seed, bleu in enumerate([60.0, 64.0, 62.0]):
        _record(root, f"e2e_lora_{seed}", task="e2e", paper_task="E2E", seed=seed, row="gpt2_medium.lora",
                metrics={**E2E, "BLEU": bleu})
    _record(root, "e2e_dora", task="e2e", paper_task="E2E", seed=0, method="dora", metrics=E2E)
    _record(root, "webnlg_lora", task="webnlg", paper_task="WebNLG", seed=0, row="gpt2_medium.lora",
            metrics={"BLEU": 50.0, "BLEU_S": 60.0, "BLEU_U": 40.0, "MET": 0.4, "TER": 0.45})
    for r, loss in ((1, 1.5), (4, 1.3)):
        _record(root, f"rank_{r}", task="e2e", paper_task="E2E", seed=0, sweep="gpt2_rank", r=r,
                metrics={**E2E, "validation/loss": loss})
    for method, acc, peak, time in (("lora", 0.80, 2 * 2**30, 10.0), ("adalora", 0.78, 3 * 2**30, 20.0)):
        for seed in (0, 1):
            _record(root, f"var_{method}_{seed}", task="sst2", paper_task="SST-2", seed=seed, method=method,
                    sweep="lora_variants", kind="classification", main="accuracy",
                    metrics={"accuracy": acc + seed / 100}, peak=peak, train_time=time)
    out = tmp_path / "tables"
    build(root, out)
    return out


def _csv(out, name):
    return pd.read_csv(out / f"{name}.csv", keep_default_na=False, na_values=[""])


def test_table3_means_over_seeds_beside_the_paper(tables):
    long = _csv(tables, "table3")
    bleu = long[(long["row"] == "gpt2_medium.lora") & (long["column"] == "BLEU")].iloc[0]
    paper = paper_data("table3_e2e")["rows"]["gpt2_medium.lora"]["BLEU"]
    assert bleu["mean"] == pytest.approx(62.0) and bleu["n_seeds"] == 3
    assert bleu["std"] == pytest.approx(statistics.stdev([60, 64, 62]))
    assert bleu["paper"] == paper and bleu["diff"] == pytest.approx(62.0 - paper)
    nist = long[(long["row"] == "gpt2_medium.lora") & (long["column"] == "NIST")].iloc[0]
    assert nist["mean"] == pytest.approx(7.5)  # raw, not x100
    missing = long[(long["row"] == "gpt2_large.ft")]
    assert len(missing) == 5 and missing["mean"].isna().all()  # every paper row listed
    dora = long[long["row"] == "dora"]  # a run without a paper row: its own row, no paper value
    assert len(dora) == 5 and dora["paper"].isna().all() and dora["mean"].notna().all()
    md = (tables / "table3.md").read_text()
    assert "62.0±2.0 [3] / 70.4 (-8.4)" in md and "7.50±0.00 [3] / 8.85 (-1.35)" in md
    assert "500 train / 50 eval examples" in md


def test_table14_has_unseen_seen_all_columns(tables):
    long = _csv(tables, "table14")
    cells = long[long["row"] == "gpt2_medium.lora"].set_index("column")
    paper = paper_data("table14_webnlg")["rows"]["gpt2_medium.lora"]["BLEU"]
    assert cells.loc["BLEU_U", "mean"] == 40.0 and cells.loc["BLEU_U", "paper"] == paper["U"]
    assert cells.loc["BLEU_S", "mean"] == 60.0 and cells.loc["BLEU_S", "paper"] == paper["S"]
    assert cells.loc["BLEU", "mean"] == 50.0 and cells.loc["BLEU", "paper"] == paper["A"]
    assert pd.isna(cells.loc["MET_U", "mean"])  # not in the record: missing, not zero


def test_table18_rank_sweep_puts_fractions_on_table3_scale(tables):
    long = _csv(tables, "table18")
    r4 = long[long["row"] == "r=4"].set_index("column")
    paper = paper_data("table18_gpt2_rank")["rows"][4]
    assert r4.loc["val_loss", "mean"] == 1.3 and r4.loc["val_loss", "paper"] == paper["val_loss"]
    assert r4.loc["METEOR", "paper"] == pytest.approx(100 * paper["METEOR"])
    assert r4.loc["NIST", "paper"] == paper["NIST"]
    assert list(long["row"].unique()) == ["r=1", "r=4"]


def test_variants_table_reports_metric_memory_and_step_time(tables):
    long = _csv(tables, "lora_variants").set_index("method")
    assert long.loc["lora", "median"] == pytest.approx(80.5) and long.loc["lora", "n"] == 2
    assert long.loc["adalora", "peak_memory_gib"] == pytest.approx(3.0)
    assert long.loc["adalora", "step_ms"] == pytest.approx(1000 * 20.0 / 20)
    # GLUE and generation runs do not leak into each other's tables
    assert "sst2" not in (tables / "table3.md").read_text()
    assert "smollm2-135m" not in (tables / "table2.md").read_text()
