"""Experiment loggers keyed by `logger=<name>`. wandb runs offline unless the user sets `logger.mode=online`;
it never needs an account."""

from __future__ import annotations

import os
from typing import Any, Protocol

from omegaconf import DictConfig


class Logger(Protocol):
    def log_step(self, step: int, values: dict[str, float]) -> None: ...
    def log_epoch(self, record: dict[str, Any]) -> None: ...
    def finish(self, result: dict[str, Any]) -> None: ...


class NoLogger:
    def log_step(self, step: int, values: dict[str, float]) -> None:
        pass

    def log_epoch(self, record: dict[str, Any]) -> None:
        pass

    def finish(self, result: dict[str, Any]) -> None:
        pass


class WandbLogger:
    def __init__(self, cfg: DictConfig, run_id: str, config: dict[str, Any], run_dir: str):
        import wandb

        mode = cfg.logger.mode
        if mode not in ("offline", "online", "disabled"):
            from repro.errors import ConfigError

            raise ConfigError(f"logger.mode must be offline, online or disabled, got {mode!r}")
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.logger.group,
                              name=run_id, id=run_id, config=config, dir=run_dir, mode=mode, resume="allow",
                              reinit="finish_previous")

    def log_step(self, step: int, values: dict[str, float]) -> None:
        """Training curves every `train.log_every_steps` optimizer steps, on the optimizer-step axis."""
        self.run.log({"step": step, **values})

    def log_epoch(self, record: dict[str, Any]) -> None:
        # the epoch mean under its own key: train/loss is the per-step value on the step axis
        self.run.log({"epoch": record["epoch"], "train/epoch_loss": record["train_loss"],
                      **{f"eval/{k}": v for k, v in record["metrics"].items()}})

    def finish(self, result: dict[str, Any]) -> None:
        self.run.summary.update({"best_epoch": result["best_epoch"], "params/trainable": result["params"]["trainable"],
                                 **{f"best/{k}": v for k, v in result["best_metrics"].items()}})
        self.run.finish()


def make_logger(cfg: DictConfig, run_id: str, config: dict[str, Any], run_dir: str) -> Logger:
    if cfg.logger.name == "wandb":
        return WandbLogger(cfg, run_id, config, run_dir)
    return NoLogger()
