"""`task.kind: long_context`: a decoder extended to `task.target_context` tokens (LongLoRA, Chen et al. 2023).

Data -> model -> RoPE position interpolation -> method -> `repro.loop.train`, as every kind:
- the text is one token stream per split cut into chunks (repro/longcontext/data.py); training takes chunks of
  `task.target_context` tokens, the loss is next-token cross-entropy over every position;
- positions are interpolated by ceil(target_context / pre-trained context) before the method is applied
  (repro/longcontext/positions.py), for every method (the baselines are fine-tuned at the same context);
- with `method.s2_attn` the attention layers train with shifted sparse attention (repro/longcontext/attention.py),
  and every evaluation runs with full attention;
- evaluation, per length in `task.eval_lengths`: perplexity over `task.eval_chunks` chunks of the test stream and
  passkey retrieval accuracy (repro/longcontext/passkey.py). The main metric is minus the NLL at the target length.
With `task.eval_before_training` the same evaluation of the model before training (with its interpolation) is stored
as `base_metrics` (the "base model" rows), once per run: a resumed run reads it back from the run folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from transformers import PreTrainedTokenizerBase

from repro.distributed import World, shard_sampler
from repro.errors import ConfigError
from repro.generation.methods import apply_decoder_method
from repro.generation.models import is_seq2seq, load_causal_lm, load_lm_tokenizer
from repro.kinds.base import Outcome, RunContext, ShuffledBatches, method_report, pretrained_kwargs
from repro.kinds.generation import LanguageModelKind
from repro.longcontext.attention import FULL_ATTN, full_attention, group_size, set_attention, use_s2_attn
from repro.longcontext.data import check_local_files, chunks, token_stream
from repro.longcontext.passkey import passkey_accuracy
from repro.longcontext.positions import interpolate_positions, interpolation_factor, original_context
from repro.loop import TrainResult, broadcast_metrics, train
from repro.methods import Adapted
from repro.models import to_device
from repro.paper import paper_data
from repro.params import count_parameters

BASE_METRICS_FILE = "base_metrics.json"


def lm_loss(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over every position of unpadded chunks (no attention mask: all are real)."""
    logits = model(input_ids=input_ids).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), input_ids[:, 1:].reshape(-1))


@torch.no_grad()
def mean_nll(model: nn.Module, rows: torch.Tensor, device: torch.device) -> float:
    """Token-weighted NLL over chunks evaluated one at a time (non-overlapping windows: each chunk starts cold)."""
    model.eval()
    total = sum(lm_loss(model, row[None].to(device)).item() for row in rows)
    return total / len(rows)


def unigram_nll(train: torch.Tensor, rows: torch.Tensor, vocab_size: int) -> float:
    """The trivial baseline: NLL of each predicted token (positions 1..L-1, as `lm_loss`) under the training stream's
    token frequencies with add-one smoothing, a model that ignores all context."""
    counts = torch.bincount(train, minlength=vocab_size).double() + 1.0
    log_p = counts.log() - counts.sum().log()
    return float(-log_p[rows[:, 1:].reshape(-1)].mean())


def trivial_baseline(train: torch.Tensor, eval_rows: dict[int, torch.Tensor], vocab_size: int,
                     passkey: DictConfig) -> dict[str, float]:
    """Per evaluation length: the unigram model's NLL and perplexity, and passkey retrieval by chance (a uniformly
    guessed key)."""
    out: dict[str, float] = {}
    for length, rows in eval_rows.items():
        nll = unigram_nll(train, rows, vocab_size)
        out[f"nll@{length}"], out[f"ppl@{length}"] = nll, math.exp(nll)
    for length in passkey.lengths:
        out[f"passkey@{length}"] = 1.0 / (passkey.key_max - passkey.key_min + 1)
    return out


@dataclass
class LongContextSession:
    """The loop's view of a long-context run (`repro.loop.Session`)."""

    train_rows: torch.Tensor
    eval_rows: dict[int, torch.Tensor]  # per evaluation length
    tokenizer: PreTrainedTokenizerBase
    task: DictConfig
    train_cfg: DictConfig
    seed: int
    device: torch.device
    world: World

    def train_batches(self, generator: torch.Generator, world: World) -> ShuffledBatches:
        return ShuffledBatches(len(self.train_rows), self.train_cfg.batch_size, generator, self.collate,
                               shard_sampler(self.train_rows, world, self.seed))

    def collate(self, ids: list[int]) -> dict[str, torch.Tensor]:
        rows = self.train_rows[ids]
        return {"input_ids": rows, "attention_mask": torch.ones_like(rows)}  # the mask only counts tokens

    def loss(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return lm_loss(net, batch["input_ids"])

    def metrics(self, model: nn.Module) -> dict[str, float]:
        """Perplexity and passkey accuracy at every evaluation length, with full attention."""
        out: dict[str, float] = {}
        with full_attention(model):
            for length, rows in self.eval_rows.items():
                nll = mean_nll(model, rows, self.device)
                out[f"nll@{length}"], out[f"ppl@{length}"] = nll, math.exp(nll)
            for length in self.task.passkey.lengths:
                out[f"passkey@{length}"] = passkey_accuracy(model, self.tokenizer, int(length), self.task.passkey,
                                                            self.task.passkey.trials, self.task.passkey.seed,
                                                            self.device)
        out["neg_nll"] = -out[f"nll@{self.task.target_context}"]
        return out

    def evaluate(self, model: nn.Module, epoch: int, result: TrainResult) -> dict[str, float]:
        return self.metrics(model) if self.world.is_main else {}


def check_lengths(task: DictConfig, method: DictConfig) -> None:
    """The target must be among the evaluation lengths (the main metric), and S²-Attn's groups must divide it."""
    if task.target_context not in task.eval_lengths:
        raise ConfigError(f"task.target_context={task.target_context} must be one of task.eval_lengths "
                          f"{list(task.eval_lengths)} (the main metric is the NLL there)")
    if method.get("s2_attn"):
        group_size(task.target_context, method.group_size_ratio)


def base_metrics(session: LongContextSession, model: nn.Module, run_dir: Path | None) -> dict[str, float]:
    """The model's metrics before training, computed once per run (kept in the run folder across a resume)."""
    path = run_dir / BASE_METRICS_FILE if run_dir is not None else None
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    metrics = session.metrics(model)
    if path is not None and session.world.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics))
    return metrics


def evaluation_only(session: LongContextSession, model: nn.Module, ctx: RunContext) -> TrainResult:
    """A run without training (nothing trainable): one evaluation, recorded as epoch 0."""
    metrics = broadcast_metrics(ctx.world, session.evaluate(model, 0, TrainResult()))
    record = {"epoch": 0, "train_loss": None, "metrics": metrics}
    ctx.on_epoch(record)
    return TrainResult(epochs=[record], best_epoch=0, best_metrics=metrics)


def extended_lm(cfg: DictConfig) -> tuple[nn.Module, dict[str, int | float]]:
    """The decoder with its positions interpolated to `task.target_context` (before any method), and its context
    before (`model_context`), the one it was pre-trained at (`original_context`) and the `interpolation_factor`."""
    model = load_causal_lm(cfg.model, **pretrained_kwargs(cfg))
    model_context = int(model.config.max_position_embeddings)  # what the model was pre-trained at
    original = original_context(model, cfg.model.get("original_context"))
    factor = interpolation_factor(cfg.task.target_context, original) if cfg.task.position_interpolation else 1.0
    interpolate_positions(model, factor, cfg.model.get("rotary_embedding", "model.rotary_emb"))
    return model, {"model_context": model_context, "original_context": original, "interpolation_factor": factor}


class LongContext(LanguageModelKind):
    """Language modelling at an extended context with every method (LongLoRA's comparisons)."""

    def method_config(self, cfg: DictConfig) -> DictConfig:
        return cfg.method

    def build(self, cfg: DictConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> Adapted:
        """With full attention (S²-Attn is switched on for training by `run`; every evaluation uses full)."""
        return apply_decoder_method(extended_lm(cfg)[0], cfg.method, cfg.model, tokenizer)

    def check_local_data(self, task: DictConfig, root: str) -> None:
        check_local_files(task, root)

    def paper_params(self, row_id: str, task_cfg: DictConfig) -> str | None:
        """None: conf/paper/longlora.yaml's ablation rows print no count (the row must exist)."""
        rows = paper_data("longlora")["rows"]
        if row_id not in rows:
            raise ConfigError(f"paper_row {row_id!r} is not a row of conf/paper/longlora.yaml")
        return rows[row_id].get("params")

    def attention_span(self, cfg: DictConfig, seq_len: int) -> int | None:
        """One S²-Attn group where training uses it."""
        return group_size(seq_len, cfg.method.group_size_ratio) if cfg.method.get("s2_attn") else None

    def run(self, cfg: DictConfig, ctx: RunContext) -> Outcome:
        task, method, device = cfg.task, cfg.method, ctx.device
        if is_seq2seq(cfg.model):
            raise ConfigError(f"task {task.name} needs a decoder-only model; {cfg.model.name} is an encoder-decoder")
        check_lengths(task, method)
        tokenizer = load_lm_tokenizer(cfg.model)
        model, positions = extended_lm(cfg)
        original, factor = positions["original_context"], positions["interpolation_factor"]
        adapted = apply_decoder_method(model, method, cfg.model, tokenizer)
        if method.get("s2_attn"):
            use_s2_attn(adapted.model, method.group_size_ratio)
        else:
            set_attention(adapted.model, FULL_ATTN)
        model = to_device(adapted.model, device)
        counts = count_parameters(model, list(cfg.model.head))

        longest = max(task.eval_lengths)
        cap = cfg.data.max_train_samples  # chunks; the stream is read only as far as they need
        train_stream = token_stream(task, cfg.data.root, "train", tokenizer,
                                    max_tokens=cap * task.target_context if cap else None)
        eval_stream = token_stream(task, cfg.data.root, task.eval_splits[0], tokenizer,
                                   max_tokens=longest * task.eval_chunks)
        train_rows = chunks(train_stream, task.target_context, cfg.data.max_train_samples)
        eval_rows = {int(n): chunks(eval_stream, int(n), task.eval_chunks) for n in task.eval_lengths}
        print(f"{task.name}/{cfg.model.name}/{method.name}: {len(train_rows)} training chunks of "
              f"{task.target_context} tokens, positions interpolated x{factor:g} (pre-trained {original}), "
              f"S²-Attn {'on' if method.get('s2_attn') else 'off'}; trainable {counts.trainable:,} of "
              f"{counts.total:,} parameters")
        session = LongContextSession(train_rows, eval_rows, tokenizer, task, cfg.train, cfg.seed, device, ctx.world)
        if counts.trainable == 0:  # method=base: the model before training is the result
            result = evaluation_only(session, model, ctx)
            before = result.best_metrics
        else:
            before = base_metrics(session, model, ctx.run_dir) if task.eval_before_training else None
            result = train(model, session, cfg.train, task.main_metric, cfg.seed, device, hooks=adapted.hooks,
                           world=ctx.world, checkpointer=ctx.checkpointer, on_epoch=ctx.on_epoch, on_step=ctx.on_step)
        vocab = int(model.get_output_embeddings().weight.shape[0]) if hasattr(model, "get_output_embeddings") \
            else len(tokenizer)
        baseline = trivial_baseline(train_stream, eval_rows, vocab, task.passkey)
        extra = {**method_report(adapted), "base_metrics": before, "trivial_baseline": baseline, "long_context": {
            "target_context": int(task.target_context), **positions, "s2_attn": bool(method.get("s2_attn", False)),
            "group_size_ratio": method.get("group_size_ratio") if method.get("s2_attn") else None,
            "eval_lengths": [int(n) for n in task.eval_lengths], "eval_chunks": {n: len(r) for n, r in eval_rows.items()},
            "train_chunks": len(train_rows), "source": task.source}}
        return Outcome(adapted, counts, result, len(train_rows), {task.eval_splits[0]: len(eval_rows[longest])}, extra)
