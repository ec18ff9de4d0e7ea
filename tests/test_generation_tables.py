"""Tables 3/13/14/18 and the LoRA-variants table on synthetic result records: means over seeds beside the paper,
Table 14's seen/unseen/all columns, rows without a paper row, metrics kept on their printed scales, the
variants table's memory and step time, and every table's trivial-baseline row (copy the input, scored from the
outputs a run saved; n/a where that cannot be computed, missing where no outputs were saved)."""

from __future__ import annotations

import json
import statistics

import pandas as pd
import pytest

from repro.generation import metrics as generation_metrics
from repro.generation.tables import BASELINE_ROW
from repro.paper import paper_data
from repro.results import RESULT_FILE, write_json_atomic
from repro.tables import build


def _record(root, name, *, task, paper_task, seed, metrics, row=None, method="lora", sweep=None, r=4,
            kind="generation", main="BLEU", peak=2**30, train_time=10.0, steps=20, outputs=None, baseline=None):
    """`outputs`: lines of the run's saved test outputs (as repro/kinds/generation.py writes them);
    `baseline`: a classification run's stored `trivial_baseline` on its main metric."""
    config = {"scale_name": "cpu", "paper_row": row, "sweep_name": sweep,
              "task": {"name": task, "paper_key": paper_task, "kind": kind},
              "method": {"name": method, "r": r, "targets": ["q", "v"]},
              "data": {"max_train_samples": 500, "max_eval_samples": 50}, "train": {"epochs": 2, "batch_size": 8}}
    if kind == "generation":
        config["task"]["metric_set"] = task
    record = {
        "run_id": name, "status": "complete", "task": task, "model": "smollm2-135m", "method": method, "seed": seed,
        "params": {"trainable": 230_400, "head": 0, "total": 134_745_408}, "main_metric": main,
        "best_metrics": metrics, "config": config, "peak_memory_bytes": peak, "train_time_s": train_time,
        "optimizer_steps": steps}
    if outputs is not None:
        path = root / name / "outputs" / "test.epoch2.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text("".join(json.dumps(line) + "\n" for line in outputs), encoding="utf-8")
        record["outputs"] = {"test/epoch2": "outputs/test.epoch2.jsonl"}
        record["best_outputs"] = {"test": "outputs/test.epoch2.jsonl"}
    if baseline is not None:
        record["trivial_baseline"] = {main: baseline}
    write_json_atomic(root / name / RESULT_FILE, record)


def _baseline_row(md: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(f"| {BASELINE_ROW}"))
    return [cell.strip() for cell in line.strip("|").split("|")]


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
    # these runs saved no outputs: the copy-the-input baseline is missing, and the table says why
    assert _baseline_row(md)[3:] == ["—"] * 5
    assert "Trivial baseline missing (—): no run saved readable outputs." in md
    assert long["baseline"].isna().all() and (long["baseline_runs"] == 0).all()


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


SAMSUM_OUTPUTS = [
    {"source": "Amanda: I baked cookies. Do you want some?\nJerry: Sure!", "hypothesis": "Amanda baked cookies.",
     "references": ["Amanda baked cookies and will bring Jerry some tomorrow."]},
    {"source": "Tom: the train is late again\nAnna: ok, see you at 8", "hypothesis": "Tom is late.",
     "references": ["Tom's train is late; he and Anna will meet at 8.", "Tom will be late."]},
]


def test_samsum_baseline_copies_the_input_from_saved_outputs(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        _record(root, f"samsum_{seed}", task="samsum", paper_task="SAMSum", seed=seed, main="ROUGE_L",
                metrics={"ROUGE_1": 40.0 + seed, "ROUGE_2": 20.0, "ROUGE_L": 35.0}, outputs=SAMSUM_OUTPUTS)
    build(root, tmp_path / "tables")
    expected = generation_metrics.score("samsum", [o["source"] for o in SAMSUM_OUTPUTS],
                                        [o["references"] for o in SAMSUM_OUTPUTS])
    long = _csv(tmp_path / "tables", "samsum").set_index("column")
    for column in ("ROUGE_1", "ROUGE_2", "ROUGE_L"):
        assert long.loc[column, "baseline"] == pytest.approx(expected[column])
        assert long.loc[column, "baseline_runs"] == 2
    md = (tmp_path / "tables" / "samsum.md").read_text()
    assert _baseline_row(md)[3:] == [f"{expected[c]:.1f}" for c in ("ROUGE_1", "ROUGE_2", "ROUGE_L")]
    assert "every test input copied as the output" in md and "No claim is judged on this table." in md


def test_webnlg_baseline_is_na_where_saved_outputs_cannot_give_it(tmp_path, monkeypatch):
    monkeypatch.setattr(generation_metrics, "HAS_JAVA", False)  # METEOR needs Java: n/a without it
    root = tmp_path / "runs"
    outputs = [{"source": "Alan_Bean : occupation : Test_pilot", "hypothesis": "Alan Bean was a test pilot.",
                "references": ["Alan Bean was a test pilot.", "Alan Bean served as a test pilot."],
                "category": "Astronaut"},
               {"source": "Aarhus : leader : Jacob_Bundsgaard", "hypothesis": "Aarhus is led by Jacob Bundsgaard.",
                "references": ["Jacob Bundsgaard is the leader of Aarhus."], "category": "City"}]
    _record(root, "webnlg_lora", task="webnlg", paper_task="WebNLG", seed=0, row="gpt2_medium.lora",
            metrics={"BLEU": 50.0, "BLEU_S": 60.0, "BLEU_U": 40.0, "MET": 0.4, "TER": 0.45}, outputs=outputs)
    with pytest.warns(UserWarning, match="METEOR"):
        build(root, tmp_path / "tables")
        expected = generation_metrics.score("webnlg", [o["source"] for o in outputs],
                                            [o["references"] for o in outputs])
    cells = _csv(tmp_path / "tables", "table14")
    cells = cells[cells["row"] == "gpt2_medium.lora"].set_index("column")
    assert cells.loc["BLEU", "baseline"] == pytest.approx(expected["BLEU"])
    assert cells.loc["TER", "baseline"] == pytest.approx(expected["TER"])
    assert pd.isna(cells.loc["BLEU_U", "baseline"]) and cells.loc["BLEU_U", "baseline_runs"] == 1
    md = (tmp_path / "tables" / "table14.md").read_text()
    header_line = next(line for line in md.splitlines() if line.startswith("| row"))
    header = [c.strip() for c in header_line.strip("|").split("|")]
    row = dict(zip(header, _baseline_row(md)))
    assert row["BLEU_U"] == "n/a" and row["BLEU_S"] == "n/a" and row["MET"] == "n/a"
    assert row["BLEU"] == f"{expected['BLEU']:.1f}" and row["TER"] == f"{expected['TER']:.2f}"
    assert "n/a for BLEU_U, BLEU_S, MET_U, MET_S, MET, TER_U, TER_S: not computable from what runs saved" in md


def test_variants_table_has_a_baseline_row_per_task(tmp_path):
    root = tmp_path / "runs"
    for method in ("lora", "dora"):
        for seed in (0, 1):
            _record(root, f"sst2_{method}_{seed}", task="sst2", paper_task="SST-2", seed=seed, method=method,
                    sweep="lora_variants", kind="classification", main="accuracy",
                    metrics={"accuracy": 0.8 + seed / 100}, baseline=0.509)
            _record(root, f"samsum_{method}_{seed}", task="samsum", paper_task="SAMSum", seed=seed, method=method,
                    sweep="lora_variants", main="ROUGE_L", metrics={"ROUGE_L": 30.0 + seed},
                    outputs=SAMSUM_OUTPUTS)
    build(root, tmp_path / "tables")
    long = _csv(tmp_path / "tables", "lora_variants").set_index(["task", "method"])
    assert long.loc[("sst2", "lora"), "baseline"] == pytest.approx(50.9)
    copy = generation_metrics.score("samsum", [o["source"] for o in SAMSUM_OUTPUTS],
                                    [o["references"] for o in SAMSUM_OUTPUTS])["ROUGE_L"]
    assert long.loc[("samsum", "dora"), "baseline"] == pytest.approx(copy)
    md = (tmp_path / "tables" / "lora_variants.md").read_text()
    assert "| sst2   | trivial baseline | 50.9 " in md and f"| samsum | trivial baseline | {copy:.1f} " in md
    assert "- DoRA improves on LoRA at the same rank (Liu et al. 2024) (tolerance +0.0: the difference must be " \
           "above it):\n  - not testable: no runs of dora r=8 or lora r=8" in md  # these runs are at r=4


def test_successors_claims_are_judged_against_lora_on_their_rows(tmp_path):
    """DoRA above LoRA in every seed on two tasks: holds; no rsLoRA at r=64: not testable; AdaLoRA's row is its
    init_r (LoRA's r): the equal-budget comparison runs, and it is below LoRA here: fails."""
    root = tmp_path / "runs"
    values = {"lora": 0.80, "dora": 0.84, "adalora": 0.70}
    for task, paper_task in (("sst2", "SST-2"), ("stsb", "STS-B")):
        for method, value in values.items():
            for seed in range(4):
                _record(root, f"{task}_{method}_{seed}", task=task, paper_task=paper_task, seed=seed, method=method,
                        sweep="lora_variants", kind="classification", main="accuracy", r=None if method == "adalora"
                        else 8, metrics={"accuracy": value + seed / 1000}, baseline=0.5)
    for path in root.glob("*adalora*/result.json"):  # AdaLoRA's config has init_r, no r
        record = json.loads(path.read_text())
        record["config"]["method"] = {"name": "adalora", "init_r": 8, "target_r": 5, "targets": ["q", "v"]}
        path.write_text(json.dumps(record))
    build(root, tmp_path / "tables")
    md = (tmp_path / "tables" / "lora_variants.md").read_text()
    assert "| sst2   | adalora r=8 " in md and "| stsb   | dora r=8 " in md
    claims = md.split("Claims at this scale:")[1].split("Verdict rule")[0].splitlines()
    verdicts = [line for line in claims if line.startswith("  - ")]
    assert [line.startswith("- " + text) for line, text in zip([c for c in claims if c.startswith("- ")], (
        "DoRA improves on LoRA", "rsLoRA improves on LoRA at a high rank", "AdaLoRA improves on LoRA"))] == [True] * 3
    assert verdicts[0].startswith("  - holds: dora r=8 - lora r=8 = +4.0 points on 2 task(s)")
    assert verdicts[1] == "  - not testable: no runs of rslora r=64 or lora r=64"
    assert verdicts[2].startswith("  - fails: adalora r=8 - lora r=8 = -10.0 points on 2 task(s)")


def test_variants_table_reports_metric_memory_and_step_time(tables):
    long = _csv(tables, "lora_variants").set_index("method")
    assert long.loc["lora", "median"] == pytest.approx(80.5) and long.loc["lora", "n"] == 2
    assert long.loc["adalora", "peak_memory_gib"] == pytest.approx(3.0)
    assert long.loc["adalora", "step_ms"] == pytest.approx(1000 * 20.0 / 20)
    assert long["baseline"].isna().all()  # made before runs stored `trivial_baseline`
    md = (tables / "lora_variants.md").read_text()
    assert "| sst2   | trivial baseline | —" in md and "Trivial baseline missing (—) for sst2" in md
    # GLUE and generation runs do not leak into each other's tables
    assert "sst2" not in (tables / "table3.md").read_text()
    assert "smollm2-135m" not in (tables / "table2.md").read_text()


E2E_OUTPUTS = [
    {"source": "name[The Eagle], eatType[coffee shop], food[French]", "hypothesis": "The Eagle is a French coffee shop.",
     "references": ["The Eagle is a coffee shop serving French food."]},
    {"source": "name[Alimentum], area[city centre]", "hypothesis": "Alimentum is in the city centre.",
     "references": ["Alimentum is located in the city centre.", "In the city centre is Alimentum."]},
]


def test_table3_judges_the_papers_claims_on_bleu(tmp_path):
    """LoRA 1 BLEU below full fine-tuning in every seed (on par within 1: not shown), far above prefix-layer tuning;
    no Adapter^L runs. The copy-the-input baseline comes from the runs' saved outputs."""
    root = tmp_path / "runs"
    bleu = {"gpt2_medium.lora": 60.0, "gpt2_medium.ft": 61.0, "gpt2_medium.prefix_layer": 30.0}
    for row, value in bleu.items():
        for seed in range(4):
            _record(root, f"{row}_{seed}", task="e2e", paper_task="E2E", seed=seed, row=row,
                    method=row.split(".")[1], metrics={**E2E, "BLEU": value + seed / 10}, outputs=E2E_OUTPUTS)
    build(root, tmp_path / "tables")
    md = (tmp_path / "tables" / "table3.md").read_text()
    claims = md.split("Claims at this scale:")[1].split("Verdict rule")[0].splitlines()
    verdicts = [line for line in claims if line.startswith("  - ")]
    assert claims[1].startswith("- LoRA is on par with full fine-tuning (Table 3, GPT-2 M) (BLEU; tolerance -1.0")
    assert verdicts[0].startswith("  - inconclusive: gpt2_medium.lora - gpt2_medium.ft = -1.0 points on 1 task(s)")
    assert verdicts[1] == "  - not testable: no runs of gpt2_medium.adapter_l.0.37M"
    assert verdicts[2].startswith("  - holds: gpt2_medium.lora - gpt2_medium.prefix_layer = +30.0 points")
