"""Generation data: offline layouts, linearisation, reference grouping, malformed input."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from repro.data.generation import (Pair, group_references, linearise_triples, load_generation_data,
                                   read_e2e_txt)
from repro.errors import DataError


def test_group_references_keeps_order_and_all_references():
    pairs = [Pair("a", "1"), Pair("b", "2"), Pair("a", "3")]
    groups = group_references(pairs)
    assert [(g.source, g.references) for g in groups] == [("a", ["1", "3"]), ("b", ["2"])]


def test_triples_linearised_as_the_paper():
    assert linearise_triples([("A", "p", "B"), ("B", "q", "C")]) == "A : p : B | B : q : C"


def test_malformed_e2e_line_names_file_and_line(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("name : A | food : Thai||A serves Thai food.\nname : B | food : none\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{path}:2: expected"):
        list(read_e2e_txt(path))


def _data(compose, task, data_root, **limits):
    cfg = compose(f"task={task}", "model=tiny-gpt2", f"data.root={data_root}")
    return load_generation_data(cfg.task, OmegaConf.merge(cfg.data, limits))


def test_e2e_offline_grouped_by_input(compose, data_root):
    data = _data(compose, "e2e", data_root, max_train_samples=None)
    assert len(data.train) == 42061
    test = data.eval["test"]
    assert len(test) == 630 and sum(len(g.references) for g in test) == 4693
    assert test[0].source.startswith("name : ") and "||" not in test[0].source


def test_webnlg_seen_categories_from_train(compose, data_root):
    data = _data(compose, "webnlg", data_root, max_train_samples=10)
    assert len(data.train_categories) == 10 and "Artist" not in data.train_categories
    test = data.eval["test"]
    assert sum(len(g.references) for g in test) == 4928
    assert all(" : " in g.source and "category" in g.meta for g in test)


def test_dart_and_samsum_missing_train_split_is_a_clear_error(compose, data_root):
    for task in ("dart", "samsum"):
        with pytest.raises(DataError, match="no .* train split"):
            _data(compose, task, data_root)
