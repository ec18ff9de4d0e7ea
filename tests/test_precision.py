"""`train.precision`: bf16 autocast trains on CPU for LoRA and full fine-tuning (forward in bf16, weights fp32);
fp16 scales the loss and a resumed run continues with the GradScaler's state, matching an uninterrupted run; the
fp32 default leaves every run id as it was before the knob existed."""

from __future__ import annotations

import pytest
import torch

from repro.checkpoint import Checkpointer
from repro.config import identity_config, run_id
from repro.errors import ConfigError
from repro.kinds.classification import ClassificationSession
from repro.loop import TrainResult
from repro.precision import Precision, resolve_precision
from repro.runner import preflight, run


def tiny(data_root, *extra):
    return ["model=tiny-bert", "task=glue/sst2", "scale=smoke", f"data.root={data_root}", "data.max_train_samples=32",
            "data.max_eval_samples=16", "train.batch_size=8", "train.epochs=2", "train.learning_rate=1e-3", *extra]


def test_auto_on_cpu_follows_native_bf16_and_unknown_names_fail(compose, data_root):
    import repro.precision as precision

    with pytest.MonkeyPatch.context() as patch:  # by the CPU's bf16 hardware (AVX512_BF16 / AMX), not by guess
        patch.setattr(precision, "cpu_has_native_bf16", lambda: False)
        assert resolve_precision("auto", torch.device("cpu")).name == "fp32"
        patch.setattr(precision, "cpu_has_native_bf16", lambda: True)
        assert resolve_precision("auto", torch.device("cpu")).name == "bf16"
    assert resolve_precision("bf16", torch.device("cpu")).mixed
    with pytest.raises(ConfigError, match=r"^train.precision must be one of fp32, bf16, fp16, auto, got 'fp8'$"):
        preflight(compose(*tiny(data_root, "train.precision=fp8")))


def test_fp32_default_keeps_the_run_id_and_other_precisions_change_it(compose, data_root):
    fp32 = compose(*tiny(data_root))
    assert "precision" not in identity_config(fp32)["train"] and "compile" not in identity_config(fp32)["train"]
    ids = {run_id(compose(*tiny(data_root, f"train.precision={p}"))) for p in ("fp32", "bf16", "fp16")}
    assert len(ids) == 3 and run_id(fp32) in ids


def test_auto_takes_the_run_id_of_the_precision_it_picks(compose, data_root, monkeypatch):
    """`auto` is not a computation: on a CPU without native bf16 its runs are fp32 runs (same id, so a machine
    change reuses them), on one with it they are bf16 runs."""
    import repro.precision as precision

    auto = compose(*tiny(data_root, "train.precision=auto"))
    for native, picked in ((False, "fp32"), (True, "bf16")):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda native=native: native)
        assert run_id(auto) == run_id(compose(*tiny(data_root, f"train.precision={picked}")))
    assert auto.train.precision == "auto"  # the config itself still says what was asked


@pytest.mark.parametrize("method", ["lora", "full_ft"])
def test_bf16_trains_on_cpu_with_fp32_weights(compose, data_root, tmp_path, monkeypatch, method):
    seen = {"logits": set(), "weights": set()}
    loss = ClassificationSession.loss

    def recording_loss(self, net, batch):
        out = net(**batch)
        seen["logits"].add(out.logits.dtype)
        seen["weights"].update(p.dtype for p in net.parameters() if p.requires_grad)
        return loss(self, net, batch)

    monkeypatch.setattr(ClassificationSession, "loss", recording_loss)
    record = run(compose(*tiny(data_root, f"method={method}", "train.precision=bf16", "train.epochs=1",
                               f"output_root={tmp_path}")))
    assert record["status"] == "complete" and record["precision"] == "bf16" and record["optimizer_steps"] == 4
    assert seen == {"logits": {torch.bfloat16}, "weights": {torch.float32}}
    assert torch.isfinite(torch.tensor(record["epochs"][0]["train_loss"]))


def test_fp16_resume_continues_the_loss_scale_and_matches_uninterrupted(compose, data_root, tmp_path, monkeypatch,
                                                                        capsys):
    # a scaler that grows every step (torch's default waits 2000), so that its state after a few steps differs from
    # a fresh one's; the scalers each run makes are kept for comparison
    scalers = []

    def growing_scaler(self):
        scalers.append(torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16", growth_interval=1))
        return scalers[-1]

    monkeypatch.setattr(Precision, "grad_scaler", growing_scaler)
    overrides = tiny(data_root, "method=full_ft", "train.precision=fp16", "train.checkpoint_every_steps=3")
    reference = run(compose(*overrides, f"output_root={tmp_path / 'reference'}"))
    interrupted = compose(*overrides, f"output_root={tmp_path / 'interrupted'}")
    loss, calls = ClassificationSession.loss, {"n": 0}

    def failing_loss(self, net, batch):
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 2, batch 2 (4 batches an epoch): after the epoch-end checkpoint at step 4
            raise RuntimeError("simulated crash")
        return loss(self, net, batch)

    monkeypatch.setattr(ClassificationSession, "loss", failing_loss)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(interrupted)
    saved = Checkpointer(tmp_path / "interrupted" / run_id(interrupted), 0).load(allowed=[TrainResult])["scaler"]
    assert saved["scale"] != 2.0 ** 16, saved  # a state a fresh scaler would not have
    monkeypatch.setattr(ClassificationSession, "loss", loss)
    capsys.readouterr()
    resumed = run(interrupted)
    assert "resumed from checkpoint: epoch 2, batch 0, step 4" in capsys.readouterr().out
    assert scalers[-1].state_dict() == scalers[0].state_dict()  # resumed run ends where the uninterrupted one did
    assert resumed["precision"] == reference["precision"] == "fp16"
    assert resumed["optimizer_steps"] == reference["optimizer_steps"] == 8
    assert [e["train_loss"] for e in resumed["epochs"]] == [e["train_loss"] for e in reference["epochs"]]
    assert resumed["best_metrics"] == reference["best_metrics"]


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-roberta", "tiny-gpt2", "tiny-llama", "tiny-t5", "tiny-bart"])
def test_models_attend_through_pytorch_sdpa(model):
    """Every model family the harness builds runs PyTorch's scaled_dot_product_attention (flash / memory-efficient
    kernels on GPUs), not the eager softmax(QK^T)V: nothing in the loaders may force `attn_implementation=eager`."""
    from repro.config import load_group_config
    from repro.generation.models import load_lm
    from repro.models import load_model

    cfg = load_group_config("model", model)
    built = load_model(cfg, 2) if model in ("tiny-bert", "tiny-roberta") else load_lm(cfg)
    assert built.config._attn_implementation == "sdpa"
