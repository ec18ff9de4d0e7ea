"""Each run's own log: `train.log` in its folder (`train.rank<k>.log` for the other processes of a torchrun run),
one timestamped line per line the run printed (its start with the resolved config and hardware, progress lines,
each evaluation, the end), without carriage returns. Only the main process also prints to the console."""

from __future__ import annotations

import io
import sys
import time
from contextlib import contextmanager, redirect_stdout
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence, TextIO, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

LOG_FILE = "train.log"


def log_path(run_dir: Path, rank: int = 0) -> Path:
    return run_dir / (LOG_FILE if rank == 0 else f"train.rank{rank}.log")


class TimestampedLines(io.TextIOBase):
    """A text stream that writes each complete line to `file` with a UTC timestamp (a carriage return ends a
    line, as a progress bar's update would), and passes everything on to `console` when there is one."""

    def __init__(self, file: TextIO, console: TextIO | None, every_s: float | None = None):
        self.file, self.console, self.pending = file, console, ""
        self.every_s = every_s  # how often a long evaluation or decode says it is alive (`with_progress`)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:  # progress goes to the log as lines, also when the console is a terminal
        return False

    def write(self, text: str) -> int:
        if self.console is not None:
            self.console.write(text)
        lines = (self.pending + text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self.pending = lines.pop()
        for line in lines:
            if line.strip():
                self.line(line)
        return len(text)

    def line(self, text: str) -> None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.file.write(f"{stamp} {text}\n")
        self.file.flush()

    def flush(self) -> None:
        if self.console is not None:
            self.console.flush()
        self.file.flush()

    def close_pending(self) -> None:
        if self.pending.strip():
            self.line(self.pending)
        self.pending = ""


@contextmanager
def run_log(run_dir: Path, rank: int = 0, main: bool = True, every_s: float | None = None
            ) -> Iterator[TimestampedLines]:
    """Everything the run prints goes, timestamped, to its log file (appended to: a resumed run continues it);
    to the console only on the main process. `every_s` (train.log_every_seconds): the longest silence of an
    evaluation or a decode (`with_progress`), as training's progress lines keep for its steps."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path(run_dir, rank), "a", encoding="utf-8") as file:
        stream = TimestampedLines(file, sys.stdout if main else None, every_s)
        try:
            with redirect_stdout(stream):
                yield stream
        finally:
            stream.close_pending()


def with_progress(items: Sequence[T], desc: str) -> Iterator[T]:
    """An evaluation's or a decode's batches: tqdm's bar on a terminal, and inside a run's log (`run_log` with
    `every_s`) a line at least every `every_s` seconds, so that a long decode in train.log does not look hung."""
    every_s = getattr(sys.stdout, "every_s", None)
    start = last = time.perf_counter()
    for done, item in enumerate(tqdm(items, desc=desc, leave=False, disable=None), 1):
        yield item
        now = time.perf_counter()
        if every_s is not None and now - last >= every_s and done < len(items):
            print(f"{desc}: {done}/{len(items)} batches, {now - start:.0f} s", flush=True)
            last = now
