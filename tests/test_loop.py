"""The one training loop (repro/loop.py) with a toy session: it reads the same knobs for every task kind (weight
decay, warm-up in steps or as a ratio), prints progress when stdout is not a terminal, and keeps the best epoch."""

from __future__ import annotations

import re

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from repro.loop import Progress, TrainResult, enable_gradient_checkpointing, train, warmup_steps
from repro.methods.base import TrainingHooks, adamw


class ToySession:
    """y = 2x regression, 24 examples in batches of 4; the 'metric' is minus the eval loss."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(24, 3, generator=g)
        self.y = self.x.sum(-1, keepdim=True) * 2

    def train_batches(self, generator, world):
        x, y = self.x, self.y

        class Batches:
            def __len__(self):
                return 6

            def __iter__(self):
                order = torch.randperm(24, generator=generator)
                for i in range(6):
                    idx = order[4 * i:4 * i + 4]
                    yield {"input_ids": x[idx], "attention_mask": torch.ones(4, 2), "labels": y[idx]}

        return Batches()

    def loss(self, net, batch):
        return nn.functional.mse_loss(net(batch["input_ids"]), batch["labels"])

    def evaluate(self, model, epoch, result: TrainResult):
        with torch.no_grad():
            loss = nn.functional.mse_loss(model(self.x), self.y).item()
        return {"neg_loss": -loss, "validation/loss": loss}


def cfg(**over):
    base = {"epochs": 3, "learning_rate": 0.05, "grad_accum_steps": 1, "warmup_ratio": 0.0, "weight_decay": 0.0,
            "max_grad_norm": 1.0, "log_every_steps": 4}
    return OmegaConf.create({**base, **over})


def test_progress_lines_every_n_steps_and_per_epoch_when_not_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    torch.manual_seed(0)
    result = train(nn.Linear(3, 1), ToySession(), cfg(), "neg_loss", seed=0, device=torch.device("cpu"))
    out = capsys.readouterr().out.splitlines()
    steps = [line for line in out if line.startswith("step ")]
    # 18 optimizer steps: every 4th, and the last
    assert [int(re.match(r"step (\d+)/18 ", s).group(1)) for s in steps] == [4, 8, 12, 16, 18]
    assert all(re.fullmatch(r"step \d+/18 loss \S+ lr \S+ [\d.]+ samples/s eta \d+s", s) for s in steps), steps
    epochs = [line for line in out if line.startswith("epoch ")]
    assert len(epochs) == 3 and "neg_loss=" in epochs[0] and "validation/loss" not in epochs[0]
    losses = [e["metrics"]["validation/loss"] for e in result.epochs]
    assert losses[-1] < losses[0]  # it learns
    assert result.best_epoch == 1 + max(range(3), key=lambda i: result.epochs[i]["metrics"]["neg_loss"])


def test_no_progress_lines_on_a_terminal_or_when_off(capsys):
    Progress(None, 18, enabled=True).step(4, 1.0, 0.1, 4)
    Progress(4, 18, enabled=False).step(4, 1.0, 0.1, 4)
    assert capsys.readouterr().out == ""


def test_weight_decay_reaches_the_optimizer():
    seen = {}

    def make_optimizer(groups, lr):
        seen["decay"] = [g["weight_decay"] for g in groups]
        return adamw(groups, lr)

    train(nn.Linear(3, 1), ToySession(), cfg(epochs=1, weight_decay=0.3), "neg_loss", seed=0,
          device=torch.device("cpu"), hooks=TrainingHooks(make_optimizer=make_optimizer))
    assert seen["decay"] == [0.3, 0.0]  # the weight matrix decays, the bias does not


def test_warmup_in_steps_wins_over_the_ratio(capsys):
    assert warmup_steps(cfg(warmup_ratio=0.1), 100) == 10
    assert warmup_steps(cfg(warmup_ratio=0.1, warmup_steps=7), 100) == 7
    assert warmup_steps(cfg(warmup_steps=200), 100) == 200
    assert "never peaks" in capsys.readouterr().out


@pytest.mark.parametrize("task, decay, warmup", [("e2e", 0.01, 500), ("dart", 0.0, 500), ("glue/sst2", 0.0, None)])
def test_every_task_kind_sets_the_same_training_knobs(compose, task, decay, warmup):
    c = compose(f"task={task}", "scale=cpu")
    assert c.train.weight_decay == decay and c.train.get("warmup_steps") == warmup
    assert compose(f"task={task}", "train.weight_decay=0.2").train.weight_decay == 0.2


def test_step_observer_gets_loss_lr_throughput_and_grad_norm_every_n_steps(monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)  # on a terminal too (no console lines there)
    seen = []
    torch.manual_seed(0)
    train(nn.Linear(3, 1), ToySession(), cfg(epochs=1), "neg_loss", seed=0, device=torch.device("cpu"),
          on_step=lambda step, values: seen.append((step, values)))
    assert [s for s, _ in seen] == [4, 6]  # 6 steps an epoch: every 4th and the last
    for _, values in seen:
        assert set(values) == {"train/loss", "train/lr", "train/samples_per_s", "train/grad_norm"}
        assert values["train/grad_norm"] > 0 and values["train/samples_per_s"] > 0
    seen.clear()
    train(nn.Linear(3, 1), ToySession(), cfg(epochs=1, max_grad_norm=None), "neg_loss", seed=0,
          device=torch.device("cpu"), on_step=lambda step, values: seen.append(values))
    assert seen and all("train/grad_norm" not in v for v in seen)  # not computed without clipping


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_lr_schedule_warms_up_then_decays_or_stays(schedule):
    from repro.loop import lr_schedule

    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = lr_schedule(optimizer, cfg(warmup_steps=4, lr_schedule=schedule), total_steps=20)
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 0.0 and rates[4] == pytest.approx(0.1)  # warm-up to the peak in 4 steps
    if schedule == "linear":
        assert rates[19] == pytest.approx(0.1 / 16) and rates[10] < rates[5]
    else:
        assert rates[4:] == pytest.approx([0.1] * 16)


def test_unknown_lr_schedule_is_one_line_config_error(compose):
    from repro.config import validate
    from repro.errors import ConfigError

    with pytest.raises(ConfigError, match="train.lr_schedule must be one of linear, constant, got 'cosine'"):
        validate(compose("train.lr_schedule=cosine"))


def test_max_steps_ends_training_and_the_schedule_mid_epoch():
    torch.manual_seed(0)
    result = train(nn.Linear(3, 1), ToySession(), cfg(epochs=3, max_steps=8), "neg_loss", seed=0,
                   device=torch.device("cpu"))
    assert result.optimizer_steps == 8  # 6 steps an epoch: the second epoch stops after 2 of them
    assert [e["epoch"] for e in result.epochs] == [1, 2]  # evaluated when the budget ran out


def test_early_stopping_after_patience_epochs_without_improvement():
    class Plateau(ToySession):  # the dev metric peaks at epoch 2
        def evaluate(self, model, epoch, result):
            return {"neg_loss": {1: -3.0, 2: -1.0}.get(epoch, -2.0)}

    result = train(nn.Linear(3, 1), Plateau(), cfg(epochs=10, early_stopping_patience=2), "neg_loss", seed=0,
                   device=torch.device("cpu"))
    assert [e["epoch"] for e in result.epochs] == [1, 2, 3, 4] and result.best_epoch == 2


def test_early_stopping_waits_for_its_minimum_epochs():
    """A dip early in the schedule (STS-B at batch 8: 69.2, 65.0, 52.6) ends no run before `min_epochs`."""
    class EarlyDip(ToySession):
        def evaluate(self, model, epoch, result):
            return {"neg_loss": {1: -1.0, 2: -1.5, 3: -2.0, 4: -0.8, 5: -0.5}.get(epoch, -0.9)}

    run = lambda **kw: train(nn.Linear(3, 1), EarlyDip(), cfg(epochs=10, early_stopping_patience=2, **kw),  # noqa: E731
                             "neg_loss", seed=0, device=torch.device("cpu"))
    assert [e["epoch"] for e in run().epochs] == [1, 2, 3]
    later = run(early_stopping_min_epochs=4)
    assert [e["epoch"] for e in later.epochs] == [1, 2, 3, 4, 5, 6, 7] and later.best_epoch == 5


def test_early_stopping_waits_while_the_run_is_at_chance():
    """MCC 0 (the majority class) for two epochs, then learning: not a plateau (CoLA's LoRA at cpu scale)."""
    class LateStart(ToySession):
        def evaluate(self, model, epoch, result):
            return {"mcc": {1: 0.0, 2: 0.0, 3: 0.2, 4: 0.25}.get(epoch, 0.1)}

    run = lambda chance: train(nn.Linear(3, 1), LateStart(), cfg(epochs=8, early_stopping_patience=1), "mcc",  # noqa: E731
                               seed=0, device=torch.device("cpu"), chance=chance)
    assert [e["epoch"] for e in run(None).epochs] == [1, 2]          # without the baseline it stops at chance
    late = run(0.0)
    assert [e["epoch"] for e in late.epochs] == [1, 2, 3, 4, 5] and late.best_epoch == 4


def test_progress_every_n_seconds_as_well(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    clock = iter(range(0, 10_000, 31))  # each reading of the clock 31 s after the last
    monkeypatch.setattr("repro.loop.time.perf_counter", lambda: next(clock))
    progress = Progress(every=100, total_steps=1000, every_s=60)
    for step in range(1, 6):
        progress.step(step, 0.5, 1e-3, 4)
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()] == ["2/1000", "4/1000"]


SMALL = ("data.max_train_samples=16", "data.max_eval_samples=3", "train.epochs=1", "train.batch_size=4")
GENERATE = ("task.decode.num_beams=1", "task.decode.max_new_tokens=4", "task.recipe.warmup_steps=1",
            "data.max_seq_len=64")


@pytest.mark.parametrize("case", [
    ("task=glue/sst2", "model=tiny-bert", "method=lora", "+model.pooling=mean"),  # minilm-l6's head, our wrapper
    ("task=glue/sst2", "model=tiny-bert", "method=adapter_h"),
    ("task=glue/sst2", "model=tiny-bert", "method=prefix_layer"),
    ("task=e2e", "model=tiny-gpt2", "method=lora", *GENERATE),
    ("task=e2e", "model=tiny-t5", "method=lora", *GENERATE),
    ("task=long_context", "model=tiny-llama", "method=longlora", "task.target_context=128", "task.eval_lengths=[128]",
     "task.eval_chunks=1", "task.passkey.trials=1", "+model.original_context=64", "train.batch_size=2"),
], ids=["mean-pooling", "adapter", "prefix", "decoder", "seq2seq", "longlora-s2attn"])
def test_gradient_checkpointing_gives_the_same_run(compose, data_root, tmp_path, monkeypatch, case):
    """Recomputing activations changes memory, not numbers, on every kind of model (our pooling wrapper,
    bottleneck adapters, prefix tokens, GPT-2's split attention, T5, LongLoRA's shifted attention), and the run
    really turns it on."""
    import repro.loop
    from repro.runner import run

    enabled = []

    def spy(model):
        enable_gradient_checkpointing(model)
        enabled.append(any(getattr(m, "is_gradient_checkpointing", False) for m in model.modules()))

    args = (*case, f"data.root={data_root}", *SMALL)
    plain = run(compose(*args, f"output_root={tmp_path / 'plain'}"))
    monkeypatch.setattr(repro.loop, "enable_gradient_checkpointing", spy)
    checkpointed = run(compose(*args, "train.gradient_checkpointing=true", f"output_root={tmp_path / 'ckpt'}"))
    assert enabled == [True]
    assert checkpointed["run_id"] == plain["run_id"]  # how it is computed, not what
    assert checkpointed["epochs"][0]["train_loss"] == pytest.approx(plain["epochs"][0]["train_loss"], rel=1e-5)
    assert checkpointed["best_metrics"] == pytest.approx(plain["best_metrics"], rel=1e-5)


def test_gradient_checkpointing_finds_the_hugging_face_model_or_says_it_cannot():
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    from repro.errors import ConfigError
    from repro.loop import enable_gradient_checkpointing

    bert = BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                                    intermediate_size=32, vocab_size=100))
    peft_model = get_peft_model(bert, LoraConfig(r=2, target_modules=["query", "value"]))
    enable_gradient_checkpointing(peft_model)
    assert bert.is_activation_checkpointing
    with pytest.raises(ConfigError, match="train.gradient_checkpointing: Linear has no Hugging Face model"):
        enable_gradient_checkpointing(nn.Linear(2, 2))


class Scripted(ToySession):
    """Dev metrics in the order the evaluations run, whatever the weights (the best is the first)."""

    def __init__(self, values):
        super().__init__()
        self.values = iter(values)

    def evaluate(self, model, epoch, result):
        return {"neg_loss": next(self.values)}


def test_eval_every_steps_evaluates_inside_epochs_and_keeps_the_best_step():
    seen = []
    torch.manual_seed(0)
    result = train(nn.Linear(3, 1), Scripted([-1.0, -2.0, -3.0, -2.5]),
                   cfg(epochs=2, eval_every_steps=4, lr_schedule="constant"), "neg_loss", seed=0,
                   device=torch.device("cpu"), on_step=lambda step, values: seen.append((step, values)))
    # 6 steps an epoch: steps 4 and 8 inside the epochs (12 is an epoch end, evaluated once, as such)
    assert [e.get("step_evals") for e in result.epochs] == [[{"step": 4, "metrics": {"neg_loss": -1.0}}],
                                                           [{"step": 8, "metrics": {"neg_loss": -3.0}}]]
    assert [e["metrics"] for e in result.epochs] == [{"neg_loss": -2.0}, {"neg_loss": -2.5}]
    assert (result.best_epoch, result.best_step, result.best_metrics) == (1, 4, {"neg_loss": -1.0})
    assert [s for s, v in seen if "eval_step/neg_loss" in v] == [4, 8]  # its own key, on the step axis
    # the kept weights are those after step 4 (a constant rate: a run stopped there has the same weights)
    torch.manual_seed(0)
    stopped = train(nn.Linear(3, 1), ToySession(), cfg(epochs=2, max_steps=4, lr_schedule="constant"), "neg_loss",
                    seed=0, device=torch.device("cpu"))
    assert all(torch.equal(result.best_state[k], stopped.best_state[k]) for k in stopped.best_state)
    from repro.score import select_best  # re-scoring picks the same evaluation

    assert select_best(result.epochs, "neg_loss") == (1, {"neg_loss": -1.0})


def test_resume_inside_an_epoch_with_step_evaluations_is_exact(tmp_path, capsys):
    from repro.checkpoint import Checkpointer

    def fresh(session, folder):
        torch.manual_seed(0)
        return train(nn.Linear(3, 1), session, cfg(epochs=2, eval_every_steps=2), "neg_loss", seed=0,
                     device=torch.device("cpu"), checkpointer=Checkpointer(tmp_path / folder, 3))

    reference = fresh(ToySession(), "reference")

    class Crashing(ToySession):
        calls = 0

        def loss(self, net, batch):
            Crashing.calls += 1
            if Crashing.calls == 5:  # step 5: after the step-2 and step-4 evaluations and the step-3 checkpoint
                raise RuntimeError("simulated crash")
            return super().loss(net, batch)

    with pytest.raises(RuntimeError, match="simulated crash"):
        fresh(Crashing(), "interrupted")
    capsys.readouterr()
    resumed = fresh(ToySession(), "interrupted")
    assert "resumed from checkpoint: epoch 1, batch 3, step 3" in capsys.readouterr().out
    assert [e.get("step_evals") for e in resumed.epochs] == [e.get("step_evals") for e in reference.epochs]
    assert [s["step"] for s in resumed.epochs[0]["step_evals"]] == [2, 4]
    assert resumed.epochs == reference.epochs
    assert (resumed.best_epoch, resumed.best_step) == (reference.best_epoch, reference.best_step)
    assert all(torch.equal(resumed.best_state[k], reference.best_state[k]) for k in reference.best_state)


def test_step_evaluations_reach_the_record_and_the_loggers(compose, data_root, tmp_path):
    import csv

    from repro.runner import run

    record = run(compose("model=tiny-bert", "scale=smoke", "logger=csv", f"data.root={data_root}",
                         "data.max_train_samples=32", "data.max_eval_samples=16", "train.batch_size=4",
                         "train.epochs=1", "train.eval_every_steps=3", f"output_root={tmp_path}"))
    assert [s["step"] for s in record["epochs"][0]["step_evals"]] == [3, 6]  # 8 steps; the 8th is the epoch end
    assert "accuracy" in record["epochs"][0]["step_evals"][0]["metrics"]
    steps = list(csv.DictReader(open(tmp_path / record["run_id"] / "metrics_steps.csv", encoding="utf-8")))
    assert [int(r["step"]) for r in steps if r.get("eval_step/accuracy")] == [3, 6]
