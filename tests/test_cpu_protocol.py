"""The cpu-scale protocol: the mean-pooled head, length-grouped batches, the per-task recipe, the trivial
baseline every record carries, and a NaN metric that never becomes the best epoch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from repro.config import CONF_DIR, run_id
from repro.methods import apply_method
from repro.metrics import trivial_baseline
from repro.models import load_model, load_tokenizer
from repro.kinds.classification import LengthGroupedSampler, padded_fraction
from repro.loop import is_better

from tests.test_methods import method_cfg, model_cfg

OFFLINE_GLUE = ["sst2", "cola", "mrpc", "rte", "stsb"]
CPU_ROWS = ["full_ft", "lora", "bitfit", "adapter_d"]  # the Table 2 rows make reproduce-glue runs at cpu scale


def mean_pooled(name: str = "tiny-bert", pooling: str = "mean"):
    cfg = OmegaConf.merge(model_cfg(name), {"pooling": pooling})
    return load_model(cfg, num_labels=2).eval(), cfg


def logits_and_masked_mean(pooling: str):
    """A tiny model with this pooling on two sentences of different lengths: (model, config, batch, its logits,
    the masked mean of its last hidden states computed by hand)."""
    torch.manual_seed(0)
    model, cfg = mean_pooled(pooling=pooling)
    batch = load_tokenizer(cfg)(["a short one", "a noticeably longer sentence with several more words in it"],
                                padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
        hidden = model.bert(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
    return model, cfg, batch, logits, (hidden * mask).sum(1) / mask.sum(1)


def test_mean_pooling_feeds_the_classifier_the_masked_mean():
    model, _, _, logits, mean = logits_and_masked_mean("mean")
    with torch.no_grad():
        expected = model.classifier(mean)
    torch.testing.assert_close(logits, expected)
    assert sum(p.numel() for p in model.bert.pooler.parameters()) == 0  # the pooler is a pass-through


def test_mean_pooler_feeds_the_mean_through_the_pooler_layer():
    """`mean_pooler`: the masked mean goes through the encoder's pooler layer (dense + tanh), which stays trainable
    as part of the head under every method."""
    model, cfg, batch, logits, mean = logits_and_masked_mean("mean_pooler")
    with torch.no_grad():
        expected = model.classifier(torch.tanh(model.bert.pooler.dense(mean)))
    torch.testing.assert_close(logits, expected)
    adapted = apply_method(model, method_cfg("lora"), cfg)
    adapted.model(**batch, labels=torch.tensor([0, 1])).loss.backward()
    pooler_grads = [p.grad for n, p in adapted.model.named_parameters() if "pooler" in n and p.requires_grad]
    assert len(pooler_grads) == 2 and all(g is not None and g.abs().sum() > 0 for g in pooler_grads)


def test_mean_pooling_ignores_padding():
    """An example scores the same alone and padded beside a longer one: padding never enters the mean."""
    torch.manual_seed(0)
    model, cfg = mean_pooled()
    tok = load_tokenizer(cfg)
    short = "the film is good"
    with torch.no_grad():
        alone = model(**tok([short], return_tensors="pt")).logits[0]
        padded = model(**tok([short, "a much longer sentence that forces padding of the first"], padding=True,
                             return_tensors="pt")).logits[0]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["lora", "bitfit", "adapter_d", "full_ft", "prefix_layer"])
def test_mean_pooling_under_every_table2_method(method):
    torch.manual_seed(0)
    model, cfg = mean_pooled()
    adapted = apply_method(model, method_cfg(method), cfg)
    tok = load_tokenizer(cfg)
    batch = tok(["one sentence", "and another, longer sentence"], padding=True, return_tensors="pt")
    out = adapted.model(**batch, labels=torch.tensor([0, 1]))
    out.loss.backward()
    head_grads = [p.grad for n, p in adapted.model.named_parameters() if "classifier" in n and p.requires_grad]
    assert head_grads and all(g is not None and g.abs().sum() > 0 for g in head_grads)


def test_unknown_pooling_is_refused(compose):
    from repro.config import validate
    from repro.errors import ConfigError

    with pytest.raises(ConfigError, match="model.pooling must be one of cls, mean, mean_pooler"):
        validate(compose("model=tiny-bert", "+model.pooling=max"))


def test_length_grouped_sampler_is_a_seeded_permutation_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.lognormal(3, 0.7, size=1000).clip(3, 300)]
    features = [{"input_ids": [0] * n} for n in lengths]

    def order(seed: int) -> list[int]:
        return list(LengthGroupedSampler(lengths, 16, torch.Generator().manual_seed(seed)))

    first = order(0)
    assert sorted(first) == list(range(1000))
    assert first == order(0) and first != order(1)
    shuffled = torch.randperm(1000, generator=torch.Generator().manual_seed(0)).tolist()
    grouped, plain = padded_fraction(features, first, 16), padded_fraction(features, shuffled, 16)
    assert grouped < 0.15 and plain > 2 * grouped  # the goal: under 15% padding with grouping
    # batches are not sorted end to end: their order is shuffled (the first batch is not always the longest)
    batch_max = [max(lengths[i] for i in first[k:k + 16]) for k in range(0, 1000, 16)]
    assert batch_max != sorted(batch_max, reverse=True)


def test_nan_is_never_the_best_epoch():
    assert is_better(0.1, None)
    assert is_better(0.2, 0.1) and not is_better(0.1, 0.2) and not is_better(0.1, 0.1)
    assert not is_better(math.nan, 0.1)
    assert is_better(-0.5, math.nan)  # a NaN first epoch is replaced by any defined one
    assert not is_better(math.nan, math.nan)


def test_trivial_baseline_is_the_constant_predictor():
    labels = np.array([1, 1, 1, 0, 1, 0, 1, 1])  # majority 1: 6 of 8
    got = trivial_baseline(["accuracy", "f1", "matthews_correlation"], labels)
    assert got["accuracy"] == pytest.approx(0.75)
    assert got["f1"] == pytest.approx(2 * 0.75 / (1 + 0.75))  # precision 0.75, recall 1
    assert got["matthews_correlation"] == 0.0
    assert trivial_baseline(["accuracy"], np.array([0, 0, 1]))["accuracy"] == pytest.approx(2 / 3)
    assert trivial_baseline(["pearson", "spearman"], np.array([0.5, 4.0, 2.2])) == {"pearson": 0.0,
                                                                                     "spearman": 0.0}


def test_cpu_recipe_covers_every_offline_task_and_row(compose):
    recipe = OmegaConf.load(CONF_DIR / "cpu_recipe" / "glue.yaml")
    for task in OFFLINE_GLUE:
        for method in CPU_ROWS:
            cfg = compose(f"task=glue/{task}", f"method={method}", "scale=cpu")
            assert cfg.train.learning_rate == recipe[task].learning_rate[method], (task, method)
            epochs = recipe[task].epochs
            assert cfg.train.epochs == epochs.get(method, epochs.default), (task, method)
            assert cfg.train.batch_size == recipe[task].batch_size
            assert cfg.data.max_seq_len == recipe[task].max_seq_len
            assert cfg.data.max_train_samples == recipe[task].max_train_samples
            assert cfg.train.group_by_length is True
    # tasks without a recipe (hub-only MNLI) and methods without a rate take the defaults
    mnli = compose("task=glue/mnli", "method=adapter_h", "scale=cpu")
    assert mnli.train.learning_rate == mnli.method.learning_rate and mnli.data.max_train_samples == 4000
    assert mnli.train.epochs == 3
    # a method without its own epochs takes the task's default
    assert compose("task=glue/mrpc", "method=adapter_h", "scale=cpu").train.epochs == recipe.mrpc.epochs.default


def test_run_ids_depend_on_the_recipe_of_their_own_task_only(compose, tmp_path):
    """Editing RTE's recipe must not orphan the finished runs of the other tasks (the recipe table is not hashed;
    the values it puts into data/train are)."""
    cfg = compose("task=glue/sst2", "method=lora", "scale=cpu")
    other = compose("task=glue/sst2", "method=lora", "scale=cpu", "cpu_recipe.rte.epochs.default=99")
    own = compose("task=glue/sst2", "method=lora", "scale=cpu", "cpu_recipe.sst2.epochs.default=99")
    assert run_id(cfg) == run_id(other) != run_id(own)
