"""The planner: counts on the meta device agree with the paper's formulas, disagreements with the printed
|Theta| are flagged (not adjusted), sweeps expand as Hydra's multirun would, bad input is one line and exit 2."""

from __future__ import annotations

import json

import pytest

from repro.plan import check_params, main, plan

SWEEPS = __import__("pathlib").Path(__file__).resolve().parent.parent / "sweeps"


def test_lora_and_adapter_counts_follow_the_paper_formulas():
    runs = {r.paper_row: r for r in plan(["+experiment=table2/roberta_large_lora,table2/roberta_large_adapter_h_0_8m_houlsby,"
                                          "table2/roberta_large_adapter_p_3m_houlsby", "task=glue/rte", "seed=0"])}
    L, d = 24, 1024
    assert runs["roberta_large.lora"].trainable == 2 * (L * 2) * d * 8  # 2 x L_hat x d_model x r, q and v
    # adapters: L_hat x (2 d r + r + d) (+ 2 L_LN d, none here); Adapter^H has two per layer
    assert runs["roberta_large.adapter_h.0.8M.houlsby"].trainable == 2 * L * (2 * d * 8 + 8 + d)
    assert runs["roberta_large.adapter_p.3.0M.houlsby"].trainable == L * (2 * d * 64 + 64 + d)


def test_printed_params_are_checked_at_their_precision():
    runs = {r.paper_row + str(r.sizes.get("r")): r for r in
            plan(["+experiment=table2/roberta_base_lora,table2/deberta_xxl_lora,table2/deberta_xxl_lora_official",
                  "task=glue/rte", "seed=0"])}
    assert runs["roberta_base.lora8"].params_check == "ok"
    assert runs["deberta_xxl.lora8"].params_check == "MISMATCH"  # Table 10's r = 8 gives 2.4M, printed 4.7M
    assert runs["deberta_xxl.lora16"].params_check == "ok"
    assert check_params(3_171_840, "3.0M") == "MISMATCH" and check_params(811_392, "0.8M") == "ok"
    assert check_params(10, None) == "-"


def test_experiment_seeds_and_comma_lists_expand_like_multirun():
    runs = plan(["+experiment=table2/roberta_base_lora", "task=glue/rte,glue/mrpc", "model=tiny-bert"])
    assert sorted((r.task, r.seed) for r in runs) == sorted((t, s) for t in ("rte", "mrpc") for s in range(5))


def test_memory_estimate_parts():
    (run,) = plan(["task=glue/rte", "model=tiny-bert", "method=full_ft"])
    parts = run.memory_parts_gib
    assert parts["weights"] * 2**30 == 4 * run.total
    assert parts["adamw"] == 2 * parts["grads"] and parts["activations"] > 0
    assert run.memory_gib == pytest.approx(sum(parts.values()))


def test_activations_count_eager_cpu_memory_on_a_cpu_and_fused_kernels_on_a_gpu():
    from repro.plan import ACT_EAGER_CPU_FACTOR

    (cpu,) = plan(["task=glue/rte", "model=tiny-bert", "method=lora", "train.device=cpu"])
    (gpu,) = plan(["task=glue/rte", "model=tiny-bert", "method=lora", "train.device=cuda"])
    assert cpu.memory_parts_gib["activations"] == pytest.approx(
        ACT_EAGER_CPU_FACTOR * gpu.memory_parts_gib["activations"], rel=1e-6)
    assert cpu.memory_parts_gib["adamw"] == gpu.memory_parts_gib["adamw"]


def test_table3_rows_are_counted_on_the_decoders_and_checked_against_the_paper():
    runs = {r.paper_row: r for r in plan(["+experiment=table3/gpt2_medium_lora,table3/gpt2_medium_adapter_l_0_37m,"
                                          "table3/gpt2_large_adapter_l_23m", "task=e2e", "seed=0", "scale=paper"])}
    assert runs["gpt2_medium.lora"].trainable == 2 * (24 * 2) * 1024 * 4  # own A and B for q and v in c_attn
    assert runs["gpt2_medium.lora"].params_check == "MISMATCH"  # the paper prints 0.35M for 0.39M
    assert runs["gpt2_medium.adapter_l.0.37M"].params_check == "ok"
    assert runs["gpt2_large.adapter_l.23.00M"].trainable == 36 * (2 * 1280 * 248 + 248 + 1280 + 2 * 1280)
    (webnlg,) = plan(["+experiment=table3/gpt2_medium_adapter_l_11m", "task=webnlg", "seed=0"])
    assert webnlg.paper_row == "gpt2_medium.adapter_l.11M" and webnlg.params_check == "ok"  # Table 14's rounding


def test_variant_counts_and_qlora_memory_next_to_lora():
    runs = {r.method: r for r in plan(["task=glue/rte", "model=roberta-base", "method=lora,dora,adalora,qlora"])}
    L, d = 12, 768
    assert runs["lora"].trainable == runs["qlora"].trainable == 2 * (L * 2) * d * 8
    assert runs["dora"].trainable == runs["lora"].trainable + L * 2 * d  # one magnitude per output feature
    assert runs["adalora"].trainable == L * 2 * (2 * d * 8 + 8)  # P, Q and E at init_r = LoRA's r
    assert runs["adalora"].trainable - runs["lora"].trainable == L * 2 * 8  # equal budget but for E
    lora, qlora = runs["lora"].memory_parts_gib, runs["qlora"].memory_parts_gib
    # 4 bits (4.127 with the block constants) for the encoder's frozen Linear weights only: the embeddings, norms,
    # biases, the head (classifier.dense, classifier.out_proj) and the trained LoRA matrices stay in fp32
    linear = L * (4 * d * d + 2 * d * 4 * d)
    fp32 = runs["lora"].total - linear
    assert qlora["weights"] * 2**30 == pytest.approx(linear * (4 + 8 / 64 + 32 / (64 * 256)) / 8 + fp32 * 4)
    assert lora["weights"] / 3 < qlora["weights"] < lora["weights"] / 2  # RoBERTa-base's 39M embedding weights
    assert qlora["activations"] == pytest.approx(lora["activations"] / 2) and qlora["adamw"] == lora["adamw"]


def test_head_follows_the_models_pooling():
    """all-MiniLM-L6-v2 reads the mean through a pass-through pooler (`pooling: mean`): its head is the classifier
    alone, as training counts it; RoBERTa keeps its own two-layer head on the first token."""
    minilm = plan(["task=glue/sst2", "model=minilm-l6", "method=lora"])[0]
    assert minilm.head == 384 * 2 + 2
    roberta = plan(["task=glue/sst2", "model=roberta-base", "method=lora"])[0]
    assert roberta.head == (768 * 768 + 768) + (768 * 2 + 2)


def test_sweep_file_and_json_output(capsys):
    main(["-s", str(SWEEPS / "rank.yaml"), "task=glue/rte", "model=tiny-bert", "scale=smoke", "+format=json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 15
    assert {(tuple(r["sizes"]["targets"]), r["sizes"]["r"]) for r in rows} == {
        (t, r) for t in (("q",), ("q", "v"), ("q", "k", "v", "o")) for r in (1, 2, 4, 8, 64)}
    assert all(r["trainable"] == 2 * 2 * len(r["sizes"]["targets"]) * 32 * r["sizes"]["r"] for r in rows)


def test_table_output_flags_mismatch(capsys):
    main(["+experiment=table2/roberta_large_adapter_h_6m_houlsby", "task=glue/rte", "seed=0"])
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "6.0M" in out and "flagged" in out


@pytest.mark.parametrize("argv", [["method=nope"], ["+experiment=table2/nope"], ["task=glue/rte", "+format=xml"],
                                  ["-s", "sweeps/nope.yaml"], ["method.r=0"]])
def test_bad_input_is_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
