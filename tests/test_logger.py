"""W&B logging works with no account and no network: offline mode writes a local run next to the result."""

from __future__ import annotations

from repro.train import run


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
