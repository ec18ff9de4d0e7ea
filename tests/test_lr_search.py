"""The learning-rate search of the fair-budget protocol (sweeps/lr_search.yaml): every method gets the same
factors of its recipe rate, scored on a fixed part of the training subset held out (never the dev split), and its
runs land in results/tables/lr_search.md only, never in Table 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from repro.data.glue import HOLDOUT_SPLIT, holdout_split, load_task_data
from repro.plan import Composer, expand
from repro.results import RESULT_FILE, write_json_atomic
from repro.tables import build

REPO = Path(__file__).resolve().parent.parent


def test_holdout_split_is_fixed_disjoint_and_sized():
    rows = [{"i": i} for i in range(100)]
    train, held = holdout_split(rows, 0.2, seed=0)
    assert len(held) == 20 and len(train) == 80
    assert {r["i"] for r in train}.isdisjoint({r["i"] for r in held})
    assert holdout_split(rows, 0.2, seed=0) == (train, held)  # every method, rate and training seed: the same
    assert holdout_split(rows, 0.2, seed=1)[1] != held


def test_a_search_run_never_reads_the_dev_split(data_root, compose):
    cfg = compose(f"data.root={data_root}", "task=glue/rte", "data.max_train_samples=500",
                  "data.holdout_fraction=0.2")
    data = load_task_data(cfg.task, cfg.data)
    assert list(data.eval) == [HOLDOUT_SPLIT] and len(data.eval[HOLDOUT_SPLIT]) == 100 and len(data.train) == 400


def test_every_method_gets_the_same_factors_of_its_recipe_rate():
    compose = Composer(REPO / "sweeps" / "lr_search.yaml")
    rates = {}
    for row, method in (("roberta_base_lora", "lora"), ("roberta_base_ft", "full_ft")):
        base = [f"+experiment=table2/{row}", "task=glue/sst2", "scale=cpu", "model=minilm-l6", "init_from_task=null",
                "seed=0"]
        recipe = OmegaConf.to_container(compose(base[:-1] + ["seed=0"]), resolve=True)["cpu_recipe"]["sst2"]
        jobs = expand(compose, base)
        rates[method] = sorted(compose(job).train.learning_rate for job in jobs)
        assert rates[method] == pytest.approx([recipe["learning_rate"][method] * f for f in (0.3, 1, 3)])
        assert {compose(job).data.holdout_fraction for job in jobs} == {0.2}
    assert len(rates["lora"]) == len(rates["full_ft"]) == 3  # the same effort per method


def test_search_runs_form_their_own_table_and_stay_out_of_table2(tmp_path):
    for factor, lr, value in ((0.3, 3e-5, 0.80), (1.0, 1e-4, 0.84), (3.0, 3e-4, 0.50)):
        record = {"run_id": f"ft_{factor}", "status": "complete", "task": "sst2", "model": "minilm-l6",
                  "method": "full_ft", "seed": 0, "main_metric": "accuracy", "best_metrics": {"accuracy": value},
                  "params": {"trainable": 10, "head": 2, "total": 100},
                  "config": {"scale_name": "cpu", "paper_row": "roberta_base.ft", "sweep_name": "lr_search",
                             "lr_factor": factor, "train": {"learning_rate": lr},
                             "task": {"name": "sst2", "paper_key": "SST-2", "kind": "classification"}}}
        write_json_atomic(tmp_path / "runs" / f"ft_{factor}" / RESULT_FILE, record)
    build(tmp_path / "runs", tmp_path / "tables")
    md = (tmp_path / "tables" / "lr_search.md").read_text()
    assert "84.0 [1] (lr 0.0001) *" in md and "80.0 [1] (lr 3e-05) |" in md  # the best factor is marked
    assert "no complete runs for this table" in (tmp_path / "tables" / "table2.md").read_text()
    assert "| lr_search " in (tmp_path / "tables" / "all_runs.md").read_text()


def test_a_search_row_without_a_paper_row_is_labelled_by_its_search_row(tmp_path):
    """The successors' search (sweeps/lr_search_variants.yaml) runs the same method at two ranks: each rank is its own
    row, labelled by the run's `search_row`, so r=8 and r=64 never share a best factor."""
    for rank, factor, value in ((8, 1.0, 0.80), (8, 0.3, 0.70), (64, 1.0, 0.60), (64, 0.3, 0.75)):
        record = {"run_id": f"rslora_{rank}_{factor}", "status": "complete", "task": "sst2", "model": "minilm-l6",
                  "method": "rslora", "seed": 0, "main_metric": "accuracy", "best_metrics": {"accuracy": value},
                  "params": {"trainable": 10, "head": 2, "total": 100},
                  "config": {"scale_name": "cpu", "sweep_name": "lr_search", "lr_factor": factor,
                             "search_row": f"rslora r={rank}, rank budget", "method": {"r": rank},
                             "train": {"learning_rate": 3e-3 * factor},
                             "task": {"name": "sst2", "paper_key": "SST-2", "kind": "classification"}}}
        write_json_atomic(tmp_path / "runs" / record["run_id"] / RESULT_FILE, record)
    build(tmp_path / "runs", tmp_path / "tables")
    rows = {line.split("|")[2].strip(): line for line in
            (tmp_path / "tables" / "lr_search.md").read_text().splitlines() if "rslora r=" in line}
    assert set(rows) == {"rslora r=8, rank budget", "rslora r=64, rank budget"}
    assert "80.0 [1] (lr 0.003) *" in rows["rslora r=8, rank budget"]
    assert "75.0 [1] (lr 0.0009) *" in rows["rslora r=64, rank budget"]


def test_a_search_over_seeds_ranks_factors_by_their_mean(tmp_path):
    """The rank budget's search (sweeps/lr_search_rank.yaml) runs each factor at three seeds: a factor whose median is
    higher but whose one collapsed seed pulls its mean down loses to a factor that is steady at every seed."""
    # x1's median, 84, beats x0.3's 81; its mean, 59.7, does not
    scores = {1.0: (0.84, 0.85, 0.10), 0.3: (0.80, 0.81, 0.82)}
    for factor, values in scores.items():
        for seed, value in enumerate(values):
            record = {"run_id": f"lora_{factor}_{seed}", "status": "complete", "task": "stsb", "model": "minilm-l6",
                      "method": "lora", "seed": seed, "main_metric": "pearson", "best_metrics": {"pearson": value},
                      "params": {"trainable": 10, "head": 2, "total": 100},
                      "config": {"scale_name": "cpu", "sweep_name": "lr_search", "lr_factor": factor,
                                 "search_row": "lora q r=1, rank budget", "method": {"r": 1},
                                 "train": {"learning_rate": 3e-3 * factor},
                                 "task": {"name": "stsb", "paper_key": "STS-B", "kind": "classification"}}}
            write_json_atomic(tmp_path / "runs" / record["run_id"] / RESULT_FILE, record)
    build(tmp_path / "runs", tmp_path / "tables")
    [row] = [line for line in (tmp_path / "tables" / "lr_search.md").read_text().splitlines() if "lora q r=1" in line]
    assert "81.0 [3] (lr 0.0009) *" in row and "59.7 [3] (lr 0.003) |" in row
