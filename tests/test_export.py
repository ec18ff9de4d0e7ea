"""`python -m repro.export`: a finished LoRA run becomes a plain transformers model (LoRA merged; GPT-2's split
q/v fused back into c_attn) whose logits, loaded without peft, equal the adapted model's; methods that add modules
stop with one line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from repro import export
from repro.errors import ReproError
from repro.runner import run

GLUE = ("model=tiny-bert", "task=glue/sst2", "scale=smoke", "data.max_train_samples=32", "data.max_eval_samples=16",
        "train.batch_size=8", "train.epochs=1", "train.learning_rate=1e-2")


def _run_dir(record):
    from pathlib import Path

    return Path(record["config"]["output_root"]) / record["run_id"]


def _plain_logits(auto, folder, texts=("an unseen sentence", "and one more, a little longer")):
    model, tok = auto.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    enc = tok(list(texts), return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**enc).logits, enc


def test_lora_classifier_exports_to_plain_transformers_with_the_same_logits(compose, data_root, tmp_path):
    record = run(compose(f"data.root={data_root}", *GLUE, "method=lora", f"output_root={tmp_path / 'runs'}"))
    summary = export.main([str(_run_dir(record)), "--out", str(tmp_path / "plain")])
    assert summary["merged_lora"] and summary["max_abs_logit_diff"] <= export.TOLERANCE
    assert json.loads((tmp_path / "plain" / "export.json").read_text()) == summary
    assert not any("lora" in k for k in load_file(tmp_path / "plain" / "model.safetensors"))
    plain, enc = _plain_logits(AutoModelForSequenceClassification, tmp_path / "plain")
    cfg, adapted = export.rebuild(_run_dir(record))  # independent of export's own check, on other inputs
    adapted.model.eval()
    with torch.no_grad():
        expected = adapted.model(**enc).logits
    assert torch.allclose(plain, expected, atol=1e-5)
    # the merge changed the weights: LoRA learned something at this learning rate
    base = export.rebuild(_run_dir(record))[1].model.get_base_model()
    with torch.no_grad():
        for module in base.modules():
            if hasattr(module, "lora_B"):
                module.lora_B["default"].weight.zero_()
        assert not torch.allclose(base(**enc).logits, plain, atol=1e-4)


def test_gpt2_lora_exports_with_q_and_v_fused_back_into_c_attn(compose, data_root, tmp_path):
    from tests.test_generation_run import TINY

    record = run(compose("task=e2e", f"data.root={data_root}", *TINY, "task.metric_set=samsum",
                         "task.main_metric=ROUGE_L", f"output_root={tmp_path / 'runs'}"))
    summary = export.main([str(_run_dir(record)), "--out", str(tmp_path / "plain")])
    assert summary["class"] == "GPT2LMHeadModel" and summary["max_abs_logit_diff"] <= export.TOLERANCE
    keys = set(load_file(tmp_path / "plain" / "model.safetensors"))
    assert "transformer.h.0.attn.c_attn.weight" in keys and not any(".q." in k or "lora" in k for k in keys)
    plain, _ = _plain_logits(AutoModelForCausalLM, tmp_path / "plain")
    assert torch.isfinite(plain).all()


def test_methods_that_add_modules_stop_with_one_line(compose, data_root, tmp_path):
    record = run(compose(f"data.root={data_root}", *GLUE, "method=adapter_h", f"output_root={tmp_path / 'runs'}"))
    with pytest.raises(ReproError, match=r"^method adapter_h adds modules plain transformers cannot load"):
        export.main([str(_run_dir(record))])
    with pytest.raises(ReproError, match="is not a complete run"):
        export.main([str(tmp_path)])
    with pytest.raises(ReproError, match="no such run folder"):
        export.main([str(tmp_path / "nope")])
