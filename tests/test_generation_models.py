"""Decoder models and methods: GPT-2 q/v LoRA forms agree, every method trains on tiny decoders, batched beam
search equals one-at-a-time."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from repro.config import load_group_config, method_misfit
from repro.generation.decoding import beam_search
from repro.generation.gpt2_qkv import fuse_split_qkv
from repro.generation.methods import apply_decoder_method
from repro.generation.models import load_causal_lm, load_lm_tokenizer
from repro.methods import METHODS


def _cfg(group: str, name: str, **overrides):
    return OmegaConf.merge(load_group_config(group, name), overrides)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def test_gpt2_lora_q_v_own_a_b_and_all_forms_agree():
    model_cfg = _cfg("model", "tiny-gpt2")
    torch.manual_seed(0)
    base = load_causal_lm(model_cfg).eval()
    ids = torch.randint(0, 1000, (2, 7))
    reference = _logits(base, ids)
    adapted = apply_decoder_method(base, _cfg("method", "lora", r=4, alpha=32), model_cfg).model.eval()
    names = {n for n, p in adapted.named_parameters() if p.requires_grad}
    layer0 = {n.split("c_attn.")[1] for n in names if ".h.0." in n}
    assert layer0 == {"q.lora_A.default.weight", "q.lora_B.default.weight",
                      "v.lora_A.default.weight", "v.lora_B.default.weight"}  # own A and B for q and v, none for k
    assert torch.allclose(_logits(adapted, ids), reference, atol=1e-5)  # B = 0 at init: the split is exact
    with torch.no_grad():
        for n, p in adapted.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)
    unmerged = _logits(adapted, ids)
    assert not torch.allclose(unmerged, reference, atol=1e-3)
    # the paper's formula by hand on layer 0: q += (x A_q^T B_q^T) alpha/r, v likewise, k untouched
    attn = adapted.base_model.model.transformer.h[0].attn.c_attn
    x = torch.randn(3, model_cfg.d_model)
    expected = torch.cat([attn.q.base_layer(x) + 8 * x @ attn.q.lora_A.default.weight.T @ attn.q.lora_B.default.weight.T,
                          attn.k(x),
                          attn.v.base_layer(x) + 8 * x @ attn.v.lora_A.default.weight.T @ attn.v.lora_B.default.weight.T],
                         dim=-1)
    assert torch.allclose(attn(x), expected, atol=1e-5)
    merged = adapted.merge_and_unload()
    assert torch.allclose(_logits(merged, ids), unmerged, atol=1e-5)
    fuse_split_qkv(merged, model_cfg)
    assert type(merged.transformer.h[0].attn.c_attn).__name__ == "Conv1D"
    assert torch.allclose(_logits(merged, ids), unmerged, atol=1e-5)


# Llama has no bias vectors, so BitFit has nothing to train there
@pytest.mark.parametrize("model_name, method_name", [
    (model, method) for model in ["tiny-gpt2", "tiny-llama"] for method in sorted(METHODS)
    if (model, method) != ("tiny-llama", "bitfit")
    and not method_misfit(_cfg("method", method), _cfg("model", model), "generation")])
def test_every_method_trains_on_decoders(model_name, method_name):
    model_cfg = _cfg("model", model_name)
    # the tiny models have 2 layers, and tiny-llama's v (grouped-query) is 32 x 16: fewer than FourierFT's 1000
    overrides = {"adapter_d": {"drop_lowest_layers": 1}, "fourierft": {"options": {"n_frequency": 100}}}
    method_cfg = _cfg("method", method_name, **overrides.get(method_name, {}))
    torch.manual_seed(0)
    adapted = apply_decoder_method(load_causal_lm(model_cfg), method_cfg, model_cfg)
    ids = torch.randint(0, 1000, (2, 5))
    logits = adapted.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert logits.shape[:2] == ids.shape
    logits.float().pow(2).mean().backward()
    trainable = [p for p in adapted.model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)


@pytest.mark.parametrize("method_name", ["lora", "prefix_layer"])
def test_batched_beam_search_equals_one_at_a_time(method_name):
    model_cfg = _cfg("model", "tiny-gpt2")
    tokenizer = load_lm_tokenizer(model_cfg)
    torch.manual_seed(0)
    adapted = apply_decoder_method(load_causal_lm(model_cfg), _cfg("method", method_name), model_cfg)
    decode = OmegaConf.create({"num_beams": 3, "length_penalty": 0.9, "no_repeat_ngram_size": 4,
                               "max_new_tokens": 8, "early_stopping": False, "batch_size": 4})
    sources = ["name : A | food : Thai", "name : The Eagle | area : riverside | near : Burger King", "x", "a b c d"]
    prompts = [tokenizer.encode(s, add_special_tokens=False) + [tokenizer.eos_token_id] for s in sources]
    end = tokenizer.eos_token_id
    batched = beam_search(adapted.model, tokenizer, prompts, decode, end, torch.device("cpu"))
    single = beam_search(adapted.model, tokenizer, prompts, decode, end, torch.device("cpu"), batch_size=1)
    assert batched == single and any(batched)


@pytest.mark.parametrize("model_name", ["tiny-gpt2", "tiny-llama"])
def test_prompt_encoded_once_for_all_beams_gives_generates_own_outputs(model_name):
    """`prefill_once` (the prompt's cache computed per input, repeated for its beams) decodes exactly what generate
    does when it encodes every beam's copy of the prompt: left-padded batches of different lengths, LoRA on top."""
    from repro.generation.decoding import prompt_cache

    model_cfg = _cfg("model", model_name)
    tokenizer = load_lm_tokenizer(model_cfg)
    torch.manual_seed(0)
    adapted = apply_decoder_method(load_causal_lm(model_cfg), _cfg("method", "lora"), model_cfg)
    torch.nn.init.normal_(next(p for n, p in adapted.model.named_parameters() if "lora_B" in n), std=0.5)
    decode = OmegaConf.create({"num_beams": 4, "length_penalty": 0.9, "no_repeat_ngram_size": 3,
                               "max_new_tokens": 10, "early_stopping": True, "batch_size": 3})
    sources = ["name : A | food : Thai", "name : The Eagle | area : riverside | near : Burger King", "x y", "a b c"]
    prompts = [tokenizer.encode(s, add_special_tokens=False) + [tokenizer.eos_token_id] for s in sources]
    end, cpu = tokenizer.eos_token_id, torch.device("cpu")
    once = beam_search(adapted.model, tokenizer, prompts, decode, end, cpu, prefill_once=True)
    assert once == beam_search(adapted.model, tokenizer, prompts, decode, end, cpu, prefill_once=False) and any(once)
    ids, mask = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]]), torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    cache = prompt_cache(adapted.model, ids, mask, num_beams=4)
    assert cache.get_seq_length() == 4 and cache.layers[0].keys.shape[0] == 8  # 2 inputs x 4 beams, last token left


@pytest.mark.parametrize("method_name", ["prefix_layer", "prefix_embed"])
def test_prefix_from_real_words_starts_at_the_models_own_activations(method_name):
    model_cfg = _cfg("model", "tiny-llama")
    tokenizer = load_lm_tokenizer(model_cfg)
    text = "Describe the facts in the table below."
    method_cfg = _cfg("method", method_name, prefix_length=4, init_text=text)
    torch.manual_seed(0)
    base = load_causal_lm(model_cfg)
    ids = tokenizer.encode(text, add_special_tokens=False)[:4]
    with torch.no_grad():
        hidden = base(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    wrapped = apply_decoder_method(base, method_cfg, model_cfg, tokenizer).model
    expected = [hidden[0][0]] if method_name == "prefix_embed" else [hidden[i][0] for i in range(model_cfg.n_layers)]
    assert len(wrapped.prompts) == len(expected)
    for prompt, reference in zip(wrapped.prompts, expected):
        assert torch.allclose(prompt, reference, atol=1e-6)
    assert wrapped.prompts.requires_grad
