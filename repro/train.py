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
from repro.data import load_task_data
from repro.data.glue import check_local_files
from repro.errors import exit_on_user_error
from repro.loggers import make_logger
from repro.methods import apply_method
from repro.models import load_model, load_tokenizer
from repro.params import count_parameters
from repro.results import RESULT_FILE, WEIGHTS_DIR, is_complete, read_result, write_json_atomic
from repro.trainer import train_and_evaluate


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

    data = load_task_data(cfg.task, cfg.data)
    tokenizer = load_tokenizer(cfg.model)
    adapted = apply_method(load_model(cfg.model, cfg.task.num_labels), cfg.method, cfg.model)
    counts = count_parameters(adapted.model, list(cfg.model.head))
    print(f"{rid}: {len(data.train)} train examples; trainable {counts.trainable:,} + head {counts.head:,} "
          f"of {counts.total:,} parameters")

    resolved = OmegaConf.to_container(cfg, resolve=True)
    logger = make_logger(cfg, rid, resolved, str(run_dir))
    outcome = train_and_evaluate(
        adapted.model, tokenizer, data, cfg.task, cfg.train,
        max_length=cfg.data.max_seq_len - adapted.reserved_tokens,
        token_type_ids=cfg.model.get("token_type_ids"), seed=cfg.seed, device=device, on_epoch=logger.log_epoch)

    adapted.model.load_state_dict(outcome.best_state, strict=False)  # save the best epoch's weights
    adapted.model.cpu()
    adapted.save(run_dir / WEIGHTS_DIR)
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
        "epochs": outcome.epochs,
        "best_epoch": outcome.best_epoch,
        "best_metrics": outcome.best_metrics,
        "train_examples": len(data.train),
        "eval_examples": {split: len(rows) for split, rows in data.eval.items()},
        "optimizer_steps": outcome.optimizer_steps,
        "wall_time_s": time.perf_counter() - wall_start,
        "train_time_s": outcome.train_time_s,
        "throughput": {"samples_per_s": outcome.train_samples / outcome.train_time_s,
                       "tokens_per_s": outcome.train_tokens / outcome.train_time_s},
        "peak_memory_bytes": provenance.peak_memory_bytes(device),
        "started_at": started.isoformat(),
        "weights": {"dir": WEIGHTS_DIR, "format": "peft" if adapted.is_peft else "safetensors"},
        "config": resolved,
        "identity_config": identity_config(cfg),
        "versions": provenance.package_versions(),
        "git_commit": provenance.git_commit(),
        "hardware": provenance.hardware(device),
    }
    write_json_atomic(run_dir / RESULT_FILE, record)
    logger.finish(record)
    best = ", ".join(f"{k}={v:.4f}" for k, v in outcome.best_metrics.items() if "/" not in k)
    print(f"done {rid}: best epoch {outcome.best_epoch}: {best} ({record['wall_time_s']:.1f}s) -> {run_dir}")
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
