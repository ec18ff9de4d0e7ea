"""`python -m repro.bench.decode RUN_DIR [--inputs 16] [--threads 1]`: batched vs one-at-a-time beam search.

The paper's code decodes one input at a time; `repro.generation.decoding.beam_search` decodes a batch of inputs
(left padding, inputs sorted by length). This benchmark rebuilds a finished generation run (its config and saved
weights), takes the first `--inputs` evaluation inputs of its task, decodes them both ways with the task's beam
settings, checks that the outputs are identical, and reports wall time per input and the speed-up. Written to
`results/bench/decode.{csv,md}`. A freshly loaded base model (no run) often ends at once, which would time nothing:
hence a trained run. Decoding runs in the run's precision (`train.precision`, as the harness decodes it) or the one
`--precision` names: bf16 autocast where the CPU computes bf16 natively is how a cpu-scale run would decode faster.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig

from repro import export
from repro.analysis.reference import write_table
from repro.bench import hardware_label
from repro.data.generation import load_generation_data
from repro.errors import ReproError, exit_on_user_error
from repro.kinds import traits
from repro.methods import Adapted
from repro.generation.decoding import beam_search
from repro.generation.models import load_lm_tokenizer
from repro.kinds.generation import text_format
from repro.precision import resolve_precision


def rebuild_run(run_dir: Path, data_root: str | None) -> tuple[DictConfig, Adapted]:
    """The generation run's config (data root overridden if given) and its adapted model with the saved
    best-epoch weights (`repro.export.rebuild_run`)."""
    cfg, adapted = export.rebuild_run(run_dir)
    if not traits(cfg.task.get("kind")).decodes:
        raise ReproError(f"{run_dir} is a {cfg.task.get('kind')} run; decoding needs a generation run")
    if data_root is not None:
        cfg.data.root = data_root
    return cfg, adapted


def measure(run_dir: Path, n_inputs: int, batch_size: int | None, data_root: str | None,
            precision_name: str | None = None) -> dict:
    cfg, adapted = rebuild_run(run_dir, data_root)
    model = adapted.model
    fmt = text_format(cfg.model, load_lm_tokenizer(cfg.model), model, cfg.data.max_seq_len - adapted.reserved_tokens,
                      cfg.task.recipe.max_target_tokens)
    split = cfg.task.eval_splits[0]
    rows = load_generation_data(cfg.task, cfg.data).eval[split][:n_inputs]
    prompts = [fmt.prompt(g.source) for g in rows]
    batch_size = batch_size or cfg.task.decode.batch_size
    device = torch.device("cpu")
    try:
        precision = resolve_precision(precision_name or cfg.train.get("precision", "fp32"), device)
    except ValueError as exc:
        raise ReproError(f"--precision: {exc}") from None
    timings, outputs = {}, {}
    # one at a time with generate encoding every beam's copy of the prompt: how the harness decoded before
    for name, size, once in (("batched", batch_size, True), ("one_at_a_time", 1, True),
                             ("one_at_a_time_prompt_per_beam", 1, False)):
        start = time.perf_counter()
        with precision.autocast():
            outputs[name] = beam_search(model, fmt.tokenizer, prompts, cfg.task.decode, fmt.end_id, device,
                                        batch_size=size, prefill_once=once)
        timings[name] = time.perf_counter() - start
    same = len({tuple(texts) for texts in outputs.values()}) == 1
    return {"run": run_dir.name, "task": cfg.task.name, "model": cfg.model.name, "method": cfg.method.name,
            "inputs": len(prompts), "batch_size": batch_size, "num_beams": cfg.task.decode.num_beams,
            "precision": precision.name,
            "batched_s": timings["batched"], "one_at_a_time_s": timings["one_at_a_time"],
            "one_at_a_time_prompt_per_beam_s": timings["one_at_a_time_prompt_per_beam"],
            "speedup": timings["one_at_a_time"] / timings["batched"],
            "speedup_vs_prompt_per_beam": timings["one_at_a_time_prompt_per_beam"] / timings["batched"],
            "identical_outputs": same,
            "mean_output_words": sum(len(t.split()) for t in outputs["batched"]) / max(len(prompts), 1),
            "hardware": hardware_label(device)}


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m repro.bench.decode", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a complete generation run (results/runs/<run id>)")
    parser.add_argument("--inputs", type=int, default=16, help="evaluation inputs to decode (default 16)")
    parser.add_argument("--batch", type=int, default=None, help="inputs per batch (default: the task's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--data-root", default=None, help="override the run's data.root")
    parser.add_argument("--precision", default=None, help="fp32, bf16 or auto (default: the run's train.precision)")
    parser.add_argument("--out", type=Path, default=Path("results/bench/decode"), help="output stem")
    args = parser.parse_args(argv)
    if args.inputs < 1:
        raise ReproError("--inputs must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    row = measure(args.run_dir, args.inputs, args.batch, args.data_root, args.precision)
    print(json.dumps(row, indent=1))
    paths = write_table(pd.DataFrame([row]), args.out,
                        f"Beam search, batched vs one input at a time, each prompt encoded once for its beams, and "
                        f"one at a time encoding the prompt per beam as generate does ({row['hardware']}; "
                        f"{row['precision']}); outputs "
                        f"identical: "
                        f"{row['identical_outputs']}. Command: python -m repro.bench.decode <run> "
                        f"--inputs {args.inputs}" + (f" --threads {args.threads}" if args.threads else "")
                        + (f" --precision {args.precision}" if args.precision else ""))
    print("wrote " + ", ".join(map(str, paths)))
    if not row["identical_outputs"]:
        raise SystemExit("batched and one-at-a-time beam search gave different outputs")


if __name__ == "__main__":
    main()
