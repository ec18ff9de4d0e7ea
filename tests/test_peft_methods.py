"""Any tuner peft provides, from one YAML each (repro/methods/peft_generic.py): every such method composes with Hydra,
trains through the runner on the tiny model with the planner's parameter count and a full cost record, LoRA+ trains
B at its ratio, a tuner that cannot adapt the model refuses in one line, and the comparison table
(repro/paper_tables/peft_methods.py) builds from synthetic records with its claims and Pareto figure.
Per-method parameter formulas and save/load round trips: tests/test_methods.py (it covers every method)."""

from __future__ import annotations

import statistics

import pandas as pd
import pytest
import torch

from repro.errors import ConfigError
from repro.methods import METHODS, PEFT_FAMILY, apply_method
from repro.models import load_model
from repro.plan import plan
from repro.results import RESULT_FILE, write_json_atomic
from repro.runner import run

ISSUE_METHODS = {"vera", "pissa", "olora", "loraplus", "ia3", "loha", "lokr", "oft", "fourierft", "hra", "ln_tuning"}
TINY = ("task=glue/rte", "model=tiny-bert")


def test_the_issue_methods_are_registered_as_one_yaml_each():
    assert ISSUE_METHODS | {"peft"} == set(PEFT_FAMILY)
    assert all(name in METHODS for name in PEFT_FAMILY)


@pytest.mark.parametrize("name", PEFT_FAMILY)
def test_method_trains_through_the_runner_with_the_planners_count(compose, data_root, name):
    record = run(compose(*TINY, f"data.root={data_root}", f"method={name}", "data.max_train_samples=8",
                         "data.max_eval_samples=8", "train.batch_size=4", "data.max_seq_len=32", "train.max_steps=1"))
    assert record["status"] == "complete" and record["method"] == name and record["optimizer_steps"] == 1
    (planned,) = plan([*TINY, f"method={name}"])
    assert (planned.trainable, planned.head) == (record["params"]["trainable"], record["params"]["head"])
    assert planned.trainable > 0
    # the cost record: peak memory, training time per step, size of the saved adapter, parameter counts
    assert record["peak_memory_bytes"] > 0 and record["time_per_step_s"] == record["train_time_s"] > 0
    assert record["adapter_bytes"] > 4 * planned.trainable  # fp32 method and head tensors, plus peft's metadata


def tiny_adapted(compose, *overrides: str):
    cfg = compose(*TINY, *overrides)
    torch.manual_seed(0)
    return apply_method(load_model(cfg.model, num_labels=2), cfg.method, cfg.model), cfg


def test_lora_plus_steps_b_at_its_ratio_of_the_learning_rate(compose):
    from repro.loop import optimizer_groups
    from tests.test_methods import batch

    adapted, cfg = tiny_adapted(compose, "method=loraplus")
    model, lr = adapted.model, 1e-3
    with torch.no_grad():  # B away from zero, so that A gets gradients too
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    optimizer = adapted.hooks.make_optimizer(optimizer_groups(model, 0.0), lr)
    b_params = {id(p) for n, p in model.named_parameters() if "lora_B" in n}
    assert {g["lr"] for g in optimizer.param_groups if {id(p) for p in g["params"]} <= b_params} == {16 * lr}
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    model(**batch("tiny-bert")).loss.backward()
    optimizer.step()  # Adam's first step moves each weight by about its group's rate

    def moved(part: str) -> float:
        return statistics.median(float(d) for n, p in model.named_parameters() if part in n
                                 for d in (p.detach() - before[n]).abs().flatten())
    assert moved("lora_B") / moved("lora_A") == pytest.approx(cfg.method.lr_ratio_b, rel=0.02)


@pytest.mark.parametrize("overrides, message", [
    (("method=hra", "+method.options.target_modules=[word_embeddings]"),
     "method hra (HRAConfig) cannot adapt model tiny-bert: Target module Embedding(30522, 32, padding_idx=0) is not "
     "supported"),
    (("method=fourierft", "method.options.n_frequency=2000"),
     "method fourierft (FourierFTConfig) cannot adapt model tiny-bert: `n_frequency` should be less than or equal to"),
    (("method=vera", "method.peft_config=NoSuchConfig"), "method vera: peft 0.21.2 has no config class 'NoSuchConfig'"),
    (("method=vera", "+method.options.rank=4"), "method vera: VeraConfig has no option rank"),
    (("method=vera", "method.lr_ratio_b=4"),
     "method vera: lr_ratio_b scales LoRA's B matrices, and this method has none"),
])
def test_a_tuner_that_cannot_adapt_the_model_refuses_in_one_line(compose, overrides, message):
    with pytest.raises(ConfigError) as error:
        tiny_adapted(compose, *overrides)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_the_planner_refuses_before_any_run_with_exit_2(capsys):
    from repro.plan import main

    with pytest.raises(SystemExit) as exit_:
        main([*TINY, "method=hra", "+method.options.target_modules=[word_embeddings]"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("error: method hra (HRAConfig) cannot")


# --- the comparison: sweep, recipe, table ----------------------------------------------------------------------

def test_compare_sweep_runs_every_method_beside_lora_and_full_ft_at_the_recipes_rates(compose):
    from omegaconf import OmegaConf

    from repro.config import CONF_DIR
    from tests.test_plan import SWEEPS

    runs = plan(["task=glue/sst2", "model=tiny-bert", "scale=cpu"], SWEEPS / "peft_methods.yaml")
    assert sorted((r.method, r.seed) for r in runs) == sorted(
        (m, s) for m in ISSUE_METHODS | {"lora", "full_ft"} for s in (0, 1, 2))
    recipe = OmegaConf.load(CONF_DIR / "cpu_recipe" / "glue.yaml")
    for task in ("sst2", "stsb"):
        for method in ISSUE_METHODS:
            cfg = compose(f"task=glue/{task}", f"method={method}", "scale=cpu")
            assert cfg.train.learning_rate == recipe[task].learning_rate[method], (task, method)


def _record(root, task, method, seed, value, trainable, peak_gib, adapter_mb, cpu="Intel(R) Xeon(R) Processor"):
    name = f"{task}_{method}_{seed}"
    write_json_atomic(root / name / RESULT_FILE, {
        "run_id": name, "status": "complete", "task": task, "model": "minilm-l6", "method": method, "seed": seed,
        "params": {"trainable": trainable, "head": 10, "total": 1000}, "main_metric": "accuracy",
        "best_metrics": {"accuracy": value}, "trivial_baseline": {"accuracy": 0.5},
        "config": {"scale_name": "cpu", "sweep_name": "peft_methods", "task": {"name": task, "kind": "classification"},
                   "method": {"name": method}},
        "peak_memory_bytes": peak_gib * 2**30, "train_time_s": 30.0, "optimizer_steps": 100,
        "adapter_bytes": adapter_mb * 1e6, "hardware": {"cpu_model": cpu, "cpu_capability": "AVX512"}})


# method -> (main metric, trainable parameters, peak memory GiB, saved weights MB)
COMPARED = {"lora": (0.80, 74_000, 1.0, 0.3), "full_ft": (0.81, 22_000_000, 2.0, 90.0),
            "vera": (0.805, 8_000, 0.9, 0.04), "ia3": (0.60, 5_000, 0.9, 0.03)}


@pytest.fixture(scope="module")
def compare_tables(tmp_path_factory):
    from repro.tables import build

    root, out = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("tables")
    for task in ("sst2", "stsb"):
        for method, (value, trainable, peak, adapter) in COMPARED.items():
            for seed in range(4):
                cpu = "AMD EPYC" if (method, seed) == ("vera", 3) else "Intel(R) Xeon(R) Processor"
                _record(root, task, method, seed, value + seed / 1000, trainable, peak, adapter, cpu)
    build(root, out)
    return out


def test_compare_table_has_a_row_per_method_with_costs_under_the_baseline(compare_tables):
    long = pd.read_csv(compare_tables / "peft_methods.csv")
    assert list(long[long["task"] == "sst2"]["method"]) == ["full_ft", "lora", "ia3", "vera"]  # references first
    vera = long.set_index(["task", "method"]).loc[("stsb", "vera")]
    assert vera["median"] == pytest.approx(80.65) and vera["n"] == 4 and vera["trainable"] == 8_000
    assert (vera["peak_memory_gib"], vera["step_ms"], vera["adapter_mb"], vera["baseline"]) == pytest.approx(
        (0.9, 300.0, 0.04, 50.0))
    md = (compare_tables / "peft_methods.md").read_text()
    assert "| sst2   | trivial baseline | 50.0          |" in md
    assert ("| sst2   | vera             | 80.7±0.1 [4]  | 0.008M      |                 0.9 |         300 |"
            "           0.04 | AMD EPYC + Intel Xeon |") in md  # timings compare only on the same CPU: it says which
    assert "| sst2   | lora             |" in md and md.count("| Intel Xeon            |") == 6
    assert (compare_tables / "peft_methods_pareto.png").stat().st_size > 0
    assert "vera" not in (compare_tables / "lora_variants.md").read_text()  # the sweep's runs stay in its table


def test_compare_claims_judge_each_method_against_lora_and_full_ft(compare_tables):
    """VeRA 0.5 points above LoRA and 0.5 below full fine-tuning in every seed: on par with both (tolerance 1);
    (IA)^3 20 points below: fails both. The references get no claims of their own."""
    md = (compare_tables / "peft_methods.md").read_text()
    claims = md.split("Claims at this scale:")[1].split("Verdict rule")[0].splitlines()
    texts = [line[2:].split(" (tolerance")[0] for line in claims if line.startswith("- ")]
    assert texts == ["ia3 performs on par with LoRA", "ia3 performs on par with full fine-tuning",
                     "vera performs on par with LoRA", "vera performs on par with full fine-tuning"]
    verdicts = [line.split(":")[0].strip(" -") for line in claims if line.startswith("  - ")]
    assert verdicts == ["fails", "fails", "holds", "holds"]


def test_figure_labels_move_up_past_the_labels_they_would_cover():
    from repro.paper_tables.peft_methods import label_shifts

    # three methods of one size (x 100 px), two close in value, one far above; one elsewhere at the same height
    anchors = [(100, 10), (100, 12), (100, 50), (300, 11)]
    assert label_shifts(anchors, [40, 40, 40, 40], height=10) == [0, 8, 0, 0]
    # a third close one climbs past both, whatever the order it comes in
    assert label_shifts([(100, 13), (100, 10), (120, 12)], [40, 40, 40], height=10) == [17, 0, 8]


def test_pareto_front_keeps_the_points_nothing_cheaper_matches():
    from repro.paper_tables.peft_methods import pareto_front

    costs, values = [1, 2, 3, 3, 10, 0.5], [50, 40, 60, 55, 60, 30]
    assert pareto_front(costs, values) == [5, 0, 2]
