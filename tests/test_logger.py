"""W&B logging works with no account and no network: offline mode writes a local run next to the result."""

from __future__ import annotations

import sys

import pytest

from repro.runner import run


def test_wandb_offline_run_needs_no_account(compose, data_root, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    record = run(compose("model=tiny-bert", "scale=smoke", "logger=wandb", f"data.root={data_root}",
                         "data.max_train_samples=32", "data.max_eval_samples=32"))
    assert record["status"] == "complete"
    run_dir = tmp_path / "runs" / record["run_id"]
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and any(offline[0].rglob("*.wandb"))
    # read back: the keys a user filters on sit at the top level of the run's config
    config = _offline_config(next(offline[0].rglob("*.wandb")))
    top = {k: config.get(k) for k in ("task_name", "model_name", "method_name", "r", "targets", "seed", "scale",
                                      "precision")}
    assert top == {"task_name": "sst2", "model_name": "tiny-bert", "method_name": "lora", "r": 8, "targets": "q,v",
                   "seed": record["seed"], "scale": "smoke", "precision": "fp32"}
    history = next(offline[0].rglob("*.wandb")).read_bytes()  # per-step and per-epoch losses under distinct keys
    assert b"\x12\x0atrain/loss\x82" in history and b"\x12\x10train/epoch_loss\x82" in history  # len-prefixed keys


def _offline_config(path) -> dict:
    """The short top-level config items of an offline run file: each is a protobuf ConfigItem, `\\n` len key
    `\\x82\\x01` len value_json (wandb ships no reader for its .wandb files)."""
    import json
    import re

    data, out = path.read_bytes(), {}
    for m in re.finditer(rb"\n([\x01-\x7f])([\w.]+?)\x82\x01([\x01-\x7f])", data):
        if len(m.group(2)) == m.group(1)[0]:
            try:
                out[m.group(2).decode()] = json.loads(data[m.end(): m.end() + m.group(3)[0]])
            except ValueError:
                pass
    return out


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
                         f"output_root={tmp_path}"))
    run_dir = tmp_path / record["run_id"]
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert "\r" not in log
    stamped = [re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (.*)", line) for line in log.splitlines()]
    assert all(stamped)
    messages = [m.group(2) for m in stamped]
    assert messages[0].startswith(f"start {record['run_id']}: hardware ")
    assert any(m.startswith("step 3/16 loss ") and " eta " in m for m in messages)  # progress every 3 steps
    assert sum(m.startswith("epoch ") for m in messages) == 2  # each evaluation
    assert messages[-1].startswith(f"done {record['run_id']}: best epoch ")
    resolved = OmegaConf.load(run_dir / "config.yaml")
    assert OmegaConf.to_container(resolved) == record["config"]  # the fully resolved config beside the result


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


def test_csv_and_tensorboard_loggers_at_once(compose, data_root, tmp_path):
    import csv

    record = run(compose("model=tiny-bert", "scale=smoke", "logger=csv", "logger.also=[tensorboard]",
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


def test_unknown_logger_in_also_is_a_one_line_error(compose, data_root, tmp_path):
    from repro.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown logger 'mlflow'; choose from none, wandb, csv, tensorboard"):
        run(compose("model=tiny-bert", "scale=smoke", "logger.also=[mlflow]", f"data.root={data_root}",
                    f"output_root={tmp_path}"))
