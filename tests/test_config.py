"""The config tree: every task x method x scale composes and resolves, bad input is refused with one line
before anything is written, run ids are stable, and the shipped paper hyperparameters match the paper."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from repro.config import CONF_DIR, group_choices, method_misfit, run_id, validate
from repro.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
GLUE = group_choices("task/glue")
METHODS = group_choices("method")


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("task", GLUE)
def test_every_task_and_method_composes(compose, task, scale):
    model = "roberta-base" if scale == "paper" else "minilm-l6"
    for method in METHODS:
        cfg = compose(f"task=glue/{task}", f"method={method}", f"model={model}", f"scale={scale}")
        if method_misfit(cfg.method, cfg.model, cfg.task.kind):  # e.g. LongLoRA: Llama decoders only
            continue
        OmegaConf.resolve(cfg)
        validate(cfg)
        assert cfg.train.learning_rate > 0 and cfg.data.max_seq_len > 0


def test_paper_scale_takes_appendix_d_values(compose, paper_reference):
    cfg = compose("task=glue/rte", "model=roberta-large", "method=lora", "scale=paper")
    row = next(c for c in paper_reference["table9_roberta_hparams"]["configs"] if c["id"] == "roberta_large.lora")
    assert cfg.train.learning_rate == row["learning_rate"]["RTE"]
    assert cfg.train.batch_size == row["batch_size"]["RTE"]
    assert cfg.train.epochs == row["epochs"]["RTE"]
    assert cfg.data.max_seq_len == row["max_seq_len"]["RTE"]
    # no Appendix D row for the embedded model: the method's defaults apply
    cfg = compose("task=glue/rte", "model=minilm-l6", "method=lora", "scale=paper")
    assert cfg.train.learning_rate == cfg.method.learning_rate


def test_shipped_hyperparameters_match_the_paper(paper_reference):
    shipped = yaml.safe_load((CONF_DIR / "paper_hparams" / "glue.yaml").read_text())
    n_checked = 0
    for table in ("table9_roberta_hparams", "table10_deberta_hparams"):
        ref_table = paper_reference[table]
        for row in ref_table["configs"]:
            # the larger of two same-method configurations carries its size (adapter_p_houlsby_3m)
            size = {"3M": "_3m", "6M": "_6m"}.get(row["id"].split(".")[2] if row["id"].count(".") > 2 else "", "")
            ours = shipped[row["model"]][row["method"] + ("_houlsby" if row["houlsby_setup"] else "") + size]
            assert ours["warmup_ratio"] == ref_table["shared"]["warmup_ratio"]
            for field in ("batch_size", "epochs", "learning_rate", "lora_alpha", "max_seq_len", "weight_decay",
                          "cls_dropout", "adapter_bottleneck_r", "lora_r"):
                if field in row:
                    assert ours[field] == row[field], (row["id"], field)
                    n_checked += 1
    assert n_checked > 40


def test_run_id_is_stable_and_ignores_output_paths(compose, tmp_path):
    a = compose("method=lora", "seed=1")
    b = compose("method=lora", "seed=1", f"output_root={tmp_path}/elsewhere", "force=true", "logger=wandb")
    assert run_id(a) == run_id(b)
    assert run_id(a) != run_id(compose("method=lora", "seed=2"))
    assert run_id(a) != run_id(compose("method=lora", "seed=1", "method.r=4"))
    assert run_id(a).startswith("sst2_minilm-l6_lora_s1_")
    # a knob added later keeps the ids of runs made before it while left at its old value (null)
    assert run_id(a) == run_id(compose("method=lora", "seed=1", "train.eval_every_steps=null"))
    assert run_id(a) != run_id(compose("method=lora", "seed=1", "train.eval_every_steps=50"))


@pytest.mark.parametrize("overrides, message", [
    (["method.r=0"], "method.r must be a positive integer"),
    (["method.targets=[q,x]"], "model minilm-l6 has no matrix x; it has: q, k, v, o"),
    (["method=adapter_h", "method.sites=[attn,cross]"], "adapter site cross unknown"),
    (["method=ft_top2", "method.top_layers=7"], "exceeds the model's 6 layers"),
    (["train.eval_every_steps=0"], "train.eval_every_steps must be a positive integer or null"),
])
def test_validate_rejects_bad_values(compose, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose(*overrides))


def _cli(*args: str, results: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "REPRO_RESULTS": str(results), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "repro.train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["method=lorax"], "error: unknown method 'lorax'; choose one of: adalora, adapter_d, adapter_h"),
    (["task=glue/mnl"], "error: unknown task 'glue/mnl'; choose one of: "),
    (["model=gpt5"], "error: unknown model 'gpt5'"),
    (["method.r=-1"], "error: method.r must be a positive integer, got -1"),
    (["method.targets=[q,z]"], "error: model minilm-l6 has no matrix z; it has: q, k, v, o"),
    (["data.root=/nonexistent"], "error: missing data file /nonexistent/glue/sst2/train.tsv"),
])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    proc = _cli(*args, results=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    if "unknown task" in message:
        assert "glue/mnli" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_cli_prints_job_config(tmp_path):
    proc = _cli("task=glue/mnli", "method=adapter_l", "--cfg", "job", results=tmp_path)
    assert proc.returncode == 0, proc.stderr
    job = yaml.safe_load(proc.stdout)
    assert job["task"]["eval_splits"] == ["validation_matched", "validation_mismatched"]
    assert job["method"]["layer_norm"] is True
    # the values the run gets: the cpu scale's `${oc.select:...}` budget is resolved
    proc = _cli("task=glue/sst2", "model=minilm-l6", "scale=cpu", "--cfg", "job", results=tmp_path)
    assert proc.returncode == 0 and "${" not in proc.stdout, proc.stdout + proc.stderr
    assert yaml.safe_load(proc.stdout)["data"]["max_train_samples"] == 6000


@pytest.mark.parametrize("experiment, task, expected", [
    ("table2/roberta_base_lora", "rte", "glue/mnli"),
    ("table2/roberta_large_lora", "stsb", "glue/mnli"),
    ("table2/roberta_base_lora", "sst2", None),
    ("table2/roberta_large_lora_houlsby", "rte", None),  # † rows start from the pre-trained model
    ("table2/roberta_base_ft", "mrpc", None),  # cited rows: the protocol is LoRA's
])
def test_mnli_initialisation_follows_the_protocol(compose, experiment, task, expected):
    cfg = compose(f"+experiment={experiment}", f"task=glue/{task}", "scale=paper")
    assert cfg.init_from_task == expected
