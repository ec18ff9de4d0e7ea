"""Table generation on synthetic result records: medians, standard deviations and seed counts per cell, missing
cells, the paper's values and differences, the trivial-baseline row, the claims summary with its verdicts and rule,
incomplete runs ignored and counted. The verdict cases themselves: tests/test_verdicts.py."""

from __future__ import annotations

import statistics

import pandas as pd
import pytest

from repro.results import RESULT_FILE, write_json_atomic
from repro.tables import build, main


def _record(root, name, *, row, task, paper_task, seed, value, trainable, variant=None, status="complete",
            metric="accuracy", sweep=None, r=8, targets=("q", "v"), model="minilm-l6", baseline=None, **fields):
    """A synthetic result.json; `fields` set or replace top-level entries (e.g. method, train_examples)."""
    config = {"scale_name": "cpu", "paper_row": row, "task": {"name": task, "paper_key": paper_task},
              "method": {"r": r, "targets": list(targets)}, "sweep_name": sweep}
    if variant:
        config["paper_variant"] = {"name": variant}
    record = {"run_id": name, "status": status, "task": task, "model": model, "method": "lora", "seed": seed,
              "params": {"trainable": trainable, "head": 10, "total": 1000}, "main_metric": metric,
              "best_metrics": {metric: value}, "config": config}
    if baseline is not None:  # runs made before `trivial_baseline` was stored have none
        record["trivial_baseline"] = {metric: baseline, f"validation/{metric}": baseline}
    write_json_atomic(root / name / RESULT_FILE, {**record, **fields})


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for seed, v in enumerate([0.80, 0.84, 0.82]):
        _record(root, f"lora_rte_{seed}", row="roberta_base.lora", task="rte", paper_task="RTE", seed=seed, value=v,
                trainable=300, baseline=0.527)
    for seed, v in enumerate([0.81, 0.83]):
        _record(root, f"ft_rte_{seed}", row="roberta_base.ft", task="rte", paper_task="RTE", seed=seed, value=v,
                trainable=100_000, baseline=0.527)
    _record(root, "lora_official", row="roberta_base.lora", task="rte", paper_task="RTE", seed=0, value=0.5,
            trainable=300, variant="official_scripts")
    _record(root, "broken", row="roberta_base.lora", task="rte", paper_task="RTE", seed=9, value=0.0,
            trainable=300, status="failed")
    (root / "crashed").mkdir()  # no result at all
    for r, v in ((1, 0.6), (8, 0.7)):
        _record(root, f"rank_{r}", row=None, task="rte", paper_task="RTE", seed=0, value=v, trainable=r, r=r,
                targets=("q",), sweep="rank")
    return root


def test_a_cell_says_how_many_of_its_runs_were_still_rising(tmp_path):
    """A run whose last epoch raised its best dev metric by more than the rule's min_delta (0.5 points) is still
    rising; the cell shows the count so a reader sees an unfinished number, and the CSV keeps it."""
    root = tmp_path / "runs"
    curves = {0: [0.70, 0.80], 1: [0.80, 0.79], 2: [0.75, 0.78]}  # seeds 0 and 2 still rising, seed 1 converged
    for seed, curve in curves.items():
        _record(root, f"lora_rte_{seed}", row="roberta_base.lora", task="rte", paper_task="RTE", seed=seed,
                value=max(curve), trainable=300, epochs=[{"epoch": i + 1, "metrics": {"accuracy": v}}
                                                         for i, v in enumerate(curve)], best_epoch=curve.index(max(curve)) + 1)
    build(root, tmp_path / "tables")
    long = pd.read_csv(tmp_path / "tables" / "table2.csv", keep_default_na=False, na_values=[""])
    lora = long[(long.paper_row == "roberta_base.lora") & (long.task == "RTE")].iloc[0]
    assert lora["n_seeds"] == 3 and lora["rising"] == 2
    assert "[3, 2 rising]" in (tmp_path / "tables" / "table2.md").read_text()


def test_table2_cells_medians_std_and_missing(runs, tmp_path, capsys):
    build(runs, tmp_path / "tables")
    assert "ignored 2 incomplete" in capsys.readouterr().out
    long = pd.read_csv(tmp_path / "tables" / "table2.csv", keep_default_na=False, na_values=[""])
    lora = long[(long.paper_row == "roberta_base.lora") & (long.variant.isna()) & (long.task == "RTE")].iloc[0]
    assert lora["median"] == pytest.approx(82.0) and lora["n_seeds"] == 3
    assert lora["std"] == pytest.approx(statistics.stdev([80, 84, 82]))
    assert lora["paper"] == 86.6 and lora["diff"] == pytest.approx(82.0 - 86.6)
    assert lora["baseline"] == pytest.approx(52.7)  # the trivial baseline, x100 like the cells
    assert list(long.columns[:13]) == ["scale", "model", "paper_row", "variant", "task", "median", "std", "n_seeds",
                                       "trainable", "paper", "paper_pm", "paper_params", "diff"]  # columns kept
    official = long[(long.paper_row == "roberta_base.lora") & (long.variant == "official_scripts")]
    assert official[official.task == "RTE"]["median"].iloc[0] == pytest.approx(50.0)  # a row of its own
    mnli = long[(long.paper_row == "roberta_base.lora") & (long.task == "MNLI")].iloc[0]
    assert mnli["n_seeds"] == 0 and pd.isna(mnli["median"])  # missing cell
    assert len(long[long.paper_row == "deberta_xxl.lora"]) == 8  # every paper row listed, missing or not

    md = (tmp_path / "tables" / "table2.md").read_text()
    assert "model `minilm-l6` at scale `cpu`" in md
    assert "82.0±2.0 [3] / 86.6 (-4.6)" in md and "— / 87.5" in md
    baseline_row = next(line for line in md.splitlines() if line.startswith("| trivial baseline"))
    assert "| 52.7 " in baseline_row and "| —  " in baseline_row  # RTE has one; MNLI has no run
    # equal means, but 2-3 seeds: neither side is rejected, and the seeds that would decide it are given
    assert ("inconclusive: roberta_base.lora - roberta_base.ft = +0.0 points on 1 task(s) (RTE +0.0); "
            "non-inferiority with margin 1: p_holds 0.5, p_fails 0.9; ~38 seeds per method would decide it") in md
    assert "holds: roberta_base.lora trains 0.30% of roberta_base.ft" in md  # parameter counts: plain comparison
    assert "Verdict rule v2 (conf/paper/verdict_rule.yaml)" in md and "stratified permutation test" in md
    assert (tmp_path / "tables" / "table2.tex").read_text().count("tabular") >= 2


def test_sweep_table_and_plot(runs, tmp_path):
    written = build(runs, tmp_path / "tables")
    rank = pd.read_csv(tmp_path / "tables" / "rank.csv")
    assert list(rank["r"]) == [1, 8] and list(rank["paper"]) == [90.7, 90.7]
    md = (tmp_path / "tables" / "rank.md").read_text()
    assert "60.0 [1] / 90.7 (-30.7)" in md
    assert (tmp_path / "tables" / "rank.png") in written["rank"]
    assert "| rte    | lora             | q         |" in md  # rows by task, method (lora, rslora, ...) and targets
    # the sweep runs stored no baseline (made before it was): the row says so, and the claim cannot be judged
    assert "| rte    | trivial baseline |           | —" in md and "Trivial baseline missing (—) for rte" in md
    assert "- a very small rank suffices" in md and "not testable: no runs at r=64" in md
    assert "no complete runs" in (tmp_path / "tables" / "targets.md").read_text()


def test_old_runs_without_baseline_show_it_missing_and_cannot_hold(tmp_path):
    root = tmp_path / "runs"
    for seed, (lora, ft) in enumerate([(0.90, 0.80), (0.91, 0.81), (0.92, 0.82)]):
        _record(root, f"lora_{seed}", row="roberta_base.lora", task="sst2", paper_task="SST-2", seed=seed,
                value=lora, trainable=300)
        _record(root, f"ft_{seed}", row="roberta_base.ft", task="sst2", paper_task="SST-2", seed=seed, value=ft,
                trainable=100_000)
    build(root, tmp_path / "tables")
    md = (tmp_path / "tables" / "table2.md").read_text()
    assert "Trivial baseline missing (—) for SST-2: their runs were made before result.json stored" in md
    assert ("inconclusive: roberta_base.lora vs roberta_base.ft: no task counts: SST-2: no trivial baseline stored "
            "for roberta_base.lora, roberta_base.ft (runs made before result.json recorded it)") in md
    long = pd.read_csv(tmp_path / "tables" / "table2.csv")
    assert long["baseline"].isna().all()


def test_empty_runs_folder(tmp_path):
    (tmp_path / "runs").mkdir()
    main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "t")])
    for name in ("table2", "rank", "targets", "lora_variants", "table3"):
        assert "no complete runs" in (tmp_path / "t" / f"{name}.md").read_text()


def test_wandb_logging_with_no_learning_curve_runs(runs, tmp_path, monkeypatch):
    """Tables written for some sweeps and none for others (no learning curve): each written table is logged, the
    curves (nothing written) are skipped, no StopIteration."""
    import sys
    import types

    logged = []

    class Run:
        def __init__(self, group):
            self.group = group

        def log(self, values):
            logged.append((self.group, sorted(values)))

        def finish(self):
            pass

    folders = set()

    def init(**kw):
        folders.add(kw["dir"])
        return Run(kw["group"])

    fake = types.SimpleNamespace(init=init, Table=lambda dataframe: dataframe, Image=lambda path: path)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("REPRO_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("WANDB_DIR", raising=False)
    main(["--runs", str(runs), "--out", str(tmp_path / "t"), "--wandb", "repro-test"])
    assert folders == {tmp_path / "results" / "local"}  # run files stay in the results folder, not the cwd
    groups = [g for g, _ in logged]
    assert "table2" in groups and "rank" in groups and "learning_curve" not in groups
    assert "rank/rank" in dict(logged)["rank"]  # the rank figure (rank.png) beside its table


def test_wandb_offline_tables_have_numeric_columns_and_verdicts(runs, tmp_path, monkeypatch, read_wandb_run):
    """The real wandb, offline: each table's run files read back hold the table with numbers as numbers, and its
    claims with their verdict words."""
    import json

    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    main(["--runs", str(runs), "--out", str(tmp_path / "t"), "--wandb", "repro-test"])
    (run_dir,) = [d for d in (tmp_path / "wandb-home" / "wandb").glob("offline-run-*")
                  if "table2/table" in read_wandb_run(next(d.glob("*.wandb"))).logged_keys()]
    # files/media/table/table2/<key>_<step>_<hash>.table.json for the keys table2/table and table2/claims
    tables = {p.name.split("_")[0]: json.loads(p.read_text())
              for p in (run_dir / "files" / "media" / "table" / "table2").glob("*.table.json")}
    table = tables["table"]
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    lora = next(r for r in rows if r["paper_row"] == "roberta_base.lora" and r["task"] == "RTE" and not r["variant"])
    assert lora["median"] == pytest.approx(82.0) and lora["paper"] == 86.6
    assert lora["diff"] == pytest.approx(82.0 - 86.6) and lora["n_seeds"] == 3 and lora["task"] == "RTE"
    claims = [dict(zip(tables["claims"]["columns"], row)) for row in tables["claims"]["data"]]
    assert {c["verdict"] for c in claims} == {"holds", "inconclusive", ""}  # "" for "not testable: ..."
    assert all(c["text"].startswith(c["verdict"]) for c in claims)
    # figures beside their tables: the rank plot (key rank/rank) as a PNG in the rank table's offline run
    images = [p.relative_to(d / "files" / "media" / "images") for d in run_dir.parent.glob("offline-run-*")
              for p in (d / "files" / "media" / "images").rglob("*.png") if p.read_bytes()[:4] == b"\x89PNG"]
    assert any(p.parts[0] == "rank" and p.name.startswith("rank_") for p in images), images


def test_wandb_report_blocks_show_each_table_its_verdicts_and_figures(runs, tmp_path):
    """The saved report's blocks, built offline (saving needs a login): per table with rows a heading, its verdicts
    as text, and panels over the runs of its W&B group reading the logged table, claims and figures."""
    import wandb_workspaces.reports.v2 as wr

    from repro.tables import all_claims, build, scaled_runs
    from repro.verdicts import load_rule
    from repro.wandb_report import report_blocks

    written = build(runs, tmp_path / "t")
    blocks = report_blocks("repro-test", "someone", written, all_claims(scaled_runs(runs)[0], load_rule()))
    assert isinstance(blocks[0], wr.TableOfContents)
    sections = {blocks[i].text: blocks[i + 1:i + 3] for i, b in enumerate(blocks) if isinstance(b, wr.H2)}
    assert "table2" in sections and "rank" in sections and "learning_curve" not in sections  # no curve runs
    text, grid = sections["table2"]
    assert "holds: roberta_base.lora trains" in text.text and text.text.startswith("- **")
    assert [p.table_name for p in grid.panels if isinstance(p, wr.WeavePanelSummaryTable)] == \
        ["table2/table", "table2/claims"]
    assert grid.runsets[0].project == "repro-test" and "table2" in str(grid.runsets[0].filters)
    rank_media = [p for p in sections["rank"][1].panels if isinstance(p, wr.MediaBrowser)]
    assert rank_media and rank_media[0].media_keys == ["rank/rank"]
    # a report accepts them (its fields are validated; saving, which resolves the project, needs a login)
    assert wr.Report(project="repro-test", entity="someone", title="t", blocks=blocks).blocks == blocks


def test_wandb_report_offline_says_why_and_still_logs(runs, tmp_path, monkeypatch, capsys):
    import sys
    import types

    logged = []
    fake = types.SimpleNamespace(init=lambda **kw: types.SimpleNamespace(log=logged.append, finish=lambda: None),
                                 Table=lambda dataframe: dataframe, Image=lambda path: path)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "offline")
    main(["--runs", str(runs), "--out", str(tmp_path / "t"), "--wandb", "repro-test", "--wandb-report"])
    assert logged and "no W&B report: W&B is offline" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--runs", str(runs), "--out", str(tmp_path / "t"), "--wandb-report"])
    assert exc.value.code == 2 and "--wandb-report needs --wandb PROJECT" in capsys.readouterr().err


def test_import_needs_neither_torch_nor_scipy():
    import subprocess
    import sys

    code = "import sys, repro.tables; print(sorted(m for m in ('torch', 'peft', 'scipy') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


def test_scale_filter_and_cli(runs, tmp_path, capsys):
    main(["--runs", str(runs), "--out", str(tmp_path / "t"), "--scale", "paper"])
    assert "no complete runs" in (tmp_path / "t" / "table2.md").read_text()
    with pytest.raises(SystemExit) as exc:
        main(["--runs", str(tmp_path / "nope")])
    assert exc.value.code == 2


def test_learning_curve_table_and_figure(tmp_path):
    """sweeps/learning_curve.yaml runs: per task its own table (one row per method, a column per training-set size,
    the baseline row first) and figure; a build from another task's runs leaves them as they are, and Table 2's
    target note points a task below its target to its curve's file."""
    root = tmp_path / "runs"
    for method, values in (("lora", {500: [0.60, 0.62, 0.64], 2000: [0.70, 0.72, 0.71]}),
                           ("full_ft", {500: [0.61, 0.63, 0.65], 2000: [0.75, 0.74, 0.76]})):
        for n, seeds in values.items():
            for seed, v in enumerate(seeds):
                name = f"{method}_{n}_{seed}"
                _record(root, name, row=None, task="mrpc", paper_task="MRPC", seed=seed, value=v, trainable=5,
                        sweep="learning_curve", baseline=0.684, method=method, train_examples=n)
    tables = tmp_path / "tables"
    build(root, tables)
    md = (tables / "learning_curve_mrpc.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert "500 examples" in table[0] and "2000 examples" in table[0]
    assert "trivial baseline" in table[2] and "68.4" in table[2]  # the task's baseline row comes first
    lora = next(line for line in table if "| lora" in line)
    assert "62.0±2.0 [3]" in lora and "71.0±1.0 [3]" in lora
    long = pd.read_csv(tables / "learning_curve_mrpc.csv")
    assert len(long) == 4 and set(long["train_examples"]) == {500, 2000}
    assert (tables / "learning_curve_mrpc.png").stat().st_size > 1000
    assert not (tables / "learning_curve.md").exists()

    other = tmp_path / "other_runs"  # only Table 2's MRPC runs, LoRA below its target of 75
    for seed in range(3):
        _record(other, f"lora_{seed}", row="roberta_base.lora", task="mrpc", paper_task="MRPC", seed=seed,
                value=0.74, trainable=5, baseline=0.684)
    build(other, tables)
    assert (tables / "learning_curve_mrpc.md").read_text() == md  # the curve's runs are not here: kept
    table2 = (tables / "table2.md").read_text()
    mrpc = next(line for line in table2.splitlines() if line.startswith("- MRPC >= 75"))
    assert "roberta_base.lora 74.0 [3] below" in mrpc and mrpc.endswith("; learning curve: learning_curve_mrpc.md")


def test_learning_curve_takes_table2_runs_of_the_same_recipe(tmp_path):
    """A Table 2 run with the curve's recipe is the curve's point at Table 2's own size (e.g. SST-2's 6,000
    examples); one at a size the sweep ran, one of another recipe (learning rate) and BitFit (no curve) are not."""
    import json

    root = tmp_path / "runs"

    def add(name, *, row, sweep, method, n, value, seed=0, lr=1e-3):
        _record(root, name, row=row, task="sst2", paper_task="SST-2", seed=seed, value=value, trainable=5,
                sweep=sweep, baseline=0.509)
        record = json.loads((root / name / RESULT_FILE).read_text())
        record["config"]["train"] = {"learning_rate": lr, "epochs": 4}
        write_json_atomic(root / name / RESULT_FILE, {**record, "method": method, "train_examples": n})

    for seed in range(2):
        add(f"curve_{seed}", row=None, sweep="learning_curve", method="lora", n=500, value=0.70 + seed / 100,
            seed=seed)
        add(f"table2_{seed}", row="roberta_base.lora", sweep=None, method="lora", n=6000, value=0.84 + seed / 100,
            seed=seed)
    add("table2_at_500", row="roberta_base.lora", sweep=None, method="lora", n=500, value=0.99)
    add("other_lr", row="roberta_base.lora", sweep=None, method="lora", n=4000, value=0.99, lr=3e-3)
    add("bitfit", row="roberta_base.bitfit", sweep=None, method="bitfit", n=6000, value=0.99)
    build(root, tmp_path / "tables")
    long = pd.read_csv(tmp_path / "tables" / "learning_curve_sst2.csv")
    assert list(zip(long["method"], long["train_examples"], long["from_table2"])) == [
        ("lora", 500, False), ("lora", 6000, True)]
    assert long["median"].tolist() == pytest.approx([70.5, 84.5])  # the 0.99 runs are left out
    md = (tmp_path / "tables" / "learning_curve_sst2.md").read_text()
    assert "Points from Table 2's runs (the same recipe at its own training size): sst2 6000 examples." in md
    assert "train /" not in md and "all eval examples" in md  # the columns give the training-set sizes


def test_cpu_targets_say_met_below_and_too_few_seeds(tmp_path):
    """Under a cpu-scale Table 2: each target row's cell against conf/paper/cpu_targets.yaml, never silently."""
    root = tmp_path / "runs"
    for seed, (lora, ft) in enumerate([(0.84, 0.86), (0.83, 0.87), (0.845, 0.88)]):
        _record(root, f"lora_sst2_{seed}", row="roberta_base.lora", task="sst2", paper_task="SST-2", seed=seed,
                value=lora, trainable=300, baseline=0.509)
        _record(root, f"ft_sst2_{seed}", row="roberta_base.ft", task="sst2", paper_task="SST-2", seed=seed,
                value=ft, trainable=100_000, baseline=0.509)
    _record(root, "lora_rte_0", row="roberta_base.lora", task="rte", paper_task="RTE", seed=0, value=0.60,
            trainable=300, baseline=0.527)
    for seed, mcc in enumerate([0.1995, 0.1993, 0.2198]):  # median 19.95: below 20, though it rounds to 20.0
        _record(root, f"lora_cola_{seed}", row="roberta_base.lora", task="cola", paper_task="CoLA", seed=seed,
                value=mcc, trainable=300, baseline=0.0)
    build(root, tmp_path / "tables")
    md = (tmp_path / "tables" / "table2.md").read_text()
    sst2 = next(line for line in md.splitlines() if line.startswith("- SST-2 >= 85"))
    assert "roberta_base.lora 84.0 [3] below" in sst2 and "roberta_base.ft 87.0 [3] met" in sst2
    assert "no learning curve yet" in sst2
    rte = next(line for line in md.splitlines() if line.startswith("- RTE >= 58"))
    assert "roberta_base.lora 60.0 [1] met (needs 3 seeds)" in rte and "roberta_base.ft no run" in rte
    cola = next(line for line in md.splitlines() if line.startswith("- CoLA >= 20"))
    assert "roberta_base.lora 19.95 [3] below" in cola


def test_all_runs_table_names_each_runs_tables_and_what_differs(runs, tmp_path):
    _record(runs, "plain_run", row=None, task="rte", paper_task="RTE", seed=0, value=0.6, trainable=300)
    build(runs, tmp_path / "tables")
    table = pd.read_csv(tmp_path / "tables" / "all_runs.csv").set_index("run_id")
    assert "broken" not in table.index and len(table) == 9  # complete runs only
    assert table.loc["lora_rte_0", "tables"] == "table2" and table.loc["rank_1", "tables"] == "rank"
    assert table.loc["plain_run", "tables"].startswith("none: no paper row (run without +experiment=...)")
    # among the rte LoRA runs what varies is the row, the sweep, r and targets; never the seed
    assert table.loc["rank_1", "differences"] == ("method.r=1; method.targets=['q']; paper_row=None; "
                                                  "paper_variant.name=None; sweep_name=rank")
    assert "seed" not in " ".join(table["differences"].fillna(""))
    assert table.loc["lora_rte_0", "value"] == pytest.approx(80.0)


def test_budget_header_says_when_a_cap_exceeds_the_task(tmp_path):
    from repro.tables import run_budgets

    frame = pd.DataFrame({"scale": ["cpu"] * 3, "model": ["m"] * 3, "train_examples": [2490, 1000, 1000],
                          "config": [{"task": {"name": "rte"}, "data": {"max_train_samples": n},
                                      "train": {"epochs": 2, "learning_rate": lr}}
                                     for n, lr in ((4000, 1e-3), (1000, 3e-3), (1000, 9e-4))]})
    header = run_budgets(frame)[("cpu", "m")]
    assert "rte: 2490 (all) train" in header and "rte: 1000 train" in header and "4000" not in header
    # each budget names the rates its runs used, lowest first
    assert "1000 train / all eval examples, 2 epochs, batch None, length None, learning rate 0.0009/0.003;" in header
    assert header.count("learning rate") == 2
    assert "(all) train / all eval examples, 2 epochs, batch None, length None, learning rate 0.001)" in header


def test_a_committed_table_without_records_is_kept_and_marked_stale(tmp_path, capsys):
    """A table built earlier from run folders whose runs are not among the records is kept (its numbers are not
    blanked) but says under its title that the records do not back it; a second build changes nothing, and the
    'no complete runs' placeholder is not called stale."""
    from repro.paper_tables.common import STALE_BANNER

    out = tmp_path / "tables"
    out.mkdir()
    (out / "rank.md").write_text("## Table 6 (rank r)\n\n| task | 1 |\n| sst2 | 80.0 |\n", encoding="utf-8")
    (out / "lora_variants.md").write_text("## LoRA and its successors\n\nno complete runs for this table (— everywhere).\n")
    empty = tmp_path / "runs"
    _record(empty, "ft_rte_0", row="roberta_base.ft", task="rte", paper_task="RTE", seed=0, value=0.8, trainable=9)
    build(empty, out)
    first = (out / "rank.md").read_text(encoding="utf-8")
    assert first.splitlines()[:3] == ["## Table 6 (rank r)", "", STALE_BANNER] and "| sst2 | 80.0 |" in first
    assert STALE_BANNER not in (out / "lora_variants.md").read_text(encoding="utf-8")
    build(empty, out)
    assert (out / "rank.md").read_text(encoding="utf-8") == first
    assert "kept" in capsys.readouterr().out
