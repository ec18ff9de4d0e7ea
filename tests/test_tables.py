"""Table generation on synthetic result records: medians, standard deviations and seed counts per cell, missing
cells, the paper's values and differences, the claims summary, incomplete runs ignored and counted."""

from __future__ import annotations

import statistics

import pandas as pd
import pytest

from repro.results import RESULT_FILE, write_json_atomic
from repro.tables import build, main


def _record(root, name, *, row, task, paper_task, seed, value, trainable, variant=None, status="complete",
            metric="accuracy", sweep=None, r=8, targets=("q", "v"), model="minilm-l6"):
    config = {"scale_name": "cpu", "paper_row": row, "task": {"name": task, "paper_key": paper_task},
              "method": {"r": r, "targets": list(targets)}, "sweep_name": sweep}
    if variant:
        config["paper_variant"] = {"name": variant}
    write_json_atomic(root / name / RESULT_FILE, {
        "run_id": name, "status": status, "task": task, "model": model, "method": "lora", "seed": seed,
        "params": {"trainable": trainable, "head": 10, "total": 1000}, "main_metric": metric,
        "best_metrics": {metric: value}, "config": config})


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for seed, v in enumerate([0.80, 0.84, 0.82]):
        _record(root, f"lora_rte_{seed}", row="roberta_base.lora", task="rte", paper_task="RTE", seed=seed, value=v,
                trainable=300)
    for seed, v in enumerate([0.81, 0.83]):
        _record(root, f"ft_rte_{seed}", row="roberta_base.ft", task="rte", paper_task="RTE", seed=seed, value=v,
                trainable=100_000)
    _record(root, "lora_official", row="roberta_base.lora", task="rte", paper_task="RTE", seed=0, value=0.5,
            trainable=300, variant="official_scripts")
    _record(root, "broken", row="roberta_base.lora", task="rte", paper_task="RTE", seed=9, value=0.0,
            trainable=300, status="failed")
    (root / "crashed").mkdir()  # no result at all
    for r, v in ((1, 0.6), (8, 0.7)):
        _record(root, f"rank_{r}", row=None, task="rte", paper_task="RTE", seed=0, value=v, trainable=r, r=r,
                targets=("q",), sweep="rank")
    return root


def test_table2_cells_medians_std_and_missing(runs, tmp_path, capsys):
    build(runs, tmp_path / "tables")
    assert "ignored 2 incomplete" in capsys.readouterr().out
    long = pd.read_csv(tmp_path / "tables" / "table2.csv", keep_default_na=False, na_values=[""])
    lora = long[(long.paper_row == "roberta_base.lora") & (long.variant.isna()) & (long.task == "RTE")].iloc[0]
    assert lora["median"] == pytest.approx(82.0) and lora["n_seeds"] == 3
    assert lora["std"] == pytest.approx(statistics.stdev([80, 84, 82]))
    assert lora["paper"] == 86.6 and lora["diff"] == pytest.approx(82.0 - 86.6)
    official = long[(long.paper_row == "roberta_base.lora") & (long.variant == "official_scripts")]
    assert official[official.task == "RTE"]["median"].iloc[0] == pytest.approx(50.0)  # a row of its own
    mnli = long[(long.paper_row == "roberta_base.lora") & (long.task == "MNLI")].iloc[0]
    assert mnli["n_seeds"] == 0 and pd.isna(mnli["median"])  # missing cell
    assert len(long[long.paper_row == "deberta_xxl.lora"]) == 8  # every paper row listed, missing or not

    md = (tmp_path / "tables" / "table2.md").read_text()
    assert "model `minilm-l6` at scale `cpu`" in md
    assert "82.0±2.0 [3] / 86.6 (-4.6)" in md and "— / 87.5" in md
    assert "holds: roberta_base.lora 82.0 vs roberta_base.ft 82.0" in md
    assert "trains 0.30% of roberta_base.ft" in md
    assert (tmp_path / "tables" / "table2.tex").read_text().count("tabular") >= 2


def test_sweep_table_and_plot(runs, tmp_path):
    written = build(runs, tmp_path / "tables")
    rank = pd.read_csv(tmp_path / "tables" / "rank.csv")
    assert list(rank["r"]) == [1, 8] and list(rank["paper"]) == [90.7, 90.7]
    md = (tmp_path / "tables" / "rank.md").read_text()
    assert "60.0 [1] / 90.7 (-30.7)" in md
    assert (tmp_path / "tables" / "rank.png") in written["rank"]
    assert "| rte    | lora     | q         |" in md  # rows by task, method (lora, rslora, ...) and targets
    assert "no complete runs" in (tmp_path / "tables" / "targets.md").read_text()


def test_scale_filter_and_cli(runs, tmp_path, capsys):
    main(["--runs", str(runs), "--out", str(tmp_path / "t"), "--scale", "paper"])
    assert "no complete runs" in (tmp_path / "t" / "table2.md").read_text()
    with pytest.raises(SystemExit) as exc:
        main(["--runs", str(tmp_path / "nope")])
    assert exc.value.code == 2
