"""Mid-run checkpoints so that a killed run resumes where it stopped and ends with the same metrics.

A checkpoint holds the trainable tensors, optimizer and scheduler states, the RNG states, the data order of
the current epoch (the shuffling generator's state at the epoch's start) and the position in it, and the
training record so far. It is written atomically (temporary file + rename), so a kill at any point leaves
either the previous checkpoint or the new one.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

CHECKPOINT_FILE = "checkpoint.pt"
PREVIOUS_FILE = "checkpoint.prev.pt"  # the one before, kept in case the newest is corrupt
REQUIRED_KEYS = ("model", "optimizer", "scheduler")
SEGMENTS_KEY = "wall_time_segments_s"  # wall time of each run segment (process) so far


@contextmanager
def ctrl_c_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT, or a sweep watcher's `interrupt_main`) that arrives while a checkpoint is being
    written, and deliver it once the write is done. torch's zip writer turns a KeyboardInterrupt raised inside it
    into `RuntimeError: unexpected pos`, so an interrupt mid-write would make the run fail instead of stopping it
    with its checkpoint. Signal handlers can only change in the main thread; elsewhere nothing is deferred."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            signal.raise_signal(signal.SIGINT)  # now handled as it would have been


class Checkpointer:
    """Saves and loads a run's resume state, keeping the last two checkpoints. A checkpoint that cannot be
    loaded is moved aside (`checkpoint.pt.corrupt-<time>`) with a one-line warning, and the previous one, or
    none (start from the beginning), is used instead. It also times the run's segments: a resumed run's wall time
    is the sum over every process that worked on it."""

    def __init__(self, run_dir: Path, every_steps: int):
        self.path = run_dir / CHECKPOINT_FILE
        self.previous = run_dir / PREVIOUS_FILE
        self.every_steps = every_steps  # optimizer steps between checkpoints; 0 = only at epoch ends
        self.segment_start = time.perf_counter()
        self.earlier_segments_s: list[float] = []  # from the checkpoint this segment resumed from

    def due(self, optimizer_steps: int) -> bool:
        return self.every_steps > 0 and optimizer_steps % self.every_steps == 0

    def segments_s(self) -> list[float]:
        """Wall time of each segment of this run, the current one last (still running)."""
        return [*self.earlier_segments_s, time.perf_counter() - self.segment_start]

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with ctrl_c_deferred():  # a Ctrl-C mid-write stops the run after the renames
            try:
                with open(tmp, "wb") as f:
                    torch.save({**state, SEGMENTS_KEY: self.segments_s()}, f)
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:  # also an interrupt raised by torch.save: no half-written file left
                tmp.unlink(missing_ok=True)
                raise
            if self.path.exists():
                os.replace(self.path, self.previous)
            os.replace(tmp, self.path)

    def load(self, allowed: Sequence[type] = ()) -> dict[str, Any] | None:
        """The newest loadable checkpoint, or None (start from the beginning). Besides tensors and plain containers,
        only the classes in `allowed` (the loop's TrainResult) may be unpickled."""
        candidates = [p for p in (self.path, self.previous) if p.is_file()]
        for i, path in enumerate(candidates):
            try:
                # a crafted checkpoint in a shared results folder cannot run code when a run resumes: it is refused
                # like a corrupt one
                with torch.serialization.safe_globals(list(allowed)):
                    state = torch.load(path, map_location="cpu", weights_only=True)
                if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
                    raise ValueError(f"not a training checkpoint (needs {', '.join(REQUIRED_KEYS)})")
            except Exception as exc:  # torch raises several types for a truncated or foreign file
                fallback = f"trying {candidates[i + 1]}" if i + 1 < len(candidates) else "starting from the beginning"
                reason = (str(exc).strip().splitlines() or [""])[0]
                print(f"warning: corrupt checkpoint {path} ({type(exc).__name__}: {reason}); moved to "
                      f"{self._move_aside(path)}; {fallback}", flush=True)
                continue
            self.earlier_segments_s = list(state.get(SEGMENTS_KEY, []))
            return state
        return None

    @staticmethod
    def _move_aside(path: Path) -> Path:
        aside = path.with_name(f"{path.name}.corrupt-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}")
        try:
            os.replace(path, aside)
        except FileNotFoundError:  # another process of the same run moved it first
            pass
        return aside

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.previous.unlink(missing_ok=True)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                   **progress: Any) -> dict[str, Any]:
    """What both training loops checkpoint: trainable tensors, optimizer, scheduler, torch RNG, plus the loop's
    own progress (epoch, position in it, the epoch's shuffling state, the record so far)."""
    return {"model": trainable_state(model),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(), **progress}


def restore_training_state(saved: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: Any) -> None:
    model.load_state_dict(saved["model"], strict=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
