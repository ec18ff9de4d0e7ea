"""GLUE tasks from the hub (`nyu-mll/glue`) or from the original files under `data.root`.

Both sources are read into raw rows and pass through one normaliser (`_normalise`), which maps the task's
columns to `text_a`, `text_b` (pair tasks) and `label` (int class, or float score for STS-B).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig

from repro.data.readers import FORMAT_HELP, READERS, subsample
from repro.errors import DataError


@dataclass
class TaskData:
    """Normalised splits: each a list of {"text_a", "text_b"?, "label"} dicts."""

    train: list[dict[str, Any]]
    eval: dict[str, list[dict[str, Any]]]  # split name -> rows (MNLI has matched and mismatched)


def _label(value: Any, task: DictConfig, where: str) -> int | float:
    if task.num_labels == 1:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: label {value!r} is not a number") from None
    names = list(task.label_names)
    if isinstance(value, str) and value in names:
        return names.index(value)
    try:
        label = int(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: label {value!r} is not one of {names}") from None
    if not 0 <= label < task.num_labels:
        raise DataError(f"{where}: label {label} outside [0, {task.num_labels})")
    return label


def _normalise(rows: Iterable[tuple[str, dict]], columns: DictConfig, task: DictConfig) -> list[dict[str, Any]]:
    out = []
    for where, row in rows:
        try:
            example = {"text_a": row[columns.text_a]}
            if "text_b" in columns:
                example["text_b"] = row[columns.text_b]
            raw_label = row[columns.label]
        except KeyError as exc:
            raise DataError(f"{where}: missing column {exc.args[0]!r}") from None
        example["label"] = _label(raw_label, task, where)
        out.append(example)
    return out


def check_local_files(task: DictConfig, root: str | Path) -> None:
    """Fail before any model is loaded when the data root lacks a file the task needs."""
    for split in ["train", *task.eval_splits]:
        for spec in task.local.files[split]:
            path = Path(root) / spec.path
            if not path.is_file():
                raise DataError(f"missing data file {path} (expected {FORMAT_HELP[spec.format]} for "
                                f"{task.name} {split}; see the layout of ../shared/datasets)")


_CHECKED: set[tuple[str, int, int]] = set()  # (path, size, mtime) of files check_local_data found good


def check_local_data(task: DictConfig, root: str | Path) -> None:
    """`check_local_files`, then each file is non-empty, UTF-8 text (TSV) and holds at least one example: bad
    files fail before any model is loaded, naming the file."""
    check_local_files(task, root)
    for split in ["train", *task.eval_splits]:
        for spec in task.local.files[split]:
            path = Path(root) / spec.path
            stat = path.stat()
            if (str(path), stat.st_size, stat.st_mtime_ns) in _CHECKED:  # a sweep checks each file once
                continue
            if stat.st_size == 0:
                raise DataError(f"{path}: empty file; expected {FORMAT_HELP[spec.format]}")
            if spec.format.startswith("tsv"):
                try:
                    path.read_bytes().decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); expected "
                                    f"{FORMAT_HELP[spec.format]}") from None
            if next(iter(READERS[spec.format](path)), None) is None:
                raise DataError(f"{path}: no examples (header only?); {task.name} {split} needs at least one")
            _CHECKED.add((str(path), stat.st_size, stat.st_mtime_ns))


def _local_rows(task: DictConfig, root: Path, split: str) -> Iterable[tuple[str, dict]]:
    for spec in task.local.files[split]:
        path = root / spec.path
        for lineno, row in READERS[spec.format](path):
            yield f"{path}:{lineno}", row


def _hub_rows(task: DictConfig, split: str) -> Iterable[tuple[str, dict]]:
    import datasets

    ds = datasets.load_dataset(task.hub.path, task.hub.name, split=split)
    for i, row in enumerate(ds):
        yield f"{task.hub.path}/{task.hub.name}[{split}][{i}]", row


def load_task_data(task: DictConfig, data: DictConfig, with_train: bool = True) -> TaskData:
    """Read train and eval splits. `data.max_*_samples` take a fixed random subset (`data.subset_seed`), the
    same for every training seed so that seeds differ only in training randomness. Without `with_train` the
    training split is not read (an evaluation without training: reading SST-2's 67k rows costs seconds)."""
    if data.root is not None:
        root = Path(data.root)
        check_local_files(task, root)
        columns = task.local.columns
        read = lambda split: _local_rows(task, root, split)  # noqa: E731
    else:
        columns = task.hub.columns
        read = lambda split: _hub_rows(task, split)  # noqa: E731
    train = subsample(_normalise(read("train"), columns, task), data.max_train_samples, data.subset_seed) \
        if with_train else []
    if with_train and data.get("holdout_fraction"):  # a search scored on training data, never on the dev set
        train, held_out = holdout_split(train, data.holdout_fraction, data.subset_seed)
        return TaskData(train=train, eval={HOLDOUT_SPLIT: held_out})
    evals = {s: subsample(_normalise(read(s), columns, task), data.max_eval_samples, data.subset_seed)
             for s in task.eval_splits}
    return TaskData(train=train, eval=evals)


HOLDOUT_SPLIT = "holdout"


def holdout_split(rows: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list, list]:
    """(the rows to train on, a fixed `fraction` of them held out), the same for every training seed, method and
    learning rate (chosen by `seed`, the subset seed): what a learning-rate search is scored on, so that the dev
    split the tables report is never used to choose a recipe."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_held = max(1, round(fraction * len(rows)))
    held = set(order[:n_held])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]
