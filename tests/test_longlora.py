"""LongLoRA (method=longlora) and task=long_context: S²-Attn against full attention and its explicit mask, the
trainable set and its count (tiny model and the planner's Llama-2 7B), position interpolation, passkey prompts
and scoring, and a tiny run end to end that resumes exactly after a crash."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM

from repro.config import CONF_DIR
from repro.longcontext import attention as s2
from repro.longcontext.passkey import extract_digits, make_prompt, passkey_accuracy
from repro.longcontext.positions import interpolate_positions, interpolation_factor

TINY = OmegaConf.load(CONF_DIR / "model" / "tiny-llama.yaml")
LONGLORA = OmegaConf.merge(OmegaConf.load(CONF_DIR / "method" / "lora.yaml"),
                           {k: v for k, v in OmegaConf.load(CONF_DIR / "method" / "longlora.yaml").items()
                            if k != "defaults"})
TASK = OmegaConf.load(CONF_DIR / "task" / "long_context.yaml")


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    kwargs = OmegaConf.to_container(TINY.config)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(kwargs.pop("model_type"), **kwargs),
                                             attn_implementation="sdpa")
    return model.eval()


def test_one_group_is_full_attention_exactly_and_groups_change_it():
    model, ids = tiny_model(), torch.randint(0, 1000, (2, 32))
    with torch.no_grad():
        full = model(input_ids=ids).logits
        s2.use_s2_attn(model, 1.0)  # one group: nothing to split or shift
        assert s2.attention_of(model) == s2.S2_ATTN
        assert torch.equal(model(input_ids=ids).logits, full)
        s2.use_s2_attn(model, 0.25)  # 4 groups of 8, half the heads shifted
        grouped = model(input_ids=ids).logits
        assert not torch.allclose(grouped, full, atol=1e-4)
        with s2.full_attention(model):  # evaluation: full attention, restored afterwards
            assert torch.equal(model(input_ids=ids).logits, full)
        assert s2.attention_of(model) == s2.S2_ATTN


def test_shift_pattern_mask_on_eight_tokens():
    unshifted, shifted = s2.reference_mask(8, 4, False), s2.reference_mask(8, 4, True)
    attends = lambda mask, i: mask[i].nonzero().flatten().tolist()  # noqa: E731
    assert attends(unshifted, 5) == [4, 5] and attends(unshifted, 3) == [0, 1, 2, 3]
    # shifted by half a group: groups {2,3,4,5} and {6,7,0,1}; the last one wraps around the sequence
    assert attends(shifted, 4) == [2, 3, 4] and attends(shifted, 6) == [6]
    assert attends(shifted, 0) == [0, 6, 7]  # the documented wrap: token 0 sees the end of the sequence
    assert attends(shifted, 1) == [0, 1, 6, 7]


def test_s2_attention_equals_masked_attention_per_head():
    torch.manual_seed(0)
    batch, heads, kv_heads, seq, dim, size = 2, 4, 2, 16, 8, 4
    q = torch.randn(batch, heads, seq, dim)
    k, v = torch.randn(batch, kv_heads, seq, dim), torch.randn(batch, kv_heads, seq, dim)
    module = torch.nn.Module()
    module.config = type("C", (), {s2.RATIO_ATTR: size / seq})()
    out, _ = s2.s2_attention(module, q, k, v, None, scaling=dim ** -0.5)
    kk, vv = k.repeat_interleave(heads // kv_heads, 1), v.repeat_interleave(heads // kv_heads, 1)
    scores = q @ kk.transpose(-1, -2) * dim ** -0.5
    masks = torch.stack([s2.reference_mask(seq, size, h >= heads // 2) for h in range(heads)])
    expected = (scores.masked_fill(~masks, -math.inf).softmax(-1) @ vv).transpose(1, 2)
    assert out.shape == (batch, seq, heads, dim)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_s2_attention_refuses_bad_groups_and_padding():
    from repro.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be split"):
        s2.group_size(30, 0.25)
    module = torch.nn.Module()
    module.config = type("C", (), {s2.RATIO_ATTR: 0.25})()
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(ConfigError, match="padding mask"):
        s2.s2_attention(module, q, q, q, torch.ones(1, 1, 8, 8, dtype=torch.bool))


def test_trainable_set_is_lora_embeddings_and_norms_and_counted():
    from repro.generation.methods import apply_decoder_method
    from repro.params import count_parameters

    adapted = apply_decoder_method(tiny_model(), LONGLORA, TINY)
    trainable = {n for n, p in adapted.model.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if ".lora_" in n}
    assert {n.split(".")[-4] for n in lora} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    rest = trainable - lora
    assert any(n.endswith("embed_tokens.weight") for n in rest)
    assert all(n.endswith(("embed_tokens.weight", "layernorm.weight", "model.norm.weight")) for n in rest)
    assert len(rest) == 1 + 2 * TINY.n_layers + 1
    d, kv, r, vocab, layers = 32, 2 * 8, LONGLORA.r, TINY.config.vocab_size, TINY.n_layers
    per_layer = r * ((d + d) + (d + kv) + (d + kv) + (d + d))  # q, k, v, o: r x (in + out)
    expected = layers * per_layer + vocab * d + (2 * layers + 1) * d
    assert count_parameters(adapted.model, []).trainable == expected
    without = apply_decoder_method(tiny_model(), OmegaConf.merge(LONGLORA, {"train_embeddings": False,
                                                                             "train_norms": False}), TINY)
    assert count_parameters(without.model, []).trainable == layers * per_layer


def test_planner_counts_llama2_7b_longlora_without_download():
    from repro.plan import plan

    [run] = plan(["task=long_context", "model=llama2-7b", "method=longlora", "task.target_context=8192",
                  "task.eval_lengths=[8192]"])
    d, layers, vocab = 4096, 32, 32000
    lora = layers * 4 * 8 * (d + d)  # r = 8 on q, k, v, o (no grouped-query attention in Llama-2 7B)
    assert run.trainable == lora + vocab * d + (2 * layers + 1) * d
    assert run.total > 6.7e9 and run.sizes["s2_attn"] is True
    [full] = plan(["task=long_context", "model=llama2-7b", "method=longlora", "task.target_context=8192",
                   "task.eval_lengths=[8192]", "method.s2_attn=false"])
    assert full.memory_parts_gib["activations"] > run.memory_parts_gib["activations"]


def test_interpolation_divides_positions_by_the_factor():
    assert interpolation_factor(8192, 4096) == 2.0 and interpolation_factor(10000, 4096) == 3.0
    assert interpolation_factor(2048, 4096) == 1.0
    plain, scaled = tiny_model(), tiny_model()
    interpolate_positions(scaled, 4.0, TINY.rotary_embedding)
    assert scaled.config.rope_parameters["rope_type"] == "linear"
    torch.testing.assert_close(scaled.model.rotary_emb.inv_freq, plain.model.rotary_emb.inv_freq / 4)
    x = torch.zeros(1, 1)
    positions = torch.arange(0, 64, 4)[None]
    cos_s, sin_s = scaled.model.rotary_emb(x, positions)
    cos_p, sin_p = plain.model.rotary_emb(x, positions // 4)
    torch.testing.assert_close(cos_s, cos_p) and torch.testing.assert_close(sin_s, sin_p)


@pytest.fixture(scope="module")
def tokenizer():
    from repro.generation.models import load_lm_tokenizer

    return load_lm_tokenizer(TINY)


def test_passkey_prompts_are_deterministic_fill_the_length_and_hide_the_key(tokenizer):
    texts = TASK.passkey
    a, b = make_prompt(tokenizer, 256, 7, texts), make_prompt(tokenizer, 256, 7, texts)
    assert a == b
    filler = len(tokenizer.encode(" " + texts.filler, add_special_tokens=False))
    assert 256 - filler < len(a.ids) <= 256
    text = tokenizer.decode(a.ids)
    assert text.count(f"The pass key is {a.answer}.") == 1 and text.endswith(texts.question)
    depths = {make_prompt(tokenizer, 256, seed, texts).depth for seed in range(8)}
    assert len(depths) > 3 and all(0 <= x <= 1 for x in depths)
    assert extract_digits(" 12345. Remember") == "12345" and extract_digits(" none") == ""


class Oracle(torch.nn.Module):
    """Generates the key hidden in the prompt (or a wrong one): scores the scoring."""

    def __init__(self, tokenizer, wrong: bool = False):
        super().__init__()
        self.tokenizer, self.wrong = tokenizer, wrong

    def generate(self, input_ids, **kwargs):
        text = self.tokenizer.decode(input_ids[0])
        key = extract_digits(text.split("The pass key is", 1)[1])
        answer = str(int(key) + 1) if self.wrong else key
        new = self.tokenizer.encode(" " + answer + ".", add_special_tokens=False)
        return torch.cat([input_ids, torch.tensor([new])], dim=1)


def test_passkey_scoring_is_exact_match(tokenizer):
    device = torch.device("cpu")
    assert passkey_accuracy(Oracle(tokenizer), tokenizer, 128, TASK.passkey, 3, 0, device) == 1.0
    assert passkey_accuracy(Oracle(tokenizer, wrong=True), tokenizer, 128, TASK.passkey, 3, 0, device) == 0.0


RUN = ("task=long_context", "model=tiny-llama", "method=longlora", "task.target_context=128",
       "task.eval_lengths=[64,128]", "task.eval_chunks=1", "task.passkey.trials=1", "data.max_train_samples=10",
       "train.batch_size=2", "train.epochs=2", "train.checkpoint_every_steps=3", "+model.original_context=64",
       "train.learning_rate=1e-3")


def test_tiny_longlora_runs_end_to_end_and_resumes_exactly(compose, data_root, tmp_path, monkeypatch, capsys):
    from repro.kinds.long_context import LongContextSession
    from repro.runner import run

    reference = run(compose(*RUN, f"data.root={data_root}", f"output_root={tmp_path / 'reference'}"))
    assert reference["status"] == "complete" and reference["optimizer_steps"] == 10
    info = reference["long_context"]
    assert info["interpolation_factor"] == 2.0 and info["s2_attn"] is True and info["group_size_ratio"] == 0.25
    assert info["eval_lengths"] == [64, 128] and info["train_chunks"] == 10
    assert {"ppl@64", "ppl@128", "passkey@64", "passkey@128", "neg_nll"} <= set(reference["best_metrics"])
    assert reference["base_metrics"]["nll@128"] > reference["best_metrics"]["nll@128"]  # it learned something
    assert reference["params"]["trainable"] > TINY.config.vocab_size * TINY.d_model

    interrupted = compose(*RUN, f"data.root={data_root}", f"output_root={tmp_path / 'interrupted'}")
    loss, calls = LongContextSession.loss, {"n": 0}

    def failing_loss(self, net, batch):
        calls["n"] += 1
        if calls["n"] == 8:  # epoch 2, batch 3: after the step-6 checkpoint
            raise RuntimeError("simulated crash")
        return loss(self, net, batch)

    monkeypatch.setattr(LongContextSession, "loss", failing_loss)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(interrupted)
    monkeypatch.setattr(LongContextSession, "loss", loss)
    capsys.readouterr()
    resumed = run(interrupted)
    assert "resumed from checkpoint: epoch 2, batch 1, step 6" in capsys.readouterr().out
    assert resumed["optimizer_steps"] == 10
    assert resumed["best_metrics"] == pytest.approx(reference["best_metrics"], rel=1e-6)
    assert resumed["base_metrics"] == reference["base_metrics"]
    assert [e["train_loss"] for e in resumed["epochs"]] == pytest.approx([e["train_loss"] for e in reference["epochs"]])


def test_base_method_evaluates_without_training_and_only_on_long_context(compose, data_root, tmp_path):
    from repro.config import validate
    from repro.errors import ConfigError
    from repro.runner import run

    record = run(compose(*RUN, "method=base", "task.position_interpolation=false", f"data.root={data_root}"))
    assert record["status"] == "complete" and record["optimizer_steps"] == 0 and record["params"]["trainable"] == 0
    assert record["long_context"]["interpolation_factor"] == 1.0 and record["best_epoch"] == 0
    assert record["base_metrics"] == record["best_metrics"] and "ppl@128" in record["best_metrics"]
    with pytest.raises(ConfigError, match="method base runs on task kinds long_context only"):
        validate(compose("task=glue/sst2", "method=base"))


def _record(row: str, seed: int, nll: float, trainable: int = 1000, model_context: int = 64) -> dict:
    metrics = {"nll@64": nll + 0.5, "ppl@64": math.exp(nll + 0.5), "nll@128": nll, "ppl@128": math.exp(nll),
               "passkey@64": 0.5, "passkey@128": 0.0, "neg_nll": -nll}
    return {"status": "complete", "task": "long_context", "model": "tiny-llama", "scale": "cpu", "seed": seed,
            "config": {"paper_row": row}, "params": {"trainable": trainable}, "best_metrics": metrics,
            "long_context": {"target_context": 128, "original_context": 64, "model_context": model_context,
                             "interpolation_factor": 2.0,
                             "s2_attn": row == "longlora.longlora", "eval_lengths": [64, 128], "source": "local"},
            "trivial_baseline": {"nll@64": 9.0, "ppl@64": math.exp(9.0), "nll@128": 9.0, "ppl@128": math.exp(9.0),
                                 "passkey@64": 2e-5, "passkey@128": 2e-5}}


def test_comparison_table_has_rows_baseline_and_verdicts(tmp_path):
    import json

    from repro.longcontext.tables import BASELINE_ROW, long_context_runs, write

    nll = {"longlora.lora_qv": (4.0, 4.02, 4.01, 4.03), "longlora.lora_embed_norm": (3.5, 3.52, 3.51, 3.53),
           "longlora.longlora": (3.51, 3.53, 3.52, 3.54)}  # 4 seeds: 2 could not decide (6 arrangements, p >= 1/6)
    for row, values in nll.items():
        for seed, value in enumerate(values):
            (tmp_path / "runs" / f"{row}{seed}").mkdir(parents=True)
            (tmp_path / "runs" / f"{row}{seed}" / "result.json").write_text(json.dumps(_record(row, seed, value)))
    records = long_context_runs(tmp_path / "runs")
    assert len(records) == 12
    write(records, tmp_path / "tables")
    md = (tmp_path / "tables" / "longlora.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("|")]
    assert "LoRA (W_q, W_v)" in lines[2] and "S²-Attn" in lines[4] and BASELINE_ROW in lines[5]
    ppl = [math.exp(v) for v in nll["longlora.lora_qv"]]
    mean, std = statistics.mean(ppl), statistics.stdev(ppl)
    assert f"{mean:.2f} ± {std:.2f} [4]" in lines[2]  # perplexity at 128: mean ± std over seeds [n]
    assert "embeddings and norms make LoRA better at context extension (LongLoRA Sec. 3.3): **holds**" in md  # 4 seeds
    assert "close to full fine-tuning (abstract, Sec. 4): **inconclusive** (no runs of longlora.full_ft)" in md
    assert "pre-trained context 64 extended to 128 (task=long_context" in md


def test_a_setting_within_the_models_own_context_judges_no_extension_claim(tmp_path):
    """SmolLM2 was pre-trained at 8k: declaring 512 and training at 1,024 compresses positions but extends nothing."""
    from repro.longcontext.tables import write

    records = [_record(row, seed, value + seed / 100, model_context=8192)
               for row, value in (("longlora.lora_qv", 4.0), ("longlora.lora_embed_norm", 3.5)) for seed in range(4)]
    write(records, tmp_path)
    md = (tmp_path / "longlora.md").read_text()
    assert "declared pre-trained context 64 extended to 128, but the model was pre-trained at 8192" in md
    assert ("better at context extension (LongLoRA Sec. 3.3): **inconclusive** (not judged: this setting does not "
            "extend past the model's pre-trained context") in md


def test_every_comparison_row_composes_validates_and_has_a_paper_row(compose):
    from repro.config import group_choices, validate
    from repro.paper import paper_data

    rows = [e for e in group_choices("experiment") if e.startswith("longlora/") and "/_" not in e]
    paper_rows = paper_data("longlora")["rows"]
    assert len(rows) == len(paper_rows) == 6
    for experiment in rows:
        cfg = compose(f"+experiment={experiment}", "scale=cpu")
        OmegaConf.resolve(cfg)
        validate(cfg)
        assert cfg.paper_row in paper_rows and cfg.task.name == "long_context" and cfg.model.name == "smollm2-135m"
        assert cfg.task.target_context in cfg.task.eval_lengths and cfg.train.batch_size == 1
        assert len(cfg.seeds) >= 2 and cfg.train.learning_rate > 0
    longlora = compose("+experiment=longlora/longlora", "scale=cpu")
    assert longlora.method.s2_attn and longlora.model.original_context == 512
    assert not compose("+experiment=longlora/lora_embed_norm", "scale=cpu").method.s2_attn


def test_paper_setting_gives_every_row_llama2_at_8k_and_the_planner_counts_it(compose):
    """`+longlora_scale=paper` turns each cpu-scale row into the paper's setting (Llama-2 from its own 4k context to
    the target, the released recipe's constant schedule); a `model=` on the command line still wins."""
    from repro.config import group_choices, validate
    from repro.plan import plan

    rows = [e for e in group_choices("experiment") if e.startswith("longlora/") and "/_" not in e]
    for experiment in rows:
        cfg = compose(f"+experiment={experiment}", "scale=paper", "+longlora_scale=paper")
        OmegaConf.resolve(cfg)
        validate(cfg)
        assert cfg.model.name == "llama2-7b" and cfg.model.original_context is None
        assert cfg.data.max_seq_len == cfg.task.target_context == max(cfg.task.eval_lengths)
        assert cfg.train.lr_schedule == "constant" and cfg.task.source == "hub"
        # whole optimizer steps of the paper's effective batch in the one epoch
        assert cfg.train.epochs == 1 and cfg.data.max_train_samples % (cfg.train.batch_size * cfg.train.grad_accum_steps) == 0
    assert compose("+experiment=longlora/longlora", "scale=paper", "+longlora_scale=paper",
                   "model=llama2-13b").model.name == "llama2-13b"
    run = plan(["+experiment=longlora/longlora", "scale=paper", "+longlora_scale=paper"])[0]
    cpu = plan(["+experiment=longlora/longlora", "scale=cpu"])[0]
    assert run.total > 6.7e9 and run.trainable > 1e8 and cpu.total < 2e8
