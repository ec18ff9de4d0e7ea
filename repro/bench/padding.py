"""`python -m repro.bench.padding [--model minilm-l6] [--tasks glue/sst2,...]`: the share of padding tokens in the
training batches of each task's cpu recipe, shuffled (HF Trainer's default order) vs length-grouped
(`train.group_by_length`, repro.kinds.classification.LengthGroupedSampler), one epoch at seed 0.

Padding is compute spent on nothing: every batch is padded to its longest member. Writes
results/bench/padding.{md,csv}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir

from repro.bench import write_and_show
from repro.config import CONF_DIR
from repro.data.glue import load_task_data
from repro.errors import exit_on_user_error
from repro.kinds.classification import LengthGroupedSampler, padded_fraction, tokenize
from repro.models import load_tokenizer

OFFLINE_GLUE = "glue/sst2,glue/cola,glue/mrpc,glue/rte,glue/stsb"


def task_row(task: str, model: str, data_root: str | None, seed: int) -> dict:
    overrides = [f"task={task}", f"model={model}", "scale=cpu", "method=lora", "init_from_task=null"]
    overrides += [f"data.root={data_root}"] if data_root else []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    data = load_task_data(cfg.task, cfg.data)
    features = tokenize(data.train, load_tokenizer(cfg.model), cfg.data.max_seq_len, cfg.model.get("token_type_ids"))
    batch = cfg.train.batch_size
    shuffled = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed)).tolist()
    grouped = list(LengthGroupedSampler([len(f["input_ids"]) for f in features], batch,
                                        torch.Generator().manual_seed(seed)))
    return {"task": cfg.task.name, "train_examples": len(features), "batch_size": batch,
            "max_seq_len": cfg.data.max_seq_len, "real_tokens": sum(len(f["input_ids"]) for f in features),
            "padded_pct_shuffled": 100 * padded_fraction(features, shuffled, batch),
            "padded_pct_grouped": 100 * padded_fraction(features, grouped, batch)}


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m repro.bench.padding", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--tasks", default=OFFLINE_GLUE)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    table = pd.DataFrame([task_row(t.strip(), args.model, args.data_root, args.seed)
                          for t in args.tasks.split(",") if t.strip()])
    return write_and_show(table, args.out / "padding",
                          f"Padding tokens in one epoch of training batches, {args.model}, each task's cpu recipe "
                          f"(subset, batch size, max length), seed {args.seed}: shuffled order vs length-grouped "
                          f"batches. Command: python -m repro.bench.padding", ".3g")


if __name__ == "__main__":
    exit_on_user_error(main)()
