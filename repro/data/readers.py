"""Readers for the original file formats of the offline copies. Each yields (line number, row) so that a
malformed row is reported with its file and line; rows are dicts keyed by column name, or by column index
for header-less files."""

from __future__ import annotations

import csv
import sys
import random
from pathlib import Path
from typing import Callable, Iterator

from repro.errors import DataError

Row = dict
csv.field_size_limit(sys.maxsize)


def read_tsv_header(path: Path) -> Iterator[tuple[int, Row]]:
    """GLUE TSV with a header line. Quotes are literal text in GLUE files, so no CSV quoting."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file; expected a TSV with a header line")
        for lineno, fields in enumerate(reader, start=2):
            if not fields:
                continue
            if len(fields) != len(header):
                raise DataError(f"{path}:{lineno}: expected {len(header)} tab-separated fields "
                                f"({', '.join(header)}), got {len(fields)}")
            yield lineno, dict(zip(header, fields))


def read_tsv_noheader(path: Path) -> Iterator[tuple[int, Row]]:
    """Header-less TSV (raw CoLA); columns are addressed by index."""
    with open(path, encoding="utf-8", newline="") as f:
        width = None
        for lineno, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not fields:
                continue
            width = width or len(fields)
            if len(fields) != width:
                raise DataError(f"{path}:{lineno}: expected {width} tab-separated fields, got {len(fields)}")
            yield lineno, dict(enumerate(fields))


def read_parquet(path: Path) -> Iterator[tuple[int, Row]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({exc.__class__.__name__})") from exc
    for i, row in enumerate(table.to_pylist(), start=1):
        yield i, row


READERS: dict[str, Callable[[Path], Iterator[tuple[int, Row]]]] = {
    "tsv_header": read_tsv_header,
    "tsv_noheader": read_tsv_noheader,
    "parquet": read_parquet,
}

FORMAT_HELP = {
    "tsv_header": "a GLUE TSV with a header line",
    "tsv_noheader": "a tab-separated file without header",
    "parquet": "a Parquet file",
}


def subsample(rows: list, limit: int | None, seed: int) -> list:
    """A fixed random subset of `limit` rows (all of them when `limit` is None or not smaller)."""
    if limit is None or limit >= len(rows):
        return rows
    return random.Random(seed).sample(rows, limit)
