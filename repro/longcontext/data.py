"""Long text for `task=long_context`, as one token stream per split cut into fixed-length chunks.

Sources (`task.source`, keyed in SOURCES):
- `local`: documents read from files under `data.root` (a JSON-lines field per line), joined in file order. The
  offline copies hold no long documents; the shipped config concatenates SAMSum dialogues (validation split for
  training, test split for evaluation; see conf/task/long_context.yaml for why, and its limits).
- `hub`: documents of a Hugging Face dataset read in streaming mode (PG-19 at paper scale), the first
  `task.hub.max_documents` of each split.
Each document is tokenised without special tokens and followed by the eos token (as LongLoRA's fine-tune.py joins
RedPajama documents), then the stream is cut into non-overlapping chunks of the requested length.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import torch
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from repro.errors import ConfigError, DataError


def _local_documents(task: DictConfig, root: Path | None, split: str) -> Iterator[str]:
    if root is None:
        raise ConfigError(f"task {task.name} with source=local needs data.root (the offline datasets)")
    for spec in task.local.files[split]:
        path = root / spec.path
        if not path.is_file():
            raise DataError(f"missing data file {path} ({task.name} {split})")
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)[spec.field]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DataError(f"{path}:{number}: expected a JSON object with a {spec.field!r} field") from None
                yield str(text)


def _hub_documents(task: DictConfig, root: Path | None, split: str) -> Iterator[str]:
    from datasets import load_dataset

    hub = task.hub
    stream = load_dataset(hub.path, hub.get("name"), split=hub.splits[split], streaming=True)
    for n, row in enumerate(stream):
        if n >= hub.max_documents:
            break
        yield row[hub.column]


SOURCES: dict[str, Callable[[DictConfig, Path | None, str], Iterator[str]]] = {
    "local": _local_documents,
    "hub": _hub_documents,
}


def check_local_files(task: DictConfig, root: str | Path) -> None:
    """Fail before any model is loaded when the data root lacks a file the task reads."""
    if task.source != "local":
        return
    for split, specs in task.local.files.items():
        for spec in specs:
            if not (Path(root) / spec.path).is_file():
                raise DataError(f"missing data file {Path(root) / spec.path} ({task.name} {split})")


def token_stream(task: DictConfig, root: str | Path | None, split: str, tokenizer: PreTrainedTokenizerBase,
                 max_tokens: int | None = None) -> torch.Tensor:
    """The split's documents as one stream of token ids, each document followed by eos; stops after `max_tokens`."""
    try:
        documents = SOURCES[task.source](task, Path(root) if root is not None else None, split)
    except KeyError:
        raise ConfigError(f"task.source must be one of {', '.join(SOURCES)}, got {task.source!r}") from None
    ids: list[int] = []
    for text in documents:
        ids += tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
        if max_tokens is not None and len(ids) >= max_tokens:
            break
    if not ids:
        raise DataError(f"task {task.name}: the {split} split has no text")
    return torch.tensor(ids[:max_tokens] if max_tokens else ids, dtype=torch.long)


def chunks(stream: torch.Tensor, length: int, limit: int | None = None) -> torch.Tensor:
    """Non-overlapping chunks of `length` tokens (the remainder dropped), at most `limit`; shape (n, length)."""
    n = len(stream) // length
    if limit is not None:
        n = min(n, limit)
    if n == 0:
        raise DataError(f"the text has {len(stream)} tokens, fewer than one chunk of {length}")
    return stream[:n * length].view(n, length)
