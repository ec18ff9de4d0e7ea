"""Encoder-decoders on the generation path (tiny random T5 and BART): LoRA adapts exactly the configured q/v
modules, the loss covers target tokens only, batched beam search equals one-at-a-time, and tiny runs through
`repro.runner.run` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from peft.tuners.lora import LoraLayer

from repro.config import load_group_config, method_misfit
from repro.data.generation import Pair
from repro.errors import ConfigError
from repro.generation import metrics
from repro.generation.causal import IGNORE
from repro.generation.decoding import beam_search
from repro.generation.methods import apply_decoder_method
from repro.generation.models import is_seq2seq, load_lm, load_lm_tokenizer
from repro.kinds.generation import text_format
from repro.methods import METHODS
from repro.runner import run

SEQ2SEQ = ["tiny-t5", "tiny-bart"]
PAIRS = [Pair("name : A | food : Thai", "A serves Thai food."),
         Pair("name : The Eagle | area : riverside | near : Burger King", "The Eagle is by the river."), Pair("x", "y")]


def _setup(model_name: str, method_name: str = "lora", **method_overrides):
    model_cfg = load_group_config("model", model_name)
    tokenizer = load_lm_tokenizer(model_cfg)
    torch.manual_seed(0)
    method_cfg = OmegaConf.merge(load_group_config("method", method_name), method_overrides)
    adapted = apply_decoder_method(load_lm(model_cfg), method_cfg, model_cfg)
    return model_cfg, tokenizer, adapted, text_format(model_cfg, tokenizer, adapted.model, 64, 16)


def _randomise_lora_b(model) -> None:
    """B = 0 at init leaves the base model's function; random B makes the adapted path matter."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)


@pytest.mark.parametrize("model_name", SEQ2SEQ)
def test_lora_adapts_exactly_the_configured_q_v_modules(model_name):
    model_cfg = load_group_config("model", model_name)
    assert is_seq2seq(model_cfg)
    base = load_lm(model_cfg)
    wanted = {model_cfg.matrices.q, model_cfg.matrices.v}
    expected = {n for n, _ in base.named_modules() if n.rsplit(".", 1)[-1] in wanted}
    # 2 encoder layers (self-attention) + 2 decoder layers (self- and cross-attention) = 6 attentions x {q, v}
    assert len(expected) == 12
    model = apply_decoder_method(base, load_group_config("method", "lora"), model_cfg).model
    adapted = {n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    assert adapted == expected
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert len(trainable) == 24 and all(".lora_A." in n or ".lora_B." in n for n in trainable)

    fmt = text_format(model_cfg, load_lm_tokenizer(model_cfg), model, 64, 16)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    model.train()
    fmt.loss(model, fmt.collate([fmt.encode(p) for p in PAIRS]), 0.1).backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == trainable
    optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)


@pytest.mark.parametrize("model_name", SEQ2SEQ)
def test_loss_covers_target_tokens_only(model_name):
    model_cfg, tokenizer, adapted, fmt = _setup(model_name)
    model = adapted.model.eval()  # no dropout: losses must be comparable
    _randomise_lora_b(model)
    features = [fmt.encode(p) for p in PAIRS]
    for pair, f in zip(PAIRS, features):  # labels: target tokens then eos, no source (it is the encoder's input)
        assert f["labels"] == tokenizer.encode(pair.target, add_special_tokens=False) + [tokenizer.eos_token_id]
        assert f["input_ids"] == tokenizer.encode(pair.source)
    batch = fmt.collate(features)
    assert (batch["labels"] == IGNORE).any() and (batch["attention_mask"] == 0).any()  # both sides padded
    with torch.no_grad():
        batched = fmt.loss(model, batch, 0.0)
        singles = [(fmt.loss(model, fmt.collate([f]), 0.0), len(f["labels"])) for f in features]
        # by hand: the decoder reads start + labels[:-1] and predicts each label
        f = features[0]
        decoder_ids = torch.tensor([[fmt.decoder_start] + f["labels"][:-1]])
        logits = model(input_ids=torch.tensor([f["input_ids"]]), decoder_input_ids=decoder_ids).logits[0]
        by_hand = F.cross_entropy(logits, torch.tensor(f["labels"]))
    # token-weighted mean of the unpadded examples: padding (encoder or labels) changes nothing
    expected = sum(loss * n for loss, n in singles) / sum(n for _, n in singles)
    assert torch.allclose(batched, expected, atol=1e-5)
    assert torch.allclose(singles[0][0], by_hand, atol=1e-5)
    assert fmt.n_targets(batch) == sum(n for _, n in singles)


@pytest.mark.parametrize("model_name", SEQ2SEQ)
def test_batched_beam_search_equals_one_at_a_time(model_name):
    model_cfg, tokenizer, adapted, fmt = _setup(model_name)
    _randomise_lora_b(adapted.model)
    decode = OmegaConf.create({"num_beams": 3, "length_penalty": 0.9, "no_repeat_ngram_size": 4,
                               "max_new_tokens": 8, "early_stopping": False, "batch_size": 4})
    prompts = [fmt.prompt(s) for s in [p.source for p in PAIRS] + ["a b c d"]]
    cpu = torch.device("cpu")
    batched = beam_search(adapted.model, tokenizer, prompts, decode, fmt.end_id, cpu)
    single = beam_search(adapted.model, tokenizer, prompts, decode, fmt.end_id, cpu, batch_size=1)
    assert batched == single and any(batched)
    # generate returns decoder tokens only: the start token, then at most max_new_tokens new ones
    ids = torch.tensor([prompts[0]])
    out = adapted.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, num_beams=1,
                                 do_sample=False)
    assert out[0, 0].item() == fmt.decoder_start and out.shape[1] <= 6


@pytest.mark.parametrize("method_name", ["prefix_embed", "prefix_layer"])
def test_prefix_methods_are_decoder_only(method_name):
    model_cfg = load_group_config("model", "tiny-t5")
    with pytest.raises(ConfigError, match=f"{method_name} is implemented for decoder-only models; tiny-t5"):
        apply_decoder_method(load_lm(model_cfg), load_group_config("method", method_name), model_cfg)


# T5 has no bias vectors, so BitFit has nothing to train there; prefix methods are decoder-only; QLoRA needs a
# pre-trained checkpoint
@pytest.mark.parametrize("model_name, method_name", [
    (model, method) for model in SEQ2SEQ for method in sorted(METHODS)
    if method not in ("prefix_embed", "prefix_layer", "qlora") and (model, method) != ("tiny-t5", "bitfit")
    and not method_misfit(load_group_config("method", method), load_group_config("model", model), "generation")])
def test_every_other_method_trains(model_name, method_name):
    overrides = {"drop_lowest_layers": 1} if method_name == "adapter_d" else {}  # the tiny models have 2 layers
    _, _, adapted, fmt = _setup(model_name, method_name, **overrides)
    adapted.model.train()
    fmt.loss(adapted.model, fmt.collate([fmt.encode(p) for p in PAIRS]), 0.0).backward()
    trainable = [p for p in adapted.model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)


def test_lm_key():
    assert not is_seq2seq(load_group_config("model", "tiny-gpt2"))  # decoder-only configs have no such key
    assert is_seq2seq(load_group_config("model", "t5-base")) and is_seq2seq(load_group_config("model", "bart-base"))
    cfg = OmegaConf.merge(load_group_config("model", "tiny-t5"), {"lm": "encoder"})
    with pytest.raises(ConfigError, match="tiny-t5: lm must be one of causal, seq2seq"):
        is_seq2seq(cfg)


TINY = ("method=lora", "data.max_train_samples=16", "data.max_eval_samples=3", "train.epochs=1",
        "train.batch_size=8", "task.decode.num_beams=2", "task.decode.max_new_tokens=6", "task.recipe.warmup_steps=1",
        "data.max_seq_len=64")


def _outputs(record: dict) -> tuple[dict, list[dict]]:
    run_dir = Path(record["config"]["output_root"]) / record["run_id"]
    stored = json.loads((run_dir / "result.json").read_text())
    lines = (run_dir / stored["best_outputs"]["test"]).read_text().splitlines()
    return stored, [json.loads(line) for line in lines]


def test_tiny_bart_samsum_run_writes_rouge(compose, data_root):
    """The offline SAMSum has no train split: train on its validation file here (a smoke test, not a result)."""
    train = "task.local.files.train=[{path:samsum/validation.jsonl,format:jsonl}]"
    record = run(compose("task=samsum", "model=tiny-bart", f"data.root={data_root}", train, *TINY))
    assert record["status"] == "complete" and record["task"] == "samsum"
    stored, outputs = _outputs(record)
    assert {"ROUGE_1", "ROUGE_2", "ROUGE_L"} <= set(stored["best_metrics"])
    assert len(outputs) == 3 and all(o["references"] and "hypothesis" in o for o in outputs)
    # L = 2 layers x (encoder self + decoder self + cross) x {q, v} x (A + B) x r x d
    assert stored["params"]["trainable"] == 2 * 3 * 2 * 2 * 8 * 32


@pytest.mark.skipif(not metrics.HAS_JAVA, reason="METEOR needs Java")
def test_tiny_t5_e2e_run_writes_all_five_metrics(compose, data_root):
    record = run(compose("task=e2e", "model=tiny-t5", f"data.root={data_root}", *TINY))
    assert record["status"] == "complete" and record["model"] == "tiny-t5"
    stored, outputs = _outputs(record)
    assert {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"} <= set(stored["best_metrics"])
    assert len(outputs) == 3 and all(o["references"] and "hypothesis" in o for o in outputs)
