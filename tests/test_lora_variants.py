"""LoRA's successors (rsLoRA, DoRA, AdaLoRA, QLoRA) on tiny models: their definitions (scaling, merge), AdaLoRA's
rank allocation over a short schedule, QLoRA's refusal on an unsupported device, and runs through `repro.train`
that record what each variant reports. Trainable counts and gradients: tests/test_methods.py covers every method."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from repro.errors import ConfigError
from repro.methods import check_backend
from repro.methods.adalora import orthogonality
from repro.runner import run
from tests.test_config import _cli
from tests.test_methods import batch, build, method_cfg, model_cfg


def lora_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})]


def test_rslora_scales_by_alpha_over_sqrt_r_and_lora_by_alpha_over_r():
    for name, expected in (("rslora", 16 / math.sqrt(4)), ("lora", 16 / 4)):
        adapted, _, _ = build("tiny-bert", name, r=4, alpha=16)
        scalings = [layer.scaling["default"] for layer in lora_layers(adapted.model)]
        assert len(scalings) == 8 and scalings == pytest.approx([expected] * 8)  # q, k, v, o in 2 layers


@pytest.mark.parametrize("name", ["dora", "rslora"])
def test_merged_equals_unmerged(name):
    adapted, _, _ = build("tiny-bert", name)
    model = adapted.model
    with torch.no_grad():  # as after training: B != 0, and DoRA's magnitudes moved off ||W0||
        for n, p in model.named_parameters():
            if "lora_B" in n or "lora_magnitude_vector" in n:
                p.add_(torch.randn_like(p) * 0.3)
    model.eval()
    inputs = batch("tiny-bert")
    with torch.no_grad():
        unmerged = model(**inputs).logits
        merged = model.merge_and_unload()(**inputs).logits
    assert torch.allclose(merged, unmerged, atol=1e-5)


def test_dora_magnitude_starts_at_column_norms_so_the_model_is_unchanged():
    torch.manual_seed(0)
    plain, _, _ = build("tiny-bert", "full_ft")
    dora, _, _ = build("tiny-bert", "dora")
    plain.model.eval(), dora.model.eval()
    inputs = batch("tiny-bert")
    with torch.no_grad():  # same seed: same base weights and head; B = 0 and m = ||W0|| give W0 back
        assert torch.allclose(dora.model(**inputs).logits, plain.model(**inputs).logits, atol=1e-5)


def test_orthogonality_is_zero_for_orthonormal_factors_and_positive_otherwise():
    adapted, _, _ = build("tiny-bert", "adalora", init_r=4, target_r=2)
    model = adapted.model
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_A" in n:  # r x d with orthonormal rows
                p.copy_(torch.linalg.qr(torch.randn(p.shape[1], p.shape[0]))[0].T)
            elif "lora_B" in n:  # d x r with orthonormal columns
                p.copy_(torch.linalg.qr(torch.randn(*p.shape))[0])
    assert orthogonality(model).item() == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_A" in n).mul_(2)
    assert orthogonality(model).item() > 0.1


def test_adalora_prunes_ranks_to_its_budget_over_a_short_schedule():
    adapted, model_cfg, _ = build("tiny-bert", "adalora", init_r=6, target_r=2, update_interval=2,
                                  tinit_fraction=0.2, tfinal_fraction=0.2)
    model, hooks = adapted.model, adapted.hooks
    total = 30
    hooks.on_schedule(total)
    optimizer = hooks.make_optimizer([{"params": [p for p in model.parameters() if p.requires_grad]}], 1e-2)
    inputs = batch("tiny-bert")
    model.train()
    initial = None
    for step in range(1, total + 1):
        loss = model(**inputs).loss + hooks.extra_loss()
        loss.backward()
        optimizer.step()
        hooks.after_step(step)
        optimizer.zero_grad(set_to_none=True)
        if step == 1:
            initial = hooks.report()["final_ranks"]
    report = hooks.report()
    ranks = report["final_ranks"]
    n_matrices = 4 * model_cfg.n_layers  # q, k, v, o in each layer
    assert len(ranks) == n_matrices and report["rank_budget"] == 2 * n_matrices
    assert sum(initial.values()) == 6 * n_matrices  # every matrix starts at init_r
    assert sum(ranks.values()) <= report["rank_budget"]  # and ends within the target budget
    assert all(0 <= r <= 6 for r in ranks.values()) and len(set(ranks.values())) > 1  # allocated unevenly
    assert report["schedule"] == {"tinit": 6, "tfinal": 6, "total_step": total, "deltaT": 2}


def test_adalora_too_short_a_run_is_a_clear_error():
    adapted, _, _ = build("tiny-bert", "adalora", tinit_fraction=0.5, tfinal_fraction=0.5)
    with pytest.raises(ConfigError, match="leave no rank-pruning phase"):
        adapted.hooks.on_schedule(10)


def test_qlora_refuses_what_it_cannot_run_on_and_runs_on_a_cpu(monkeypatch):
    check_backend(method_cfg("qlora"), torch.device("cpu"))  # bitsandbytes >= 0.49 (the test extra) has CPU kernels
    with pytest.raises(ConfigError, match=r"4-bit backend \(bitsandbytes [0-9.]+\) does not support device 'mps'"):
        check_backend(method_cfg("qlora"), torch.device("mps"))
    with pytest.raises(ConfigError, match="model tiny-bert is random-initialised"):
        check_backend(method_cfg("qlora"), torch.device("cpu"), model_cfg("tiny-bert"))
    check_backend(method_cfg("lora"), torch.device("mps"), model_cfg("tiny-bert"))  # the other methods need nothing
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "bitsandbytes" else object())
    with pytest.raises(ConfigError, match=r"needs bitsandbytes: pip install 'repro-lora\[qlora\]'"):
        check_backend(method_cfg("qlora"), torch.device("cpu"))


def test_qlora_cli_on_a_random_model_is_one_line_exit_2_and_writes_nothing(tmp_path):
    proc = _cli("method=qlora", "model=tiny-bert", "train.device=cpu", results=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: method=qlora quantises a pre-trained checkpoint; model tiny-bert is random")
    assert not (tmp_path / "runs").exists()


def _qlora_minilm(compose, seed=1):
    """QLoRA on the embedded MiniLM (4-bit on the CPU), B initialised at random so that the adapter matters."""
    from repro.kinds import kind_of

    cfg = compose("task=glue/sst2", "model=minilm-l6", "method=qlora", "train.device=cpu", "method.dropout=0.0")
    torch.manual_seed(seed)
    adapted = kind_of(cfg).build(cfg)
    with torch.no_grad():
        for layer in lora_layers(adapted.model):
            layer.lora_B["default"].weight.normal_(0, 0.05)
    return adapted


def test_qlora_trains_on_a_cpu_after_an_evaluation_as_before_it(compose):
    """bitsandbytes re-lays 4-bit weights for its CPU inference kernel on the first no-grad eval forward, and then
    fails to train (0.50.2): every epoch after the first evaluates first. The harness keeps one layout, so a training
    step after an evaluation gives the loss and gradients of one without it; the frozen base is 4-bit, and counts as
    many weights (and benchmark FLOPs) as LoRA's."""
    from repro.bench.train import train_flops
    from repro.params import count_parameters

    inputs = {k: v for k, v in batch("minilm-l6").items()}
    steps = []
    for evaluate_first in (False, True):
        adapted = _qlora_minilm(compose)
        model = adapted.model
        if evaluate_first:
            model.eval()
            with torch.no_grad():
                model(**{k: v for k, v in inputs.items() if k != "labels"})
        model.train()
        loss = model(**inputs).loss
        loss.backward()
        steps.append((loss.item(), lora_layers(model)[0].lora_A["default"].weight.grad.clone()))
    assert steps[0][0] == steps[1][0] and torch.equal(steps[0][1], steps[1][1]) and steps[0][1].abs().sum() > 0
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())
    lora, _, _ = build("minilm-l6", "lora")
    head = list(model_cfg("minilm-l6").head)
    assert count_parameters(model, head) == count_parameters(lora.model, head)
    assert train_flops(model, model_cfg("minilm-l6"), 4, 16) == train_flops(lora.model, model_cfg("minilm-l6"), 4, 16)


def test_quantised_loading_needs_a_pretrained_model():
    from repro.methods import load_kwargs
    from repro.models import load_model

    with pytest.raises(ConfigError, match="random-initialised"):
        load_model(model_cfg("tiny-bert"), 2, quantization_config=object())
    assert load_kwargs(method_cfg("lora"), model_cfg("tiny-bert"), torch.device("cpu")) == {}
    # QLoRA on a CPU: the weights load there, the task head (it trains) stays in full precision
    kwargs = load_kwargs(method_cfg("qlora"), model_cfg("minilm-l6"), torch.device("cpu"))
    assert kwargs["device_map"] == {"": "cpu"}
    assert kwargs["quantization_config"].llm_int8_skip_modules == ["classifier", "bert.pooler"]


@pytest.mark.parametrize("name", ["dora", "rslora", "adalora"])
def test_variant_runs_through_the_runner_on_a_glue_task(compose, data_root, name):
    record = run(compose("task=glue/rte", f"data.root={data_root}", "model=tiny-bert", f"method={name}",
                         "data.max_train_samples=48", "data.max_eval_samples=16", "train.epochs=2",
                         "train.batch_size=4", "data.max_seq_len=64"))
    assert record["status"] == "complete" and record["method"] == name
    stored = json.loads((Path(record["config"]["output_root"]) / record["run_id"] / "result.json").read_text())
    if name == "adalora":
        state = stored["method_state"]
        assert state["schedule"]["total_step"] == record["optimizer_steps"] == 24
        assert sum(state["final_ranks"].values()) <= state["rank_budget"]
    else:
        assert "method_state" not in stored


def test_adalora_on_a_decoder_through_the_generation_loop(compose, data_root):
    from tests.test_generation_run import TINY

    overrides = [o for o in TINY if not o.startswith("method=")]
    record = run(compose("task=e2e", f"data.root={data_root}", "method=adalora", "method.update_interval=1",
                         *overrides, "data.max_train_samples=40", "train.epochs=2"))
    assert record["status"] == "complete"
    assert record["method_state"]["schedule"]["total_step"] == record["optimizer_steps"] == 10

