"""GLUE data: every offline file loads with the official row counts; bad files fail with file and line."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from repro.config import CONF_DIR, group_choices
from repro.data import load_task_data
from repro.data.glue import check_local_files
from repro.errors import DataError

FULL = OmegaConf.create({"max_train_samples": None, "max_eval_samples": None, "subset_seed": 0})


def task_cfg(name: str):
    return OmegaConf.load(CONF_DIR / "task" / "glue" / f"{name}.yaml")


OFFLINE = ["sst2", "cola", "mrpc", "rte", "stsb"]


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_glue_files_load_with_official_row_counts(data_root, name):
    task = task_cfg(name)
    data = load_task_data(task, OmegaConf.merge(FULL, {"root": str(data_root)}))
    assert len(data.train) == task.official_rows.train
    for split in task.eval_splits:
        assert len(data.eval[split]) == task.official_rows[split]
    for row in data.train[:50] + data.eval[task.eval_splits[0]][:50]:
        assert isinstance(row["text_a"], str) and row["text_a"].strip()
        assert ("text_b" in row) == ("text_b" in task.local.columns)
        if task.num_labels == 1:
            assert 0.0 <= row["label"] <= 5.0
        else:
            assert row["label"] in range(task.num_labels)
    labels = {row["label"] for row in data.train}
    assert len(labels) > 1


def test_official_counts_match_the_datasets_readme(data_root):
    readme = (data_root / "README.md").read_text()
    for name in OFFLINE:
        rows = task_cfg(name).official_rows
        assert f"{rows.train:,}" in readme and f"{rows.validation:,}" in readme, name


def test_every_glue_task_is_configured():
    assert group_choices("task/glue") == sorted(["mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb"])


def test_subset_is_fixed_and_independent_of_training_seed(data_root):
    task = task_cfg("rte")
    cfg = OmegaConf.merge(FULL, {"root": str(data_root), "max_train_samples": 100})
    first, second = load_task_data(task, cfg), load_task_data(task, cfg)
    assert len(first.train) == 100 and first.train == second.train


def test_missing_file_names_path_and_format(tmp_path):
    with pytest.raises(DataError, match=r"missing data file .*glue/sst2/train.tsv \(expected a GLUE TSV"):
        check_local_files(task_cfg("sst2"), tmp_path)


def _write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_malformed_row_reports_file_and_line(tmp_path):
    _write(tmp_path, "glue/sst2/train.tsv", "sentence\tlabel\ngood film\t1\nbroken row without label\n")
    _write(tmp_path, "glue/sst2/dev.tsv", "sentence\tlabel\nfine\t0\n")
    with pytest.raises(DataError, match=r"train.tsv:3: expected 2 tab-separated fields"):
        load_task_data(task_cfg("sst2"), OmegaConf.merge(FULL, {"root": str(tmp_path)}))


def test_bad_label_reports_file_and_line(tmp_path):
    _write(tmp_path, "glue/sst2/train.tsv", "sentence\tlabel\ngood film\t1\nbad film\tpositive\n")
    _write(tmp_path, "glue/sst2/dev.tsv", "sentence\tlabel\nfine\t0\n")
    with pytest.raises(DataError, match=r"train.tsv:3: label 'positive'"):
        load_task_data(task_cfg("sst2"), OmegaConf.merge(FULL, {"root": str(tmp_path)}))


def test_string_labels_map_by_label_names(tmp_path):
    header = "index\tsentence1\tsentence2\tgold_label\n"
    _write(tmp_path, "glue/mnli/train.tsv", header + "0\ta\tb\tneutral\n1\tc\td\tcontradiction\n")
    _write(tmp_path, "glue/mnli/dev_matched.tsv", header + "0\ta\tb\tentailment\n")
    _write(tmp_path, "glue/mnli/dev_mismatched.tsv", header + "0\ta\tb\tneutral\n")
    data = load_task_data(task_cfg("mnli"), OmegaConf.merge(FULL, {"root": str(tmp_path)}))
    assert [r["label"] for r in data.train] == [1, 2]
    assert data.eval["validation_matched"][0] == {"text_a": "a", "text_b": "b", "label": 0}
