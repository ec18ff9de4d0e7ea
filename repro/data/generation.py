"""Generation tasks (E2E, WebNLG, DART, SAMSum) from the hub or from the offline copies under `data.root`.

Every source is read into (source text, reference text, metadata) triples. Inputs are linearised as the
paper's code does (microsoft/LoRA examples/NLG/src/format_converting_*.py): E2E keeps the meaning
representation as written (`name : The Vaults | Type : pub | ...`); WebNLG and DART join the triples as
`subject : property : object` with ` | `. Training uses one row per (input, reference) pair; evaluation groups the
references by unique input (first-occurrence order), so each input is decoded once and scored against all of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from omegaconf import DictConfig

from repro.data.readers import subsample
from repro.errors import DataError

E2E_SEPARATOR = "||"


@dataclass
class Pair:
    """One training example: an input and one of its references (`where` names file and line for errors)."""

    source: str
    target: str
    where: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Grouped:
    """One evaluation input with every reference it has."""

    source: str
    references: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationData:
    train: list[Pair]
    eval: dict[str, list[Grouped]]
    train_categories: set[str] = field(default_factory=set)  # WebNLG: the "seen" categories


def linearise_triples(triples: Iterable[tuple[str, str, str]]) -> str:
    """`s : p : o | s : p : o`, the paper's WebNLG/DART input format."""
    return " | ".join(f"{s} : {p} : {o}" for s, p, o in triples)


def group_references(pairs: Iterable[Pair]) -> list[Grouped]:
    """One entry per unique source, references in file order; metadata from the first occurrence."""
    groups: dict[str, Grouped] = {}
    for pair in pairs:
        if pair.source not in groups:
            groups[pair.source] = Grouped(pair.source, [], dict(pair.meta))
        groups[pair.source].references.append(pair.target)
    return list(groups.values())


# --- offline readers: each yields Pair rows with file:line (or file[index]) locations --------------------------

def read_e2e_txt(path: Path) -> Iterator[Pair]:
    """`<meaning representation>||<reference>` per line (the paper's E2E files)."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            source, sep, target = line.partition(E2E_SEPARATOR)
            if not sep or not source.strip() or not target.strip() or E2E_SEPARATOR in target:
                raise DataError(f"{path}:{lineno}: expected '<meaning representation>||<reference text>' "
                                f"(one '||'), got {line[:80]!r}")
            yield Pair(source.strip(), target.strip(), f"{path}:{lineno}")


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def read_webnlg_json(path: Path) -> Iterator[Pair]:
    """The paper's WebNLG JSON: `{"entries": [{"<n>": {category, modifiedtripleset, lexicalisations}}]}`."""
    data = _load_json(path)
    try:
        for index, wrapper in enumerate(data["entries"]):
            (entry,) = wrapper.values()
            triples = [(t["subject"], t["property"], t["object"]) for t in entry["modifiedtripleset"]]
            source = linearise_triples(triples)
            for lex in entry["lexicalisations"]:
                yield Pair(source, lex["lex"].strip(), f"{path}[entries][{index}]", {"category": entry["category"]})
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not in the WebNLG JSON layout ({exc.__class__.__name__}: {exc})") from None


def read_dart_json(path: Path) -> Iterator[Pair]:
    """DART: a JSON list of `{"tripleset": [[s, p, o], ...], "annotations": [{"text"}, ...]}`."""
    data = _load_json(path)
    for index, entry in enumerate(data):
        try:
            source = linearise_triples(tuple(t) for t in entry["tripleset"])
            texts = [a["text"].strip() for a in entry["annotations"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}[{index}]: not a DART entry ({exc.__class__.__name__}: {exc})") from None
        for text in texts:
            yield Pair(source, text, f"{path}[{index}]")


def read_jsonl(path: Path, columns: DictConfig) -> Iterator[Pair]:
    """JSON lines with a source and a target column (SAMSum: context, response)."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                yield Pair(row[columns.source].strip(), row[columns.target].strip(), f"{path}:{lineno}")
            except (json.JSONDecodeError, KeyError, AttributeError) as exc:
                raise DataError(f"{path}:{lineno}: expected a JSON object with {columns.source!r} and "
                                f"{columns.target!r} ({exc.__class__.__name__})") from None


OFFLINE_READERS: dict[str, Callable[[Path, DictConfig], Iterator[Pair]]] = {
    "e2e_txt": lambda path, task: read_e2e_txt(path),
    "webnlg_json": lambda path, task: read_webnlg_json(path),
    "dart_json": lambda path, task: read_dart_json(path),
    "jsonl": lambda path, task: read_jsonl(path, task.local.columns),
}


# --- hub ---------------------------------------------------------------------------------------------------------

def _e2e_hub_mr(mr: str) -> str:
    """tuetschek/e2e_nlg writes `name[The Vaults], eatType[pub]`; the paper's files `name : The Vaults | ...`."""
    parts = [p.strip() for p in mr.split("],") if p.strip()]
    return " | ".join(f"{p.split('[', 1)[0].strip()} : {p.split('[', 1)[1].rstrip(']').strip()}" for p in parts)


HUB_SOURCE_FORMATS: dict[str, Callable[[Any], str]] = {
    "text": lambda v: str(v).strip(),
    "e2e_mr": _e2e_hub_mr,
    "triple_lists": lambda v: linearise_triples(tuple(t) for t in v),
    "triple_strings": lambda v: linearise_triples(tuple(x.strip() for x in t.split("|")) for t in v),
}


def _hub_pairs(task: DictConfig, split: str) -> Iterator[Pair]:
    import datasets

    hub = task.hub
    ds = datasets.load_dataset(hub.path, hub.get("name"), split=hub.splits[split])
    to_source = HUB_SOURCE_FORMATS[hub.source_format]
    for i, row in enumerate(ds):
        where = f"{hub.path}[{split}][{i}]"
        meta = {k: row[v] for k, v in hub.get("meta", {}).items()}
        targets = row[hub.columns.target]
        for target in targets if isinstance(targets, list) else [targets]:
            yield Pair(to_source(row[hub.columns.source]), str(target).strip(), where, meta)


# --- entry point -------------------------------------------------------------------------------------------------

def local_files(task: DictConfig, root: Path, split: str) -> list[Path]:
    files = task.local.files.get(split)
    if not files:
        raise DataError(f"the offline copies have no {task.name} {split} split ({task.local.get('missing_note', '')}); "
                        f"load it from the hub (data.root=null) or choose other splits")
    return [root / spec.path for spec in files]


def check_local_generation_files(task: DictConfig, root: str | Path) -> None:
    """Fail before any model is loaded when the data root lacks a file the task needs."""
    for split in ["train", *task.eval_splits]:
        for path in local_files(task, Path(root), split):
            if not path.is_file():
                raise DataError(f"missing data file {path} ({task.local.format} for {task.name} {split}; "
                                f"see the layout of ../shared/datasets)")


def _pairs(task: DictConfig, root: Path | None, split: str) -> list[Pair]:
    if root is None:
        return list(_hub_pairs(task, split))
    read = OFFLINE_READERS[task.local.format]
    return [pair for path in local_files(task, root, split) for pair in read(path, task)]


def load_generation_data(task: DictConfig, data: DictConfig) -> GenerationData:
    """Train pairs and grouped eval inputs. `data.max_train_samples` subsamples training pairs and
    `data.max_eval_samples` unique eval inputs, with the fixed `data.subset_seed` (same for every seed)."""
    root = Path(data.root) if data.root is not None else None
    if root is not None:
        check_local_generation_files(task, root)
    train_all = _pairs(task, root, "train")
    train = subsample(train_all, data.max_train_samples, data.subset_seed)
    evals = {split: subsample(group_references(_pairs(task, root, split)), data.max_eval_samples, data.subset_seed)
             for split in task.eval_splits}
    categories = {p.meta["category"] for p in train_all if "category" in p.meta}
    return GenerationData(train=train, eval=evals, train_categories=categories)
