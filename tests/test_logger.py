"""W&B logging works with no account and no network: offline mode writes a local run next to the result."""

from __future__ import annotations

import sys

import pytest

from repro.runner import run


def test_wandb_offline_run_needs_no_account(compose, data_root, monkeypatch, tmp_path, read_wandb_run):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    record = run(compose("model=tiny-bert", "scale=smoke", "logger=wandb", f"data.root={data_root}",
                         "data.max_train_samples=32", "data.max_eval_samples=32"))
    assert record["status"] == "complete"
    run_dir = tmp_path / "runs" / record["run_id"]
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and any(offline[0].rglob("*.wandb"))
    wandb_run = read_wandb_run(next(offline[0].rglob("*.wandb")))
    # read back: the keys a user filters on sit at the top level of the run's config
    config = wandb_run.config()
    top = {k: config.get(k) for k in ("task_name", "model_name", "method_name", "r", "targets", "seed", "scale",
                                      "precision")}
    assert top == {"task_name": "sst2", "model_name": "tiny-bert", "method_name": "lora", "r": 8, "targets": "q,v",
                   "seed": record["seed"], "scale": "smoke", "precision": "fp32"}
    # per-step and per-epoch losses under distinct keys
    assert {"train/loss", "train/epoch_loss", "eval/accuracy"} <= wandb_run.logged_keys()
    # chart axes: step curves over optimizer steps, epoch values over epochs
    assert wandb_run.axes() == {"train/*": "step", "eval_step/*": "step", "train/epoch_loss": "epoch",
                                "eval/*": "epoch"}


@pytest.mark.parametrize("overrides, group", [
    (("+experiment=table2/roberta_base_lora", "task=glue/sst2"), "table2"),
    (("+experiment=table3/gpt2_medium_lora",), "table3"),
    (("+experiment=table3/gpt2_medium_lora", "task=dart"), "table13"),
    (("+experiment=longlora/longlora",), "longlora"),
    (("+sweep_name=rank",), "rank"),
])
def test_wandb_groups_each_run_with_the_table_it_fills(compose, overrides, group):
    """Where `repro.tables --wandb` logs that table: a paper row's runs by their table, a sweep's by its name."""
    from repro.config import run_id
    from repro.loggers import with_wandb_defaults

    cfg = compose(*overrides, "logger=wandb")
    assert cfg.logger.group == group
    assert run_id(cfg) == run_id(compose(*overrides))  # how a run is observed is not part of what it computes
    beside_csv = with_wandb_defaults(compose(*overrides, "logger=csv", "logger.also=[wandb]"))
    assert (beside_csv.logger.group, beside_csv.logger.name, beside_csv.logger.project) == (group, "csv", "repro-lora")


def test_wandb_logger_gets_step_curves_and_world_size(compose, data_root, monkeypatch, tmp_path):
    import repro.runner as train_module

    logged, configs = [], []

    class Recording:
        def __init__(self, cfg, run_id, config, run_dir):
            configs.append(config)

        def log_step(self, step, values):
            logged.append(("step", step, values))

        def log_epoch(self, record):
            logged.append(("epoch", record["epoch"], record["metrics"]))

        def finish(self, result):
            logged.append(("finish",))

    monkeypatch.setattr(train_module, "make_logger", lambda *a: Recording(*a))
    run(compose("model=tiny-bert", "scale=smoke", f"data.root={data_root}", "data.max_train_samples=32",
                "data.max_eval_samples=16", "train.batch_size=4", "train.epochs=2", "train.log_every_steps=3",
                f"output_root={tmp_path}"))
    steps = [entry[1] for entry in logged if entry[0] == "step"]
    assert steps == [3, 6, 9, 12, 15, 16]  # every 3rd of the 16 optimizer steps, and the last
    assert configs[0]["world_size"] == 1 and configs[0]["train"]["precision"] == "fp32"
    assert [entry[0] for entry in logged][-1] == "finish" and sum(e[0] == "epoch" for e in logged) == 2


def test_every_run_writes_a_timestamped_log_and_its_resolved_config(compose, data_root, tmp_path):
    import re

    from omegaconf import OmegaConf

    record = run(compose("model=tiny-bert", "scale=smoke", f"data.root={data_root}", "data.max_train_samples=32",
                         "data.max_eval_samples=16", "train.batch_size=4", "train.epochs=2", "train.log_every_steps=3",
                         "train.eval_batch_size=8", "train.log_every_seconds=0.000001", f"output_root={tmp_path}"))
    run_dir = tmp_path / record["run_id"]
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert "\r" not in log
    stamped = [re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (.*)", line) for line in log.splitlines()]
    assert all(stamped)
    messages = [m.group(2) for m in stamped]
    assert messages[0].startswith(f"start {record['run_id']}: hardware ")
    assert any(m.startswith("step 3/16 loss ") and " eta " in m for m in messages)  # progress every 3 steps
    assert sum(m.startswith("epoch ") for m in messages) == 2  # each evaluation
    # a sign of life inside each evaluation too (2 batches of 8: a line after the first), as often as the config says
    assert sum(re.fullmatch(r"eval \S+: 1/2 batches, \d+ s", m) is not None for m in messages) == 2, messages
    assert messages[-1].startswith(f"done {record['run_id']}: best epoch ")
    resolved = OmegaConf.load(run_dir / "config.yaml")
    assert OmegaConf.to_container(resolved) == record["config"]  # the fully resolved config beside the result


def test_a_long_evaluation_or_decode_says_it_is_alive_only_in_a_run_log(tmp_path, capsys):
    from repro.runlog import run_log, with_progress

    with run_log(tmp_path / "alive", every_s=0.0):
        assert list(with_progress(range(3), "decode")) == [0, 1, 2]
    with run_log(tmp_path / "quiet"):  # no interval: nothing beyond tqdm's bar (off when not on a terminal)
        assert list(with_progress(range(3), "eval")) == [0, 1, 2]
    assert list(with_progress(range(2), "outside a run")) == [0, 1]
    lines = (tmp_path / "alive" / "train.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["decode: 1/3 batches, 0 s", "decode: 2/3 batches, 0 s"]
    assert (tmp_path / "quiet" / "train.log").read_text() == ""
    assert capsys.readouterr().out.splitlines() == ["decode: 1/3 batches, 0 s", "decode: 2/3 batches, 0 s"]


def test_a_redirected_console_gets_no_loading_bar(monkeypatch):
    """Under nohup, SLURM or `2> file` transformers' "Loading weights" bar would write carriage returns into the
    log; on a terminal it stays."""
    from transformers.utils import logging as transformers_logging

    from repro.runner import quiet_library_noise

    transformers_logging.enable_progress_bar()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    quiet_library_noise()
    assert transformers_logging.is_progress_bar_enabled()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    quiet_library_noise()
    assert not transformers_logging.is_progress_bar_enabled()
    transformers_logging.enable_progress_bar()


def _tensorboard_scalars(folder):
    """(tag, step, value) of every scalar in the TensorBoard event files under `folder` (TFRecord framing: length,
    its CRC, the Event proto, its CRC), read with tensorboardX's own protos."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out = []
    for path in folder.rglob("events.out.tfevents.*"):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            out += [(v.tag, event.step, v.simple_value) for v in event.summary.value if v.HasField("simple_value")]
    return out


def test_csv_tensorboard_and_wandb_loggers_at_once(compose, data_root, monkeypatch, tmp_path, read_wandb_run):
    import csv

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    record = run(compose("model=tiny-bert", "scale=smoke", "logger=csv", "logger.also=[tensorboard,wandb]",
                         f"data.root={data_root}", "data.max_train_samples=32", "data.max_eval_samples=16",
                         "train.batch_size=4", "train.epochs=2", "train.log_every_steps=3", f"output_root={tmp_path}"))
    run_dir = tmp_path / record["run_id"]
    steps = list(csv.DictReader(open(run_dir / "metrics_steps.csv", encoding="utf-8")))
    epochs = list(csv.DictReader(open(run_dir / "metrics_epochs.csv", encoding="utf-8")))
    assert [int(r["step"]) for r in steps] == [3, 6, 9, 12, 15, 16] and "train/loss" in steps[0]
    assert [int(r["epoch"]) for r in epochs] == [1, 2]
    assert float(epochs[1]["eval/accuracy"]) == record["epochs"][1]["metrics"]["accuracy"]
    scalars = _tensorboard_scalars(run_dir / "tensorboard")
    assert [s for tag, s, _ in scalars if tag == "train/loss"] == [3, 6, 9, 12, 15, 16]
    best = [v for tag, _, v in scalars if tag == "best/accuracy"]
    assert best == [pytest.approx(record["best_metrics"]["accuracy"])]
    # wandb in `also` takes conf/logger/wandb.yaml's defaults (project, offline mode) beside csv's config
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert read_wandb_run(next(offline.rglob("*.wandb"))).config()["method_name"] == "lora"


def test_unknown_logger_in_also_is_a_one_line_error(compose, data_root, tmp_path):
    from repro.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown logger 'mlflow'; choose from none, wandb, csv, tensorboard"):
        run(compose("model=tiny-bert", "scale=smoke", "logger.also=[mlflow]", f"data.root={data_root}",
                    f"output_root={tmp_path}"))
