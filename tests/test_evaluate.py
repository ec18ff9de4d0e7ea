"""`python -m repro.evaluate`: loralib checkpoints (the paper's released format) imported into the harness give
loralib's own logits on tiny models (a RoBERTa classifier with lora.Linear on query/value, a GPT-2 whose fused
c_attn is loralib's MergedLinear with q and v enabled); keys that do not fit stop with one line naming them; the
CLI scores an import on real SST-2 dev examples and writes a trained run's record plus `source: imported`; run and
peft adapter folders import too; tables show a "released checkpoint" row beside the reproduced one."""

from __future__ import annotations

import hashlib
import json

import loralib
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from repro import evaluate
from repro.errors import ReproError
from repro.export import rebuild_run
from repro.generation.models import load_lm
from repro.models import load_model
from repro.results import RESULT_FILE, read_result, write_json_atomic
from repro.runner import seed_everything

R, ALPHA = 4, 16
ROBERTA = ("model=tiny-roberta", "task=glue/sst2", "method=lora", f"method.alpha={ALPHA}", "train.device=cpu")
GPT2 = ("model=tiny-gpt2", "task=e2e", "method=lora", f"method.alpha={ALPHA}", "train.device=cpu")
ATOL = 1e-5


def _random_lora(module: nn.Module, generator: torch.Generator) -> None:
    """Non-zero A and B (B starts at zero in loralib), so the update changes the logits."""
    with torch.no_grad():
        for p in (module.lora_A, module.lora_B):
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


def loralib_roberta(num_labels: int = 2, seed: int = 0) -> nn.Module:
    """The harness's tiny RoBERTa (same seeded draw as the import builds) with loralib.Linear on query and value
    (the paper's NLU code) and a head that differs from the harness's fresh one."""
    from repro.config import load_group_config

    seed_everything(seed)
    model = load_model(load_group_config("model", "tiny-roberta"), num_labels)
    generator = torch.Generator().manual_seed(1)
    for layer in model.roberta.encoder.layer:
        attn = layer.attention.self
        for name in ("query", "value"):
            old = getattr(attn, name)
            new = loralib.Linear(old.in_features, old.out_features, r=R, lora_alpha=ALPHA, merge_weights=False)
            with torch.no_grad():
                new.weight.copy_(old.weight)
                new.bias.copy_(old.bias)
            _random_lora(new, generator)
            setattr(attn, name, new)
    with torch.no_grad():
        for p in model.classifier.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.5)
    return model.eval()


def loralib_gpt2(seed: int = 0) -> nn.Module:
    """The harness's tiny GPT-2 with each fused c_attn replaced by loralib's MergedLinear (enable_lora q and v,
    fan_in_fan_out as GPT-2's Conv1D), as in the paper's NLG code."""
    from repro.config import load_group_config

    seed_everything(seed)
    model = load_lm(load_group_config("model", "tiny-gpt2"))
    generator = torch.Generator().manual_seed(2)
    for block in model.transformer.h:
        old = block.attn.c_attn
        d_in, d_out = old.weight.shape
        new = loralib.MergedLinear(d_in, d_out, r=R, lora_alpha=ALPHA, enable_lora=[True, False, True],
                                   fan_in_fan_out=True, merge_weights=False)
        with torch.no_grad():
            new.weight.copy_(old.weight)  # (in, out), as the Conv1D stores it
            new.bias.copy_(old.bias)
        _random_lora(new, generator)
        block.attn.c_attn = new
    return model.eval()


def released(model: nn.Module, head: str | None) -> dict[str, torch.Tensor]:
    """What the paper's repository released: the LoRA matrices (loralib.lora_state_dict) and the task head."""
    state = loralib.lora_state_dict(model)
    if head:
        state.update({k: v for k, v in model.state_dict().items() if k.startswith(head + ".")})
    return {k: v.clone() for k, v in state.items()}


def _inputs(vocab: int, pad: int | None = None) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(5, vocab, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    if pad is not None:
        ids[1, 6:] = pad
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def _logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return model.eval()(**inputs).logits


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_loralib_roberta_classifier_imports_with_loralibs_logits(tmp_path):
    reference = loralib_roberta()
    path = tmp_path / "roberta_lora_sst2.bin"
    torch.save(released(reference, "classifier"), path)
    _, imported = evaluate.import_adapter(path, [*ROBERTA, f"output_root={tmp_path}/runs"])
    assert (imported.r, imported.alpha) == (R, ALPHA) and imported.cfg.method.r == R
    _check_logits(reference, imported, _inputs(30522, pad=0), "RoBERTa (loralib.Linear q, v + classifier)")


def _check_logits(reference, imported, inputs, what: str) -> None:
    """The imported model gives loralib's logits; a fresh (not imported) one does not: the import is what matters."""
    expected, got = _logits(reference, inputs), _logits(imported.adapted.model, inputs)
    print(f"{what}: max |logit difference| {_max_diff(got, expected):.3g}")
    assert torch.allclose(got, expected, atol=ATOL)
    fresh = evaluate.build_adapted(imported.cfg)
    assert _max_diff(_logits(fresh.model, inputs), expected) > 1e-2


def test_loralib_gpt2_merged_linear_maps_onto_split_q_and_v(tmp_path):
    reference = loralib_gpt2()
    path = tmp_path / "gpt2_lora_e2e.pt"
    # the NLG code's format: {"model_state_dict": ...}, here also with DDP's `module.` prefix
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in released(reference, None).items()}}, path)
    _, imported = evaluate.import_adapter(path, [*GPT2, f"output_root={tmp_path}/runs"])
    assert imported.r == R
    _check_logits(reference, imported, _inputs(49152),
                  "GPT-2 (MergedLinear enable_lora q, v -> split c_attn.q, c_attn.v)")


def test_a_full_state_dict_skips_base_weights_and_records_their_distance(tmp_path):
    reference = loralib_roberta()
    path = tmp_path / "full.bin"
    torch.save(reference.state_dict(), path)  # base weights too: the same draw, so distance 0
    _, imported = evaluate.import_adapter(path, [*ROBERTA, f"output_root={tmp_path}/runs"])
    base = imported.notes["file_base_weights"]
    assert base["keys"] > 10 and base["max_abs_diff_to_model"] == 0.0
    assert torch.allclose(_logits(imported.adapted.model, _inputs(30522)), _logits(reference, _inputs(30522)),
                          atol=ATOL)


def test_keys_that_do_not_fit_stop_with_one_line_naming_them(tmp_path, capsys):
    state = released(loralib_roberta(), "classifier")
    state["roberta.encoder.layer.0.attention.self.key.lora_A"] = torch.zeros(R, 32)  # key is not targeted
    state["roberta.encoder.layer.1.attention.self.value.lora_B"] = torch.zeros(48, R)  # wrong shape
    del state["classifier.out_proj.bias"]
    path = tmp_path / "bad.bin"
    torch.save(state, path)
    with pytest.raises(ReproError) as info:
        evaluate.import_adapter(path, [*ROBERTA, f"output_root={tmp_path}/runs"])
    message = str(info.value)
    assert "\n" not in message and "2 key(s) that do not fit" in message
    assert "roberta.encoder.layer.0.attention.self.key.lora_A" in message
    assert "roberta.encoder.layer.1.attention.self.value.lora_B (48, 4) (model: (32, 4))" in message
    assert "missing 1 the model needs: classifier.out_proj.bias" in message
    with pytest.raises(SystemExit) as exit_info:  # the command line: exit 2, one line on stderr, nothing written
        evaluate.main([str(path), *ROBERTA, f"output_root={tmp_path}/runs"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_gpt2_enable_lora_must_match_the_targets(tmp_path):
    """The file does not say which parts of c_attn were enabled, only how many: method.targets says which (the
    paper's q, v by default); a count that does not fit stops with one line."""
    path = tmp_path / "gpt2.pt"
    torch.save(released(loralib_gpt2(), None), path)
    with pytest.raises(ReproError, match=r"c_attn\.lora_B\[q\] \(64, 4\) \(model: \(32, 8\)\).*enable_lora must match"):
        evaluate.import_adapter(path, [*GPT2, "method.targets=[q]", f"output_root={tmp_path}/runs"])
    with pytest.raises(ReproError, match=r"c_attn\.lora_A has 8 rows, not a multiple of the 3 parts"):
        evaluate.import_adapter(path, [*GPT2, "method.targets=[q,k,v]", f"output_root={tmp_path}/runs"])


def test_loralib_file_needs_alpha_and_plain_lora(tmp_path):
    path = tmp_path / "roberta.bin"
    torch.save(released(loralib_roberta(), "classifier"), path)
    no_alpha = [o for o in ROBERTA if not o.startswith("method.alpha")]
    with pytest.raises(ReproError, match=r"does not store LoRA's alpha .*r=4 .*method\.alpha="):
        evaluate.import_adapter(path, [*no_alpha, f"output_root={tmp_path}/runs"])
    with pytest.raises(ReproError, match="use method=lora, not dora"):
        evaluate.import_adapter(path, [*ROBERTA, "method=dora", f"output_root={tmp_path}/runs"])
    with pytest.raises(ReproError, match="does not exist"):
        evaluate.detect(tmp_path / "none")


def test_cli_scores_an_import_on_sst2_and_writes_a_run_record(tmp_path, data_root):
    reference = loralib_roberta()
    path = tmp_path / "roberta_lora_sst2.bin"
    torch.save(released(reference, "classifier"), path)
    common = [f"data.root={data_root}", "data.max_eval_samples=16", f"output_root={tmp_path}/runs"]
    record = evaluate.main([str(path), *ROBERTA, *common])
    run_dir = tmp_path / "runs" / record["run_id"]
    assert "_imported_" in record["run_id"] and read_result(run_dir) == json.loads(json.dumps(record, default=str))
    assert record["source"] == "imported" and record["import_format"] == "loralib"
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (record["r"], record["alpha"], record["status"], record["best_epoch"]) == (R, ALPHA, "complete", 0)
    assert record["eval_examples"] == {"validation": 16} and 0 <= record["best_metrics"]["accuracy"] <= 1
    assert set(record["trivial_baseline"]) >= {"accuracy"} and record["optimizer_steps"] == 0
    lines = (run_dir / record["predictions"]["validation/epoch0"]).read_text().splitlines()
    assert len(lines) == 16
    # a run folder like a trained run's: its resolved config and a timestamped log from start to result
    assert OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml")) == record["config"]
    log = (run_dir / "train.log").read_text().splitlines()
    assert f" start {record['run_id']}: hardware " in log[0] and f" imported {path} (loralib" in log[-1]
    # the run folder holds the imported weights: it rebuilds to loralib's model
    _, adapted = rebuild_run(run_dir)
    inputs = _inputs(30522, pad=0)
    assert torch.allclose(_logits(adapted.model, inputs), _logits(reference, inputs), atol=ATOL)
    # ... and imports again, as a run folder and as a peft adapter folder, with the same metrics
    again = evaluate.main([str(run_dir), *common])
    assert again["import_format"] == "run" and again["best_metrics"] == record["best_metrics"]
    peft = evaluate.main([str(run_dir / "adapter"), *ROBERTA[:3], *common, "force=true"])
    assert peft["import_format"] == "peft" and (peft["r"], peft["alpha"]) == (R, ALPHA)
    assert peft["best_metrics"] == record["best_metrics"]
    assert again["run_id"] != record["run_id"]  # another file (adapter/adapter_model.safetensors): another id
    skipped = evaluate.main([str(path), *ROBERTA, *common])  # the same file and config: the same run
    assert skipped["run_id"] == record["run_id"]
    # a run like any other: re-scored from its saved predictions, exported as a plain transformers model
    from repro import export, score

    new, _ = score.rescore(read_result(run_dir), run_dir)
    assert (new["best_epoch"], new["best_metrics"]["accuracy"]) == (0, record["best_metrics"]["accuracy"])
    summary = export.main([str(run_dir), "--out", str(tmp_path / "plain")])
    assert summary["merged_lora"] and summary["max_abs_logit_diff"] <= export.TOLERANCE


def test_tables_show_a_released_checkpoint_row_beside_the_reproduced_one(tmp_path):
    from tests.test_tables import _record

    from repro.tables import build

    root = tmp_path / "runs"
    for seed, value in enumerate([0.80, 0.84, 0.82]):
        _record(root, f"lora_{seed}", row="roberta_base.lora", task="rte", paper_task="RTE", seed=seed,
                value=value, trainable=300, baseline=0.527)
    for seed, value in enumerate([0.81, 0.83]):
        _record(root, f"ft_{seed}", row="roberta_base.ft", task="rte", paper_task="RTE", seed=seed, value=value,
                trainable=100_000, baseline=0.527)
    _record(root, "released", row="roberta_base.lora", task="rte", paper_task="RTE", seed=0, value=0.70,
            trainable=300, baseline=0.527)
    record = read_result(root / "released")
    write_json_atomic(root / "released" / RESULT_FILE, {**record, "source": "imported"})
    build(root, tmp_path / "tables")
    md = (tmp_path / "tables" / "table2.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| roberta_base.lora")]
    assert [r.split("|")[1].strip() for r in rows] == ["roberta_base.lora", "roberta_base.lora [released checkpoint]"]
    assert "82.0±2.0 [3] / 86.6 (-4.6)" in rows[0] and "70.0 [1] / 86.6 (-16.6)" in rows[1]
    claims = md[md.index("Claims at this scale"):]
    assert "released" not in claims and "roberta_base.lora - roberta_base.ft" in claims


def test_generation_tables_show_the_released_row_after_its_paper_row(tmp_path):
    from tests.test_generation_tables import E2E, _record

    from repro.tables import build

    root = tmp_path / "runs"
    for seed, bleu in enumerate([60.0, 64.0]):
        _record(root, f"e2e_{seed}", task="e2e", paper_task="E2E", seed=seed, row="gpt2_medium.lora",
                metrics={**E2E, "BLEU": bleu})
    _record(root, "e2e_released", task="e2e", paper_task="E2E", seed=0, row="gpt2_medium.lora",
            metrics={**E2E, "BLEU": 70.0})
    record = read_result(root / "e2e_released")
    write_json_atomic(root / "e2e_released" / RESULT_FILE, {**record, "source": "imported"})
    build(root, tmp_path / "tables")
    lines = (tmp_path / "tables" / "table3.md").read_text().splitlines()
    labels = [line.split("|")[1].strip() for line in lines if line.startswith("| gpt2_medium.lora")]
    assert labels == ["gpt2_medium.lora", "gpt2_medium.lora [released checkpoint]"]
    released_row = next(line for line in lines if "[released checkpoint]" in line)
    assert "70.0 [1] / 70.4 (-0.4)" in released_row  # compared with the same paper row's value


def test_cli_decodes_and_scores_an_imported_gpt2_on_e2e(tmp_path, data_root):
    path = tmp_path / "gpt2_lora_e2e.pt"
    torch.save({"model_state_dict": released(loralib_gpt2(), None)}, path)
    record = evaluate.main([str(path), *GPT2, f"data.root={data_root}", "data.max_eval_samples=3",
                            "data.max_seq_len=64", "task.decode.num_beams=2", "task.decode.max_new_tokens=6",
                            "task.metric_set=samsum", "task.main_metric=ROUGE_L", f"output_root={tmp_path}/runs"])
    run_dir = tmp_path / "runs" / record["run_id"]
    assert record["source"] == "imported" and record["best_epoch"] == 0 and "ROUGE_L" in record["best_metrics"]
    assert "test/loss" in record["best_metrics"]
    outputs = [json.loads(line) for line in (run_dir / record["best_outputs"]["test"]).read_text().splitlines()]
    assert len(outputs) == 3 and all({"source", "hypothesis", "references"} <= set(o) for o in outputs)
