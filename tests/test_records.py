"""Committed records (repro/records.py): compacting runs into results/records, rebuilding every committed table
from them byte for byte, and the committed tables never overwritten by one's own runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro import records, tables
from repro.results import RESULT_FILE, complete_records, write_json_atomic

REPO = Path(__file__).resolve().parent.parent
COMMITTED_RECORDS = REPO / "results" / "records"
COMMITTED_TABLES = REPO / "results" / "tables"


def _run(root: Path, name: str, *, seed=0, value=0.8, scale="cpu", status="complete", source=None):
    record = {"run_id": name, "status": status, "task": "sst2", "model": "minilm-l6", "method": "lora", "seed": seed,
              "main_metric": "accuracy", "best_metrics": {"accuracy": value}, "best_epoch": 1,
              "epochs": [{"epoch": 1, "metrics": {"accuracy": value}}, {"epoch": 2, "metrics": {"accuracy": 0.5}}],
              "params": {"trainable": 10, "head": 2, "total": 100}, "trivial_baseline": {"accuracy": 0.509},
              "predictions": {"validation/epoch1": "predictions/validation.epoch1.jsonl"},
              "weights": {"dir": "adapter", "format": "peft"},
              "config": {"scale_name": scale, "paper_row": "roberta_base.lora",
                         "task": {"name": "sst2", "paper_key": "SST-2", "kind": "classification"},
                         "method": {"r": 8, "targets": ["q", "v"]}}}
    if source:
        record["source"] = source
    write_json_atomic(root / name / RESULT_FILE, record)


def test_add_compacts_complete_trained_runs_and_replaces_only_changed_ones(tmp_path, capsys):
    runs, to = tmp_path / "runs", tmp_path / "records"
    _run(runs, "a", seed=0)
    _run(runs, "b", seed=1)
    _run(runs, "smoke", scale="smoke")
    _run(runs, "failed", status="failed")
    _run(runs, "imported", source="imported")
    new, replaced = records.add(runs, to, scale="cpu")
    assert sorted(p.name for p in new) == ["a.json", "b.json"] and replaced == []
    body = json.loads((to / "a.json").read_text())
    assert "predictions" not in body and "weights" not in body  # paths into the uncommitted run folder
    assert body["epochs"][1]["metrics"]["accuracy"] == 0.5 and body["best_epoch"] == 1  # convergence stays known
    assert records.add(runs, to, scale="cpu") == ([], [])  # nothing new: nothing written
    _run(runs, "a", seed=0, value=0.9)  # the same configuration run again (another CPU): replaced, and said so
    records.main(["add", "--runs", str(runs), "--to", str(to), "--scale", "cpu"])
    out = capsys.readouterr()
    assert "0 new and 1 replaced record(s)" in out.out and "replaced" in out.err
    assert json.loads((to / "a.json").read_text())["best_metrics"]["accuracy"] == 0.9
    assert [r["run_id"] for _, r in complete_records(to)] == ["a", "b"]


def test_add_after_a_sweep_that_only_reused_records_adds_nothing_and_exits_0(tmp_path, monkeypatch, capsys):
    """`make reproduce-rank` on a clone whose records hold every run trains nothing and makes no runs folder; its
    `records add` (default folder) then adds nothing and succeeds, while a named folder that is missing is an error."""
    monkeypatch.setenv("REPRO_RESULTS", str(tmp_path / "results"))
    records.main(["add", "--scale", "cpu", "--to", str(tmp_path / "records")])
    assert "0 new and 0 replaced record(s)" in capsys.readouterr().out and not (tmp_path / "records").exists()
    with pytest.raises(SystemExit) as exc:
        records.main(["add", "--runs", str(tmp_path / "typo"), "--to", str(tmp_path / "records")])
    assert exc.value.code == 2 and "no runs folder" in capsys.readouterr().err


def test_a_superseded_record_is_not_added_back(tmp_path):
    runs, to = tmp_path / "runs", tmp_path / "records"
    _run(runs, "a")
    _run(runs, "b", seed=1)
    records.add(runs, to)
    (to / records.SUPERSEDED / "old_recipe").mkdir(parents=True)
    (to / "a.json").rename(to / records.SUPERSEDED / "old_recipe" / "a.json")
    assert records.add(runs, to) == ([], []) and not (to / "a.json").exists()


def test_this_machine_fills_in_a_missing_cpu_and_marks_it(tmp_path):
    runs, to = tmp_path / "runs", tmp_path / "records"
    _run(runs, "a")
    records.add(runs, to, this_machine=True)
    hardware = json.loads((to / "a.json").read_text())["hardware"]
    assert hardware["cpu_model"] and hardware["cpu_capability"] and hardware["cpu_filled_in"]
    assert records.add(runs, to) == ([], [])  # added again without the flag: the filled-in CPU stays
    assert json.loads((to / "a.json").read_text())["hardware"] == hardware


def test_tables_from_runs_and_from_their_records_are_identical(tmp_path):
    runs, to = tmp_path / "runs", tmp_path / "records"
    for seed, value in enumerate((0.80, 0.82, 0.81)):
        _run(runs, f"run{seed}", seed=seed, value=value)
    records.add(runs, to)
    tables.build(runs, tmp_path / "from_runs")
    tables.build(to, tmp_path / "from_records")
    names = sorted(p.name for p in (tmp_path / "from_runs").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "from_records").iterdir()) and "table2.md" in names
    for name in names:
        assert (tmp_path / "from_runs" / name).read_bytes() == (tmp_path / "from_records" / name).read_bytes(), name


def test_own_runs_never_overwrite_the_committed_tables(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REPRO_RESULTS", str(tmp_path))
    _run(tmp_path / "runs", "mine")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "table2.md").write_text("committed\n")
    with pytest.raises(SystemExit) as exc:
        tables.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "tables")])
    assert exc.value.code == 2 and "is built from the committed records" in capsys.readouterr().err
    tables.main(["--runs", str(tmp_path / "runs")])  # by default into local/tables
    assert (tmp_path / "local" / "tables" / "table2.md").is_file()
    assert (tmp_path / "tables" / "table2.md").read_text() == "committed\n"


def test_a_table_without_records_keeps_its_committed_file(tmp_path):
    out = tmp_path / "tables"
    out.mkdir()
    (out / "table3.md").write_text("built from runs before records were committed\n")
    _run(tmp_path / "runs", "a")
    tables.build(tmp_path / "runs", out)
    kept = (out / "table3.md").read_text().splitlines()  # kept, and marked as not backed by the records
    assert kept[0] == "built from runs before records were committed" and kept[2].startswith("> **Stale")
    assert "no complete runs for this table" in (out / "table14.md").read_text()  # absent before: placeholder


@pytest.mark.skipif(not COMMITTED_RECORDS.is_dir(), reason="no committed records in this checkout")
def test_committed_tables_rebuild_byte_for_byte_from_committed_records(tmp_path):
    """What `make tables` does on a fresh clone: every table the committed records build equals its committed
    file, so `git status` stays clean."""
    import shutil

    out = tmp_path / "tables"
    shutil.copytree(COMMITTED_TABLES, out)  # as in the checkout: tables without records are kept and read
    written = tables.build(COMMITTED_RECORDS, out)
    rebuilt = [p for paths in written.values() for p in paths]
    assert rebuilt
    for path in rebuilt:
        committed = COMMITTED_TABLES / path.name
        assert committed.is_file(), f"{path.name} is built from the records but not committed"
        if path.suffix == ".png":  # matplotlib's PNG bytes depend on its version; the CSV beside it carries the data
            continue
        assert path.read_bytes() == committed.read_bytes(), f"{path.name} differs from the committed table"


def test_rerun_gives_the_same_number_from_the_record_alone(tmp_path, data_root, capsys, monkeypatch):
    """A committed cell re-run from its record's invocation (nothing else): the same number on the same machine."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "REPRO_RESULTS": str(tmp_path / "first"), "REPRO_DATA_ROOT": str(data_root)}
    subprocess.run([sys.executable, "-m", "repro.train", "model=tiny-bert", "task=glue/sst2", "scale=smoke",
                    "data.max_train_samples=16", "data.max_eval_samples=16", "train.epochs=1", "seed=3"],
                   env=env, check=True, capture_output=True)
    [new], _ = records.add(tmp_path / "first" / "runs", tmp_path / "records")
    monkeypatch.setenv("REPRO_DATA_ROOT", str(data_root))  # the re-run inherits this process's environment
    records.main(["rerun", new.stem, "--to", str(tmp_path / "records"), "--into", str(tmp_path / "again")])
    out = capsys.readouterr().out
    assert f"{new.stem}: committed" in out and "identical" in out
    again = json.loads((tmp_path / "again" / "runs" / new.stem / RESULT_FILE).read_text())
    assert again["best_metrics"] == json.loads(new.read_text())["best_metrics"]
    with pytest.raises(SystemExit) as exc:
        records.main(["rerun", "no_such_run", "--to", str(tmp_path / "records")])
    assert exc.value.code == 2


def test_a_committed_record_is_not_run_again_on_another_machine(compose, data_root, tmp_path, capsys):
    """A sweep continues on a new machine: a run whose record is committed (results/records beside results/runs)
    is skipped without a run folder; force=true runs it."""
    from repro.config import run_id
    from repro.runner import run

    overrides = ("model=tiny-bert", "task=glue/sst2", "scale=smoke", f"data.root={data_root}",
                 "data.max_train_samples=16", "data.max_eval_samples=16", "train.epochs=1")
    cfg = compose(*overrides)
    rid = run_id(cfg)
    committed = {"run_id": rid, "status": "complete", "best_metrics": {"accuracy": 0.123}}
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / f"{rid}.json").write_text(json.dumps(committed))
    assert run(cfg)["best_metrics"] == {"accuracy": 0.123}
    assert f"skip {rid}: complete result exists (committed record" in capsys.readouterr().out
    assert not (tmp_path / "runs" / rid).exists()
    again = run(compose(*overrides, "force=true"))
    assert again["best_metrics"]["accuracy"] != 0.123 and (tmp_path / "runs" / rid / RESULT_FILE).is_file()


def test_invocation_replays_to_the_values_the_run_had():
    """Hydra records `k="${recipe}"` (how make passes a recipe value) as `k="1000"`, which would parse as a string;
    replayed, it takes the run's own value. A quoted override that really is a string, and the rest, stay as they
    were; so do keys the config lacks."""
    record = {"config": {"data": {"max_train_samples": 1000, "root": "/d"}, "train": {"learning_rate": 0.003,
                                                                                      "compile": False},
                         "init_from_task": None, "task": {"name": "stsb"}},
              "invocation": {"config_name": "rank", "config_dir": "sweeps", "overrides": [
                  'data.max_train_samples="1000"', "train.learning_rate='0.003'", 'train.compile="false"',
                  'init_from_task="null"', 'task.name="stsb"', 'data.root="/d"', "seed=3", "method.targets=[q,v]",
                  '+extra.key="7"']}}
    assert records.replayable_overrides(record) == [
        "data.max_train_samples=1000", "train.learning_rate=0.003", "train.compile=false", "init_from_task=null",
        'task.name="stsb"', 'data.root="/d"', "seed=3", "method.targets=[q,v]", '+extra.key="7"']
