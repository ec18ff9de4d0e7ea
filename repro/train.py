"""`python -m repro.train task=glue/sst2 model=minilm-l6 method=lora seed=0`

One run: config -> task data -> model -> method -> train/evaluate -> result record. Runs are stored under
`results/runs/<run_id>/`; a run whose complete result exists is skipped unless `force=true`.
"""

from __future__ import annotations

import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from repro import provenance
from repro.config import CONF_DIR, check_group_overrides, identity_config, run_id, validate
from repro.data.glue import check_local_files
from repro.errors import exit_on_user_error
from repro.loggers import make_logger
from repro.pipelines import PIPELINES
from repro.results import RESULT_FILE, WEIGHTS_DIR, is_complete, read_result, write_json_atomic


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Execute one run (or return the stored result when it is complete and `force` is false)."""
    validate(cfg)
    if cfg.data.root is not None:
        check_local_files(cfg.task, cfg.data.root)
    rid = run_id(cfg)
    run_dir = Path(cfg.output_root) / rid
    if is_complete(run_dir) and not cfg.force:
        record = read_result(run_dir)
        print(f"skip {rid}: complete result exists ({run_dir / RESULT_FILE}); force=true to re-run")
        return record

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    device = resolve_device(cfg.train.device)
    started = datetime.now(timezone.utc)
    wall_start = time.perf_counter()
    seed_everything(cfg.seed)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    logger = make_logger(cfg, rid, resolved, str(run_dir))
    outcome = PIPELINES[cfg.task.kind](cfg, device, logger.log_epoch)
    adapted, counts = outcome.adapted, outcome.counts

    adapted.model.load_state_dict(outcome.train.best_state, strict=False)  # save the best epoch's weights
    adapted.model.cpu()
    adapted.save(run_dir / WEIGHTS_DIR)
    train = outcome.train
    record = {
        "run_id": rid,
        "status": "complete",
        "task": cfg.task.name,
        "model": cfg.model.name,
        "method": cfg.method.name,
        "seed": cfg.seed,
        "scale": cfg.get("scale_name"),
        "params": counts.as_dict(),
        "main_metric": cfg.task.main_metric,
        "epochs": train.epochs,
        "best_epoch": train.best_epoch,
        "best_metrics": train.best_metrics,
        "train_examples": outcome.train_examples,
        "eval_examples": outcome.eval_examples,
        "optimizer_steps": train.optimizer_steps,
        "wall_time_s": time.perf_counter() - wall_start,
        "train_time_s": train.train_time_s,
        "throughput": {"samples_per_s": train.train_samples / train.train_time_s,
                       "tokens_per_s": train.train_tokens / train.train_time_s},
        "peak_memory_bytes": provenance.peak_memory_bytes(device),
        "started_at": started.isoformat(),
        "weights": {"dir": WEIGHTS_DIR, "format": "peft" if adapted.is_peft else "safetensors"},
        "config": resolved,
        "identity_config": identity_config(cfg),
        "versions": provenance.package_versions(),
        "git_commit": provenance.git_commit(),
        "hardware": provenance.hardware(device),
        **outcome.extra,
    }
    write_json_atomic(run_dir / RESULT_FILE, record)
    logger.finish(record)
    best = ", ".join(f"{k}={v:.4f}" for k, v in train.best_metrics.items() if "/" not in k)
    print(f"done {rid}: best epoch {train.best_epoch}: {best} ({record['wall_time_s']:.1f}s) -> {run_dir}")
    return record


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    record = exit_on_user_error(run)(cfg)
    return record["best_metrics"].get(cfg.task.main_metric)


@exit_on_user_error
def main() -> None:
    check_group_overrides(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
