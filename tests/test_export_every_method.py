"""Every method of the registry (a new one too) exports and reloads to its run's logits; the methods that
tests/test_export.py checks in their own settings are left out (a file of its own: test_export.py would otherwise be
the suite's longest)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from repro import export
from repro.methods import METHODS
from repro.runner import run
from tests.test_export import GLUE, TEXTS, _in_harness_logits, _run_dir

# methods whose export tests/test_export.py checks in its own setting (QLoRA needs a pre-trained model, LongLoRA a
# decoder), and `base`: the pre-trained model untouched, for long-context evaluation only (nothing trained to export)
EXPORT_TESTED_ELSEWHERE = {"lora", "adalora", "vera", "ln_tuning", "hra", "prefix_embed", "prefix_layer", "qlora",
                           "adapter_h", "longlora", "base"}
TINY_BERT_FIT = {"adapter_d": ("method.drop_lowest_layers=1",)}  # AdapterDrop's default drops more than 2 layers


@pytest.mark.parametrize("method", sorted(set(METHODS) - EXPORT_TESTED_ELSEWHERE))
def test_every_other_method_exports_and_reloads_to_the_runs_logits(compose, data_root, tmp_path, method):
    """Every method of the registry (a new one too) exports: full and partial fine-tuning, BitFit, the other LoRA
    variants and peft tuners merged, the other adapters with load_exported; reloaded, the run's logits."""
    record = run(compose(f"data.root={data_root}", *GLUE, f"method={method}", *TINY_BERT_FIT.get(method, ()),
                         f"output_root={tmp_path / 'runs'}"))
    out = tmp_path / "exported"
    summary = export.main([str(_run_dir(record)), "--out", str(out)])
    assert summary["max_abs_logit_diff"] <= 1e-5
    enc = AutoTokenizer.from_pretrained(out)(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        got = export.load_exported(out)(**enc).logits
    assert torch.allclose(got, _in_harness_logits(_run_dir(record), enc), atol=1e-5)
