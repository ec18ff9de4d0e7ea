"""W&B logging works with no account and no network: offline mode writes a local run next to the result."""

from __future__ import annotations

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
