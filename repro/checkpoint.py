"""Mid-run checkpoints so that a killed run resumes where it stopped and ends with the same metrics.

A checkpoint holds the trainable tensors, optimizer and scheduler states, the RNG states, the data order of
the current epoch (the shuffling generator's state at the epoch's start) and the position in it, and the
training record so far. It is written atomically (temporary file + rename), so a kill at any point leaves
either the previous checkpoint or the new one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FILE = "checkpoint.pt"


class Checkpointer:
    def __init__(self, run_dir: Path, every_steps: int):
        self.path = run_dir / CHECKPOINT_FILE
        self.every_steps = every_steps  # optimizer steps between checkpoints; 0 = only at epoch ends

    def due(self, optimizer_steps: int) -> bool:
        return self.every_steps > 0 and optimizer_steps % self.every_steps == 0

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=False)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


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
