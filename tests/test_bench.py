"""Efficiency benchmarks on tiny configs: latency variants and table, training-cost worker and tables, and the
shipped Table 1 / claims values against the paper reference."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch

from repro.paper import paper_data
from repro.bench import latency
from repro.bench import compile as bench_compile
from repro.bench import train as bench_train
from repro.errors import ReproError

CPU = torch.device("cpu")


# ---------------------------------------------------------------------------- latency


def test_parse_settings():
    assert [s.label for s in latency.parse_settings("32x512, 1x128")] == ["32x512", "1x128"]
    for bad in ("32", "0x5", "ax1"):
        with pytest.raises(ReproError):
            latency.parse_settings(bad)


def test_adapter_bottleneck_hits_the_parameter_budget():
    config = latency.gpt2_config("gpt2-tiny")
    base = latency.GPT2LMHeadModel(config)
    budget = 40_000
    variants = latency.build_variants(base, config, budget, lora_r=2)
    for name in ("adapter_l", "adapter_h"):
        added = variants[name][1]
        per_adapter = 2 * config.n_embd + 1  # one more bottleneck unit
        assert abs(added - budget) <= per_adapter * config.n_layer * 2
    # LoRA on c_attn (d -> 3d): r (d + 3d) per layer
    assert variants["lora_unmerged"][1] == config.n_layer * 2 * (config.n_embd + 3 * config.n_embd)


def test_variants_share_frozen_weights_and_merged_lora_equals_base_function():
    config = latency.gpt2_config("gpt2-tiny")
    torch.manual_seed(0)
    base = latency.GPT2LMHeadModel(config).eval()
    variants = latency.build_variants(base, config, 20_000, lora_r=2)
    wte = base.transformer.wte.weight
    assert variants["adapter_h"][0].transformer.wte.weight is wte
    merged_attn = variants["lora_merged"][0].transformer.h[0].attn.c_attn
    assert merged_attn.weight is not base.transformer.h[0].attn.c_attn.weight
    ids = torch.randint(0, config.vocab_size, (1, 8))
    with torch.no_grad():
        ref = base(input_ids=ids).logits
        # B = 0 at init for LoRA and up = 0 for adapters: every variant computes the base function
        for name, (model, _) in variants.items():
            assert torch.allclose(model.eval()(input_ids=ids).logits, ref, atol=1e-5), name


def test_latency_benchmark_table_is_well_formed():
    table = latency.benchmark("gpt2-tiny", latency.parse_settings("1x128,2x4"), trials=2, warmup=0, lora_r=2,
                              device=CPU)
    assert list(table.variant[:5]) == list(latency.VARIANTS)
    assert len(table) == 2 * len(latency.VARIANTS)
    assert (table.mean_ms > 0).all() and (table.std_ms >= 0).all()
    assert table.loc[table.variant == "base", "overhead_pct"].isna().all()
    # the paper's Table 1 values sit beside the paper's settings only
    paper = paper_data("table1_latency")["settings"][-1]["latency_ms"]
    row = table[(table.setting == "1x128") & (table.variant == "adapter_h")].iloc[0]
    assert row.paper_ms == paper["adapter_h"]["value"] and row.paper_overhead_pct == paper["adapter_h"]["overhead_pct"]
    assert table[table.setting == "2x4"].paper_ms.isna().all()


def test_latency_cli_writes_table(tmp_path):
    written = latency.main(["--arch", "gpt2-tiny", "--settings", "1x8", "--trials", "2", "--warmup", "0",
                            "--out", str(tmp_path)])
    md = (tmp_path / "latency_gpt2-tiny.md").read_text()
    assert "2 trials" in md and "| setting" in md
    assert {p.suffix for p in written} == {".md", ".csv"}
    with pytest.raises(ReproError):
        latency.main(["--arch", "gpt2-huge", "--out", str(tmp_path)])


# ---------------------------------------------------------------------------- training cost


def test_measure_method_counts_optimizer_state_and_checkpoint():
    lora = bench_train.measure_method("tiny-bert", "lora", 2, 16, steps=2, warmup=1, device=CPU)
    full = bench_train.measure_method("tiny-bert", "full_ft", 2, 16, steps=2, warmup=1, device=CPU)
    for rec in (lora, full):
        assert rec["step_ms"] > 0 and rec["tokens_per_s"] > 0
        assert rec["peak_memory_bytes"] >= rec["memory_before_train_bytes"] > 0
    # AdamW keeps two fp32 moments per trainable value (plus a scalar step per tensor)
    trained = full["trainable_params"] + full["head_params"]
    assert 8 * trained <= full["optimizer_state_bytes"] <= 8 * trained + 4 * 1000
    assert lora["optimizer_state_bytes"] < full["optimizer_state_bytes"] / 20
    assert lora["checkpoint_bytes"] < full["checkpoint_bytes"] / 20
    # a frozen base skips the weight gradients: fewer model FLOPs per step
    assert lora["train_flops_per_step"] < full["train_flops_per_step"]


def test_train_flops_full_ft_is_three_forwards():
    adapted, model_cfg, _, _ = bench_train.build("tiny-bert", "full_ft", CPU)
    linear = sum(m.weight.numel() for m in adapted.model.modules() if isinstance(m, torch.nn.Linear))
    tokens, seq = 4 * 16, 16
    attention = 4 * model_cfg.n_layers * seq * model_cfg.d_model * tokens
    forward = 2 * linear * tokens + attention
    # weight gradients of every Linear weight: one more forward's matmuls, attention excluded
    assert bench_train.train_flops(adapted.model, model_cfg, 4, seq) == 3 * forward - attention


def test_harness_measure_runs_the_real_trainer():
    rec = bench_train.measure_harness("tiny-bert", 2, 16, steps=2, warmup=1, device=CPU)
    assert rec["harness_step_ms"] > 0 and rec["bare_step_ms"] > 0 and rec["steps"] == 2


def test_train_cli_tables(tmp_path, monkeypatch):
    """The parent's tables, with workers run in-process (the subprocess round trip is the slow part)."""

    def in_process(args: list[str]) -> dict:
        ns = bench_train.parse_args(args)
        if ns.worker == "harness":
            return bench_train.measure_harness(ns.model, ns.batch, ns.seq, ns.steps, ns.warmup, CPU)
        return bench_train.measure_method(ns.model, ns.worker, ns.batch, ns.seq, ns.steps, ns.warmup, CPU)

    monkeypatch.setattr(bench_train, "run_worker", in_process)
    bench_train.main(["--model", "tiny-bert", "--methods", "lora,full_ft", "--batch", "2", "--seq", "16",
                      "--steps", "1", "--warmup", "0", "--out", str(tmp_path)])
    per_method = pd.read_csv(tmp_path / "train_tiny-bert.csv")
    assert list(per_method.method) == ["lora", "full_ft"]
    assert (per_method.mfu_pct > 0).all()
    ratios = pd.read_csv(tmp_path / "train_tiny-bert_vs_paper.csv").set_index("quantity")
    claims = paper_data("claims")
    assert ratios.loc["checkpoint FT / LoRA (x)", "paper"] == claims["checkpoint"]["reduction_x"]
    assert ratios.loc["checkpoint FT / LoRA (x)", "ours"] > 1
    assert "overhead_pct" in pd.read_csv(tmp_path / "train_tiny-bert_harness.csv")
    with pytest.raises(ReproError):
        bench_train.main(["--methods", "nope", "--out", str(tmp_path)])


def test_train_cli_compares_precisions_side_by_side(tmp_path, monkeypatch):
    """`--compare-precisions fp32,bf16`: every method in every precision (the worker gets each one), its speed-up
    over the first; an unknown precision stops before any worker runs."""
    asked = []

    def in_process(args: list[str]) -> dict:
        ns = bench_train.parse_args(args)
        asked.append((ns.worker, ns.precision))
        return bench_train.measure_method(ns.model, ns.worker, ns.batch, ns.seq, ns.steps, ns.warmup, CPU,
                                          ns.precision)

    monkeypatch.setattr(bench_train, "run_worker", in_process)
    bench_train.main(["--model", "tiny-bert", "--methods", "lora,full_ft", "--batch", "2", "--seq", "16",
                      "--steps", "1", "--warmup", "0", "--compare-precisions", "fp32,bf16", "--out", str(tmp_path)])
    assert asked == [("lora", "fp32"), ("lora", "bf16"), ("full_ft", "fp32"), ("full_ft", "bf16")]
    table = pd.read_csv(tmp_path / "train_tiny-bert_precision.csv")
    assert list(zip(table.method, table.precision)) == asked and (table.step_ms > 0).all()
    fp32 = table[table.precision == "fp32"]
    assert (fp32.speedup_vs_fp32 == 1).all()
    assert table.speedup_vs_fp32.tolist() == pytest.approx(
        [fp32.set_index("method").step_ms[m] / ms for m, ms in zip(table.method, table.step_ms)])
    assert "--compare-precisions fp32,bf16" in (tmp_path / "train_tiny-bert_precision.md").read_text()
    asked.clear()
    with pytest.raises(ReproError, match="train.precision must be one of"):
        bench_train.main(["--model", "tiny-bert", "--compare-precisions", "fp32,fp8", "--out", str(tmp_path)])
    assert asked == []


# ---------------------------------------------------------------------------- shipped paper values


def test_table1_copy_matches_paper(paper_reference):
    ref, ours = paper_reference["table1_latency"], paper_data("table1_latency")
    assert ours["trials"] == ref["trials_averaged"] and ours["unit"] == ref["unit"]
    assert len(ours["settings"]) == len(ref["settings"])
    for mine, theirs in zip(ours["settings"], ref["settings"]):
        assert (mine["batch_size"], mine["seq_len"]) == (theirs["batch_size"], theirs["seq_len"])
        assert mine["adapter_params_m"] == theirs["adapter_trainable_params"]["value"]
        for row, cell in theirs["latency_ms"].items():
            assert mine["latency_ms"][row]["value"] == cell["value"]
            assert mine["latency_ms"][row]["pm"] == cell["pm"]
            assert mine["latency_ms"][row].get("overhead_pct") == cell.get("overhead_pct")


def printed_number(text: str) -> tuple[float, str]:
    """'1.2TB' -> (1.2, 'TB'); 'roughly 10,000x' -> (10000.0, '')."""
    match = re.search(r"([\d,]+(?:\.\d+)?)\s*([A-Z]*)", text)
    return float(match.group(1).replace(",", "")), match.group(2)


def test_claims_copy_matches_paper(paper_reference):
    ref, ours = paper_reference["claims"], paper_data("claims")
    assert ours["trainable_param_reduction_x"] == ref["trainable_param_reduction"]["value"]
    assert ours["gpu_memory_reduction_x"] == ref["gpu_memory_reduction"]["value"]
    assert ours["training_speedup_pct"] == ref["training_speedup"]["value"]
    for key, src in (("training_vram", "gpt3_training_vram"), ("checkpoint", "gpt3_checkpoint")):
        for method, printed in (("full_ft", "from_printed"), ("lora", "to_printed")):
            cell = ours[key][method]
            assert (cell["value"], cell["unit"]) == printed_number(ref[src][printed])
    assert ours["checkpoint"]["reduction_x"] == printed_number(ref["gpt3_checkpoint"]["reduction_printed"])[0]
    assert ours["training_throughput_tokens_per_s"] == {m: ref["training_throughput"][m]["value"]
                                                        for m in ("full_ft", "lora")}


def test_no_paper_number_in_bench_or_analysis_code():
    """Paper values live in conf/paper/*.yaml only: none of Table 1's latencies or Table 7's norms in code."""
    from pathlib import Path

    import repro.analysis
    import repro.bench

    values = {str(c["value"]) for s in paper_data("table1_latency")["settings"] for c in s["latency_ms"].values()}
    values |= {str(v) for cells in paper_data("table7_delta_w")["projection_norms"].values() for v in cells.values()}
    values |= {"61.95", "43.1", "32.5", "6.91", "21.5"}
    values = {v for v in values if float(v) >= 1}  # sub-1 values such as 0.02 collide with plot settings
    for package in (repro.analysis, repro.bench):
        for path in Path(package.__file__).parent.glob("*.py"):
            text = path.read_text()
            assert not [v for v in values if re.search(rf"(?<![\d.]){re.escape(v)}(?![\d])", text)], path


# ---------------------------------------------------------------------------- decoding


def test_decode_bench_rebuilds_a_run_and_compares_batched_with_one_at_a_time(compose, data_root, tmp_path):
    from pathlib import Path

    from repro.bench import decode
    from repro.runner import run
    from tests.test_generation_run import TINY

    record = run(compose("task=e2e", f"data.root={data_root}", *TINY, "task.metric_set=samsum",
                         "task.main_metric=ROUGE_L"))
    run_dir = Path(record["config"]["output_root"]) / record["run_id"]
    row = decode.measure(run_dir, n_inputs=3, batch_size=2, data_root=None)
    assert row["identical_outputs"] and row["inputs"] == 3 and row["batch_size"] == 2
    assert row["batched_s"] > 0 and row["speedup"] == pytest.approx(row["one_at_a_time_s"] / row["batched_s"])
    assert row["speedup_vs_prompt_per_beam"] == pytest.approx(row["one_at_a_time_prompt_per_beam_s"] / row["batched_s"])
    assert row["precision"] == "fp32"  # the run's
    decode.main([str(run_dir), "--inputs", "2", "--out", str(tmp_path / "decode"), "--precision", "bf16"])
    header = (tmp_path / "decode.md").read_text().splitlines()[0]
    assert "; bf16); outputs identical: True" in header and header.endswith("--precision bf16")
    assert pd.read_csv(tmp_path / "decode.csv")["precision"].tolist() == ["bf16"]
    with pytest.raises(SystemExit):  # a run folder without a complete result
        decode.main([str(tmp_path), "--inputs", "2"])
    with pytest.raises(SystemExit, match="2"):  # a precision it does not know: one line, exit 2
        decode.main([str(run_dir), "--inputs", "2", "--out", str(tmp_path / "decode"), "--precision", "fp8"])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_hf_trainer_comparison_runs_both_sides_on_the_same_job(tmp_path, data_root, precision):
    from repro.bench import hf_trainer

    hf_trainer.main(["--model", "tiny-bert", "--examples", "48", "--eval-examples", "24", "--data-root",
                     str(data_root), "--out", str(tmp_path), "--precision", precision])
    stem = "hf_trainer_tiny-bert" + ("" if precision == "fp32" else "_bf16")
    assert f"{precision} on both sides" in (tmp_path / f"{stem}.md").read_text()
    table = pd.read_csv(tmp_path / f"{stem}.csv")
    assert list(table.side) == ["harness (repro.loop)", "HF Trainer + peft"]
    assert table.optimizer_steps.nunique() == 1 and table.optimizer_steps.iloc[0] == 3  # 48 examples, batch 16
    assert (table.tokens_per_s > 0).all() and table.tokens_per_s_vs_hf.iloc[1] == 1
    assert table.accuracy.between(0, 1).all()


def test_padding_table_grouped_batches_waste_far_less(tmp_path, data_root):
    from repro.bench import padding

    padding.main(["--tasks", "glue/mrpc,glue/stsb", "--data-root", str(data_root), "--out", str(tmp_path)])
    table = pd.read_csv(tmp_path / "padding.csv").set_index("task")
    assert list(table.index) == ["mrpc", "stsb"]
    assert (table.padded_pct_grouped < 15).all() and (table.padded_pct_grouped < table.padded_pct_shuffled / 5).all()


def test_plan_memory_compares_the_planners_estimate_with_a_measured_step(tmp_path):
    from repro.bench import plan_memory

    plan_memory.main(["--model", "tiny-bert", "--out", str(tmp_path)])
    table = pd.read_csv(tmp_path / "plan_memory_tiny-bert.csv")
    assert [tuple(r) for r in table[["method", "batch", "seq"]].itertuples(index=False)] == \
        [tuple(c) for c in plan_memory.CONFIGS]
    assert (table.measured_added_mib > 0).all() and (table.planned_training_mib >= table.planned_activations_mib).all()
    assert table.error_pct.tolist() == pytest.approx(
        (100 * (table.planned_training_mib / table.measured_added_mib - 1)).tolist())
    full, lora = table.iloc[1], table.iloc[0]  # same shape: full fine-tuning plans grads + AdamW for every weight
    assert full.planned_training_mib > lora.planned_training_mib


def test_decode_profile_splits_generate_time_and_prices_a_step_per_row(tmp_path):
    from repro.bench import decode_profile

    written = decode_profile.main(["--arch", "gpt2-tiny", "--inputs", "3", "--beams", "1,2", "--prompt-tokens", "4",
                                   "--new-tokens", "3", "--step-rows", "1,4", "--steps", "2", "--out", str(tmp_path)])
    assert {p.name for p in written} >= {"decode_profile.csv", "decode_step_cost.csv"}
    split = pd.read_csv(tmp_path / "decode_profile.csv")
    assert split.identical_outputs.all()  # same arithmetic both ways: the outputs must agree
    assert sorted(split.rows_per_step) == [1, 2, 3, 6]  # one input x beams vs all inputs x beams
    one = split[split["mode"] == "one_at_a_time"].set_index("num_beams")
    batched = split[split["mode"] == "batched"].set_index("num_beams")
    # generate calls forward once per new token (plus the prompt) per call: three calls one at a time, one batched
    assert (one.forward_calls == 3 * batched.forward_calls).all()
    assert ((split.forward_s > 0) & (split.forward_s < split.total_s)).all()
    cost = pd.read_csv(tmp_path / "decode_step_cost.csv")
    assert list(cost.rows) == [1, 4] and cost.per_row_vs_1_row.iloc[0] == 1.0
    with pytest.raises(SystemExit):
        decode_profile.main(["--beams", "0"])


def test_compile_bench_times_whole_runs_and_applies_the_adoption_rule(tmp_path, monkeypatch, data_root):
    """A real eager run's record is read back (wall >= training time, the dev metric in points); the table holds
    eager and compiled per method with speed-ups over eager, and the caption applies the 1.2x rule per method."""
    job = ["model=tiny-bert", "data.max_train_samples=16", "data.max_eval_samples=8", "train.max_steps=2",
           f"data.root={data_root}"]
    real = bench_compile.run_once([*bench_compile.DEFAULT_JOB, *job, "method=lora"], False, 1, tmp_path / "real")
    assert real["wall_s"] >= real["train_time_s"] > 0 and real["optimizer_steps"] == 2
    assert real["main_metric"] == "accuracy" and 0 <= real["best"] <= 100

    asked = []

    def fake(overrides, compiled, threads, root):
        asked.append((next(o for o in overrides if o.startswith("method=")), compiled, threads))
        fast = {"lora": 4.0, "full_ft": 1.1}[overrides[-1].split("=")[1]]
        wall = 100.0 / fast if compiled else 100.0
        return {"wall_s": wall, "train_time_s": wall / 2, "main_metric": "accuracy", "best": 80.0,
                "epochs_run": 2, "optimizer_steps": 10}

    monkeypatch.setattr(bench_compile, "run_once", fake)
    bench_compile.main(["--methods", "lora,full_ft", "--threads", "1", "--out", str(tmp_path), *job])
    assert asked == [("method=lora", False, 1), ("method=lora", True, 1), ("method=full_ft", False, 1),
                     ("method=full_ft", True, 1)]
    table = pd.read_csv(tmp_path / "compile_tiny-bert.csv")
    assert list(zip(table.method, table["mode"])) == [("lora", "eager"), ("lora", "compiled"),
                                                      ("full_ft", "eager"), ("full_ft", "compiled")]
    assert table.speedup_wall.round(3).tolist() == [1.0, 4.0, 1.0, 1.1]
    caption = (tmp_path / "compile_tiny-bert.md").read_text()
    assert "lora 4.00x (use it)" in caption and "full_ft 1.10x (keep eager)" in caption
    assert "model=minilm-l6" not in caption  # the job's model override replaced the default's
    with pytest.raises(SystemExit):
        bench_compile.main(["--bogus", "--out", str(tmp_path)])
