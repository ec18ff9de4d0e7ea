"""Experiment loggers keyed by `logger=<name>` (none, wandb, csv, tensorboard), more than one at a time with
`logger.also=[csv,tensorboard]`. wandb runs offline unless the user sets `logger.mode=online`; it never needs an
account. csv and tensorboard write into the run's folder (`metrics_steps.csv` / `metrics_epochs.csv`, `tensorboard/`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Callable, Protocol

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
                              name=run_id, id=run_id, config={**filter_keys(cfg), **config}, dir=run_dir, mode=mode,
                              resume="allow",
                              reinit="finish_previous")
        # chart axes: training curves over optimizer steps, epoch values over epochs (not W&B's call counter)
        self.run.define_metric("step")
        self.run.define_metric("epoch")
        for pattern, axis in (("train/*", "step"), ("eval_step/*", "step"), ("train/epoch_loss", "epoch"),
                              ("eval/*", "epoch")):
            self.run.define_metric(pattern, step_metric=axis)

    def log_step(self, step: int, values: dict[str, float]) -> None:
        """Training curves every `train.log_every_steps` optimizer steps, on the optimizer-step axis."""
        self.run.log({"step": step, **values})

    def log_epoch(self, record: dict[str, Any]) -> None:
        # the epoch mean under its own key: train/loss is the per-step value on the step axis
        self.run.log({"epoch": record["epoch"], **flat_metrics(record)})

    def finish(self, result: dict[str, Any]) -> None:
        self.run.summary.update({"best_epoch": result["best_epoch"], "params/trainable": result["params"]["trainable"],
                                 **{f"best/{k}": v for k, v in result["best_metrics"].items()}})
        self.run.finish()


def filter_keys(cfg: DictConfig) -> dict[str, Any]:
    """What a W&B user filters and groups runs by, as top-level scalars of the run's config (the full config sits
    beside them, nested): task, model and method names, rank, target matrices, seed, scale, precision."""
    targets = cfg.method.get("targets")
    return {"task_name": cfg.task.name, "model_name": cfg.model.name, "method_name": cfg.method.name,
            "r": cfg.method.get("r"), "targets": ",".join(targets) if targets is not None else None,
            "seed": cfg.seed, "scale": cfg.get("scale_name"), "precision": cfg.train.precision}


def flat_metrics(record: dict[str, Any]) -> dict[str, float]:
    """An epoch's values under the keys every logger uses: train/epoch_loss and eval/<metric>."""
    return {"train/epoch_loss": record["train_loss"], **{f"eval/{k}": v for k, v in record["metrics"].items()}}


class CsvLogger:
    """Two CSV files in the run folder, one row per logged step / epoch; a new key adds a column (rewrites the file,
    which is small)."""

    def __init__(self, cfg: DictConfig, run_id: str, config: dict[str, Any], run_dir: str):
        self.steps, self.epochs = Path(run_dir) / "metrics_steps.csv", Path(run_dir) / "metrics_epochs.csv"
        self.rows: dict[Path, list[dict[str, Any]]] = {self.steps: [], self.epochs: []}

    def _append(self, path: Path, row: dict[str, Any]) -> None:
        rows = self.rows[path]
        rows.append(row)
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    def log_step(self, step: int, values: dict[str, float]) -> None:
        self._append(self.steps, {"step": step, **values})

    def log_epoch(self, record: dict[str, Any]) -> None:
        self._append(self.epochs, {"epoch": record["epoch"], **flat_metrics(record)})

    def finish(self, result: dict[str, Any]) -> None:
        pass


class TensorBoardLogger:
    """TensorBoard event files under `<run folder>/tensorboard` (tensorboardX: no TensorFlow, no tensorboard server
    needed to write; `tensorboard --logdir results/runs` shows every run)."""

    def __init__(self, cfg: DictConfig, run_id: str, config: dict[str, Any], run_dir: str):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            from repro.errors import ConfigError

            raise ConfigError("logger tensorboard needs tensorboardX: pip install 'repro-lora[tensorboard]'") from None
        self.writer = SummaryWriter(logdir=str(Path(run_dir) / "tensorboard"))
        self.writer.add_text("config", f"```\n{config}\n```")

    def log_step(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def log_epoch(self, record: dict[str, Any]) -> None:
        for key, value in flat_metrics(record).items():
            self.writer.add_scalar(key, value, record["epoch"])

    def finish(self, result: dict[str, Any]) -> None:
        for key, value in result["best_metrics"].items():
            self.writer.add_scalar(f"best/{key}", value, result["best_epoch"])
        self.writer.close()


class Loggers:
    """Several loggers as one."""

    def __init__(self, loggers: list[Logger]):
        self.loggers = loggers

    def log_step(self, step: int, values: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log_step(step, values)

    def log_epoch(self, record: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_epoch(record)

    def finish(self, result: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.finish(result)


LOGGERS: dict[str, Callable[..., Logger]] = {"none": lambda *args: NoLogger(), "wandb": WandbLogger, "csv": CsvLogger,
                                             "tensorboard": TensorBoardLogger}


def with_wandb_defaults(cfg: DictConfig) -> DictConfig:
    """A copy of the run's config whose `logger` has conf/logger/wandb.yaml's keys (project, group, mode) where the
    configured logger has none: for a wandb in `logger.also` beside csv or tensorboard."""
    from omegaconf import OmegaConf, open_dict

    from repro.config import CONF_DIR

    cfg = cfg.copy()
    with open_dict(cfg):  # the run's config is a struct: wandb's keys are added to this copy alone
        cfg.logger = OmegaConf.merge(OmegaConf.load(CONF_DIR / "logger" / "wandb.yaml"), cfg.logger)
    return cfg


def make_logger(cfg: DictConfig, run_id: str, config: dict[str, Any], run_dir: str) -> Logger:
    """The configured logger and those in `logger.also` (a wandb in `also` uses conf/logger/wandb.yaml's
    defaults: project repro-lora, offline)."""
    names = [cfg.logger.name, *(cfg.logger.get("also") or [])]
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        from repro.errors import ConfigError

        raise ConfigError(f"unknown logger {unknown[0]!r}; choose from {', '.join(LOGGERS)}")
    if "wandb" in names:
        cfg = with_wandb_defaults(cfg)
    loggers = [LOGGERS[name](cfg, run_id, config, run_dir) for name in dict.fromkeys(names) if name != "none"]
    return loggers[0] if len(loggers) == 1 else Loggers(loggers) if loggers else NoLogger()
