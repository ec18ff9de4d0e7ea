"""Passkey retrieval, the synthetic long-context test LongLoRA reports (from Mohtashami & Jaggi 2023, landmark
attention): a random number hidden at a random depth in repeated filler text, asked for at the end. The texts are
the task config's (`task.passkey`); a prompt is built to a given token length, deterministically from a seed, and
scored by exact match of the digits the model generates greedily."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class PasskeyPrompt:
    ids: list[int]
    answer: str  # the digits of the pass key
    depth: float  # where the key sits: filler sentences before it / all filler sentences


def make_prompt(tokenizer: PreTrainedTokenizerBase, length: int, seed: int, texts: DictConfig) -> PasskeyPrompt:
    """A prompt of at most `length` tokens: description, filler, the key line, filler, question. The number of
    filler sentences fills the length; how many come before the key is drawn uniformly, as the key itself."""
    rng = random.Random(seed)
    key = str(rng.randint(texts.key_min, texts.key_max))
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    head, filler = encode(texts.description + "\n"), encode(" " + texts.filler)
    info = encode("\n" + texts.information.format(key=key) + "\n")
    question = encode(texts.question)
    room = length - len(head) - len(info) - len(question)
    n_filler = max(room // len(filler), 0)
    before = rng.randint(0, n_filler)
    ids = head + filler * before + info + filler * (n_filler - before) + question
    return PasskeyPrompt(ids, key, before / max(n_filler, 1))


def extract_digits(text: str) -> str:
    """The first run of digits in the generated text ('' when there is none)."""
    match = re.search(r"\d+", text)
    return match.group(0) if match else ""


def prompt_seed(seed: int, length: int, trial: int) -> int:
    """One seed per (run seed, length, trial): the same prompts for every method and run with that seed."""
    return (seed * 1_000_003 + length) * 1_009 + trial


@torch.no_grad()
def retrieve(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: PasskeyPrompt, device: torch.device,
             max_new_tokens: int) -> str:
    """Greedy continuation of the prompt, decoded (the model answers after '... The pass key is')."""
    input_ids = torch.tensor([prompt.ids], device=device)
    out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                         num_beams=1, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, input_ids.shape[1]:], skip_special_tokens=True)


def passkey_accuracy(model: nn.Module, tokenizer: PreTrainedTokenizerBase, length: int, texts: DictConfig,
                     trials: int, seed: int, device: torch.device) -> float:
    """Fraction of `trials` prompts of `length` tokens whose key the model reproduces exactly. Prompt i uses seed
    (seed, length, i), so every run and method sees the same keys at the same depths."""
    model.eval()
    correct = 0
    for i in range(trials):
        prompt = make_prompt(tokenizer, length, prompt_seed(seed, length, i), texts)
        answer = retrieve(model, tokenizer, prompt, device, texts.max_new_tokens)
        correct += extract_digits(answer) == prompt.answer
    return correct / max(trials, 1)
