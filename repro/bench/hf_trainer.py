"""`python -m repro.bench.hf_trainer [--examples 2000] [--epochs 1] [--threads 1] [--precision bf16]`: the same LoRA
job through the harness and through what a user would otherwise pick, `transformers.Trainer` + peft.

Same everything: the embedded MiniLM (or `--model`), the harness's own peft model (`repro.methods.apply_method`,
so the LoRA config is identical), the same tokenised SST-2 training subset and dev subset, batch size, learning
rate, linear schedule with the same warm-up ratio, weight decay, gradient clipping, epochs, seed, torch threads,
and length-grouped batches on both sides (HF's `train_sampling_strategy="group_by_length"`, the harness's `train.group_by_length`). Each
side is timed on its training loop alone (HF: `train_runtime`; harness: `train_time_s`, evaluation excluded on
both) and scored on the same dev subset. Tokens/s counts real (unpadded) tokens, the same number on both sides.
`--precision bf16` trains both sides under bf16 autocast (the harness's `train.precision=bf16`, the Trainer's
`bf16=True`). Writes results/bench/hf_trainer_<model>[_bf16].{md,csv}.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from repro.bench import hardware_label, write_and_show
from repro.config import CONF_DIR
from repro.data.glue import load_task_data
from repro.errors import ReproError, exit_on_user_error
from repro.kinds.classification import tokenize
from repro.loop import warmup_steps
from repro.methods import apply_method
from repro.metrics import compute_metrics
from repro.models import load_model, load_tokenizer
from repro.runner import run, seed_everything


def job_config(model: str, examples: int, eval_examples: int, epochs: int, threads: int, out: Path,
               data_root: str | None, precision: str = "fp32") -> DictConfig:
    """The harness's config for the job; the HF side reads every setting from it."""
    overrides = [f"model={model}", "task=glue/sst2", "method=lora", "scale=cpu", f"data.max_train_samples={examples}",
                 f"data.max_eval_samples={eval_examples}", f"train.epochs={epochs}", f"train.num_threads={threads}",
                 "train.checkpoint_every_steps=0", "init_from_task=null", f"output_root={out}", "force=true",
                 f"train.precision={precision}"]
    overrides += [f"data.root={data_root}"] if data_root else []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def real_tokens(features: list[dict]) -> int:
    return sum(len(f["input_ids"]) for f in features)


def harness_side(cfg: DictConfig, train_tokens: int) -> dict:
    record = run(cfg)
    metric = cfg.task.main_metric
    return {"side": "harness (repro.loop)", "train_s": record["train_time_s"],
            "tokens_per_s": train_tokens * cfg.train.epochs / record["train_time_s"],
            "optimizer_steps": record["optimizer_steps"], metric: record["epochs"][-1]["metrics"][metric]}


def hf_side(cfg: DictConfig, train: list[dict], dev: list[dict], train_tokens: int) -> dict:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    seed_everything(cfg.seed)  # as repro.train does before building: the same initial LoRA and head
    tokenizer = load_tokenizer(cfg.model)
    adapted = apply_method(load_model(cfg.model, cfg.task.num_labels), cfg.method, cfg.model)
    t = cfg.train
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.eval_batch_size,
            learning_rate=t.learning_rate, num_train_epochs=t.epochs, lr_scheduler_type="linear",
            warmup_steps=warmup_steps(t, math.ceil(len(train) / t.batch_size) * t.epochs), weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm or 0.0,
            seed=cfg.seed, use_cpu=not torch.cuda.is_available(),
            train_sampling_strategy="group_by_length" if t.get("group_by_length") else "random",
            report_to=[], save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True,
            dataloader_num_workers=0, bf16=t.precision == "bf16")
        trainer = Trainer(model=adapted.model, args=args, train_dataset=train, eval_dataset=dev,
                          data_collator=DataCollatorWithPadding(tokenizer))
        stats = trainer.train().metrics
        prediction = trainer.predict(dev)
    preds = np.argmax(prediction.predictions, axis=-1)
    metric = cfg.task.main_metric
    # the Trainer evaluates in its own (length-grouped) order: score against the labels it returns with them
    labels = np.asarray(prediction.label_ids)
    if sorted(labels.tolist()) != sorted(f["labels"] for f in dev):
        raise ReproError("HF Trainer did not predict the dev examples it was given")
    score = compute_metrics(list(cfg.task.metrics), preds, labels)[metric]
    steps = trainer.state.global_step
    return {"side": "HF Trainer + peft", "train_s": stats["train_runtime"],
            "tokens_per_s": train_tokens * cfg.train.epochs / stats["train_runtime"], "optimizer_steps": steps,
            metric: score}


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m repro.bench.hf_trainer", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--examples", type=int, default=2000, help="SST-2 training examples")
    parser.add_argument("--eval-examples", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    parser.add_argument("--data-root", default=None, help="offline datasets (default: REPRO_DATA_ROOT / the hub)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="both sides: the harness's train.precision, the Trainer's bf16 flag (autocast)")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    if min(args.examples, args.eval_examples, args.epochs, args.threads) < 1:
        raise ReproError("--examples, --eval-examples, --epochs and --threads must be positive")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as runs:
        cfg = job_config(args.model, args.examples, args.eval_examples, args.epochs, args.threads, Path(runs),
                         args.data_root, args.precision)
        data = load_task_data(cfg.task, cfg.data)
        tokenizer = load_tokenizer(cfg.model)
        length = cfg.data.max_seq_len
        train = tokenize(data.train, tokenizer, length, cfg.model.get("token_type_ids"))
        dev = tokenize(next(iter(data.eval.values())), tokenizer, length, cfg.model.get("token_type_ids"))
        tokens = real_tokens(train)
        rows = [harness_side(cfg, tokens), hf_side(cfg, train, dev, tokens)]
    table = pd.DataFrame(rows)
    table["tokens_per_s_vs_hf"] = table.tokens_per_s / table.tokens_per_s.iloc[1]
    t = cfg.train
    bf16 = args.precision == "bf16"
    caption = (f"The same LoRA job (r={cfg.method.r}, alpha={cfg.method.alpha}, {','.join(cfg.method.targets)}) on "
               f"{args.model}, SST-2 {len(train)} training / {len(dev)} dev examples, {args.epochs} epoch(s), batch "
               f"{t.batch_size}, lr {t.learning_rate}, linear schedule, warm-up {t.warmup_ratio}, length {length}, "
               f"length-grouped batches, seed {cfg.seed}, {args.precision} on both sides; "
               f"{hardware_label(torch.device('cpu'))}, in one process, "
               f"harness first. train_s: training loop only. {cfg.task.main_metric}: after the last epoch, same dev "
               f"subset. Command: python -m repro.bench.hf_trainer --examples {args.examples} --epochs "
               f"{args.epochs} --threads {args.threads}" + (f" --precision {args.precision}" if bf16 else ""))
    return write_and_show(table, args.out / f"hf_trainer_{args.model}{'_bf16' if bf16 else ''}", caption, ".4g")


if __name__ == "__main__":
    exit_on_user_error(main)()
