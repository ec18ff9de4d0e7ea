"""`python -m repro.score`: re-scoring hand-made run folders (the layout `repro.runner.run` writes) fixes wrong stored
metrics, picks the best epoch as the trainer does (a NaN epoch never), writes atomically and keeps everything
else, and says in one line why a run cannot be re-scored."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from scipy.stats import pearsonr, spearmanr

from repro.generation import metrics as gen_metrics
from repro.results import RESULT_FILE, load, read_result
from repro.score import SCORER_PACKAGES, main
from repro.runner import run_lock

REPO = Path(__file__).resolve().parent.parent

SST2_LABELS = [1, 0, 1, 1, 0, 1, 0, 1]  # majority class 1: 5/8
SST2_PREDS = {1: [1, 1, 1, 0, 1, 1, 1, 0],   # 3/8 right
              2: [1, 0, 1, 1, 0, 1, 1, 1],   # 7/8
              3: [1, 0, 1, 1, 1, 1, 1, 1]}   # 6/8
STSB_LABELS = [0.5, 1.0, 2.5, 3.0, 4.2, 4.8]
STSB_PREDS = {1: [2.0] * 6,                       # constant: Pearson (and Spearman) NaN
              2: [0.7, 1.4, 2.0, 3.5, 3.9, 4.5],  # close
              3: [1.0, 0.5, 3.5, 2.0, 4.0, 3.0]}  # worse


def resolved_config(compose, *overrides: str) -> dict:
    return OmegaConf.to_container(compose(*overrides), resolve=True)


def write_run(root: Path, name: str, config: dict, epochs: list[dict], best_epoch: int, files: dict[str, list[dict]],
              index_key: str, **extra) -> Path:
    """A run folder as `repro.runner.run` leaves it: result.json plus per-epoch files listed under `index_key`."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    index = {}
    for key, rows in files.items():
        split, epoch = key.split("/")
        relative = f"{index_key}/{split}.{epoch}.jsonl"
        (run_dir / index_key).mkdir(exist_ok=True)
        (run_dir / relative).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        index[key] = relative
    task = config["task"]
    best = next(e for e in epochs if e["epoch"] == best_epoch)["metrics"]
    record = {"run_id": name, "task": task["name"], "model": config["model"]["name"],
              "method": config["method"]["name"], "seed": 0, "scale": None, "config": config, "status": "complete",
              "params": {"trainable": 1234, "head": 10, "total": 100000}, "main_metric": task["main_metric"],
              "epochs": epochs, "best_epoch": best_epoch, "best_metrics": best,
              "train_examples": 100, "wall_time_s": 12.5, "weights": {"dir": "adapter", "format": "peft"},
              "versions": {"torch": "2.13.0"}, "git_commit": "abc123", index_key: index, **extra}
    (run_dir / RESULT_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return run_dir


def glue_run(compose, root: Path, task: str, labels: list, preds: dict[int, list], stored: dict[int, dict],
             best_epoch: int, name: str | None = None) -> Path:
    config = resolved_config(compose, f"task=glue/{task}", "model=minilm-l6", "method=lora", "seed=0")
    epochs = [{"epoch": k, "train_loss": 1.0 / k,
               "metrics": {"validation/loss": 0.5 + k / 10, **{f"validation/{m}": v for m, v in stored[k].items()},
                           **stored[k]}} for k in sorted(preds)]
    files = {f"validation/epoch{k}": [{"prediction": p, "label": y} for p, y in zip(preds[k], labels)]
             for k in preds}
    return write_run(root, name or f"{task}_minilm-l6_lora_s0_0000", config, epochs, best_epoch, files,
                     "predictions", eval_examples={"validation": len(labels)},
                     trivial_baseline={"validation/accuracy": 0.1, "accuracy": 0.1})


@pytest.fixture
def sst2_run(compose, tmp_path) -> Path:
    # deliberately wrong stored numbers: epoch 1 claims 0.9 and was chosen as best at "training time"
    stored = {1: {"accuracy": 0.9}, 2: {"accuracy": 0.5}, 3: {"accuracy": 0.6}}
    return glue_run(compose, tmp_path / "runs", "sst2", SST2_LABELS, SST2_PREDS, stored, best_epoch=1)


def test_rescore_fixes_glue_metrics_best_epoch_and_baseline(sst2_run, capsys):
    before = json.loads((sst2_run / RESULT_FILE).read_text())
    assert main([str(sst2_run)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"{sst2_run.name}: accuracy 0.9000 -> 0.8750, best epoch 1 -> 2"
    assert "warning:" in err and "saved weights (adapter/) are epoch 1's" in err

    record = json.loads((sst2_run / RESULT_FILE).read_text())
    accuracy = {e["epoch"]: e["metrics"]["accuracy"] for e in record["epochs"]}
    assert accuracy == {1: 0.375, 2: 0.875, 3: 0.75}
    assert all(e["metrics"]["validation/accuracy"] == e["metrics"]["accuracy"] for e in record["epochs"])
    assert [e["metrics"]["validation/loss"] for e in record["epochs"]] == [0.6, 0.7, 0.8]  # losses kept
    assert [e["train_loss"] for e in record["epochs"]] == [e["train_loss"] for e in before["epochs"]]
    assert record["best_epoch"] == 2 and record["best_metrics"] == record["epochs"][1]["metrics"]
    assert record["weights_epoch"] == 1  # the adapter/ weights are still epoch 1's
    assert record["trivial_baseline"] == {"validation/accuracy": 0.625, "accuracy": 0.625}
    for key in ("params", "config", "wall_time_s", "versions", "git_commit", "predictions", "eval_examples"):
        assert record[key] == before[key], key  # everything else untouched
    scored = record["scored"]
    assert set(SCORER_PACKAGES) <= set(scored["versions"]) and "git_commit" in scored["versions"]
    assert scored["versions"]["scikit-learn"] and scored["versions"]["scipy"]
    assert scored["changed"] == {"accuracy": [0.9, 0.875]} and scored["best_epoch"] == [1, 2]
    assert scored["at"].startswith("20")
    assert not list(sst2_run.glob(".*.tmp"))
    assert load(sst2_run.parent).loc[0, "best.accuracy"] == 0.875  # what `make tables` reads

    # a second pass finds nothing to do and writes nothing
    written = (sst2_run / RESULT_FILE).read_bytes()
    assert main([str(sst2_run)]) == 0
    assert capsys.readouterr().out.strip() == f"{sst2_run.name}: up to date (accuracy 0.8750, best epoch 2)"
    assert (sst2_run / RESULT_FILE).read_bytes() == written


def test_nan_pearson_epoch_is_never_best(compose, tmp_path, capsys):
    # stored: the constant-prediction epoch 1 claims the best Pearson
    stored = {1: {"pearson": 0.99, "spearman": 0.99}, 2: {"pearson": 0.1, "spearman": 0.1},
              3: {"pearson": 0.2, "spearman": 0.2}}
    run_dir = glue_run(compose, tmp_path / "runs", "stsb", STSB_LABELS, STSB_PREDS, stored, best_epoch=1)
    assert main([str(run_dir)]) == 0
    out, err = capsys.readouterr()
    assert "best epoch 1 -> 2" in out and "epoch 1: pearson is NaN" in err

    record = read_result(run_dir)  # parses (NaN is stored as NaN)
    first, second, third = (e["metrics"] for e in record["epochs"])
    assert math.isnan(first["pearson"]) and math.isnan(first["spearman"])
    assert second["pearson"] == pytest.approx(pearsonr(STSB_PREDS[2], STSB_LABELS)[0])
    assert second["spearman"] == pytest.approx(spearmanr(STSB_PREDS[2], STSB_LABELS)[0])
    assert third["pearson"] == pytest.approx(pearsonr(STSB_PREDS[3], STSB_LABELS)[0])
    assert third["pearson"] < second["pearson"]
    assert record["best_epoch"] == 2 and record["best_metrics"]["pearson"] == second["pearson"]
    assert record["trivial_baseline"] == {"validation/pearson": 0.0, "validation/spearman": 0.0,
                                          "pearson": 0.0, "spearman": 0.0}
    assert record["scored"]["changed"]["pearson"] == [0.99, second["pearson"]]


def test_dry_run_writes_nothing(sst2_run, capsys):
    before = (sst2_run / RESULT_FILE).read_bytes()
    assert main(["--dry-run", str(sst2_run)]) == 0
    assert capsys.readouterr().out.strip() == (f"{sst2_run.name}: accuracy 0.9000 -> 0.8750, best epoch 1 -> 2 "
                                               "(dry run: not written)")
    assert (sst2_run / RESULT_FILE).read_bytes() == before


def test_unscorable_runs_are_skipped_with_reason(compose, sst2_run, tmp_path, capsys):
    root = sst2_run.parent
    stored = {1: {"accuracy": 0.5}}
    legacy = glue_run(compose, root, "sst2", SST2_LABELS, {1: SST2_PREDS[1]}, stored, 1, name="legacy")
    record = read_result(legacy)
    del record["predictions"]
    (legacy / RESULT_FILE).write_text(json.dumps(record))
    failed = glue_run(compose, root, "sst2", SST2_LABELS, {1: SST2_PREDS[1]}, stored, 1, name="failed")
    record = read_result(failed)
    (failed / RESULT_FILE).write_text(json.dumps({**record, "status": "failed", "error": "FloatingPointError: nan"}))
    gap = glue_run(compose, root, "sst2", SST2_LABELS, SST2_PREDS, {k: stored[1] for k in SST2_PREDS}, 1, name="gap")
    (gap / "predictions" / "validation.epoch2.jsonl").unlink()
    unfinished = root / "unfinished"
    unfinished.mkdir()
    (unfinished / ".lock").touch()
    (root / "stray").mkdir()

    def one(run_dir: Path) -> tuple[int, str]:
        before = (run_dir / RESULT_FILE).read_bytes() if (run_dir / RESULT_FILE).exists() else None
        code = main([str(run_dir)])
        after = (run_dir / RESULT_FILE).read_bytes() if (run_dir / RESULT_FILE).exists() else None
        assert after == before
        return code, capsys.readouterr().out.strip()

    assert one(legacy) == (1, "legacy: skipped: no saved predictions (the run predates per-epoch prediction "
                              "saving; re-run it to re-score)")
    assert one(failed) == (1, "failed: skipped: the run is failed, not complete: FloatingPointError: nan")
    assert one(gap) == (1, "gap: skipped: missing file predictions/validation.epoch2.jsonl")
    assert one(unfinished) == (1, "unfinished: skipped: no readable result.json (incomplete run or damaged file)")
    with run_lock(sst2_run):  # a training process holds the run
        code, out = one(sst2_run)
    assert (code, out) == (1, f"{sst2_run.name}: skipped: locked by a training process (re-score it when it ends)")

    # --all: one line per run; one run re-scored is success
    assert main(["--all", "--runs", str(root)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and f"{sst2_run.name}: accuracy 0.9000 -> 0.8750, best epoch 1 -> 2" in lines
    assert sum("skipped:" in line for line in lines) == 5
    assert "stray: skipped: not a run folder (no result.json)" in lines
    assert not (root / "stray" / ".lock").exists()


def test_a_failing_rescore_leaves_the_record_untouched(sst2_run, monkeypatch, capsys):
    before = (sst2_run / RESULT_FILE).read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("scorer exploded")

    monkeypatch.setattr("repro.kinds.classification.split_metrics", broken)
    assert main([str(sst2_run)]) == 1
    assert capsys.readouterr().out.strip() == (f"{sst2_run.name}: not re-scored (result.json unchanged): "
                                               "RuntimeError: scorer exploded")
    assert (sst2_run / RESULT_FILE).read_bytes() == before
    monkeypatch.undo()

    # a crash at the rename (the atomic step) leaves the old file and no temporary behind
    def no_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("repro.results.os.replace", no_replace)
    assert main([str(sst2_run)]) == 1
    assert "OSError: disk full" in capsys.readouterr().out
    assert (sst2_run / RESULT_FILE).read_bytes() == before
    assert not list(sst2_run.glob(".*.tmp"))


def test_bad_input_exits_2(tmp_path, capsys):
    def error(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        return capsys.readouterr().err.strip()

    assert error([str(tmp_path / "nope")]) == f"error: no such directory: {tmp_path / 'nope'}"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert error([str(plain)]) == f"error: not a run folder (no result.json): {plain}"
    (plain / "a_run").mkdir()
    (plain / "a_run" / RESULT_FILE).write_text("{}")
    assert error([str(plain)]).endswith(f"; it holds run folders: --all --runs {plain}")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert error(["--all", "--runs", str(empty)]) == f"error: no run folders under {empty}"
    assert error(["--all", "--runs", str(tmp_path / "nope")]) == f"error: no such directory: {tmp_path / 'nope'}"
    assert error([]) == "error: give run folders to re-score, or --all"
    assert error(["--all", str(plain)]) == "error: give run folders or --all, not both"


def test_cli_all_uses_repro_results(sst2_run, tmp_path):
    env = {**os.environ, "REPRO_RESULTS": str(sst2_run.parent.parent), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "repro.score", "--all"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{sst2_run.name}: accuracy 0.9000 -> 0.8750, best epoch 1 -> 2"
    assert read_result(sst2_run)["best_epoch"] == 2


def gen_outputs(hyps: list[str], refs: list[list[str]], categories: list[str] | None = None) -> list[dict]:
    return [{"source": f"name : input {i}", "hypothesis": h, "references": r,
             **({"category": categories[i]} if categories else {})} for i, (h, r) in enumerate(zip(hyps, refs))]


E2E_REFS = [["The Vaults is a pub near the river .", "The Vaults pub is by the river ."],
            ["Blue Spice serves Thai food in the city centre ."],
            ["The Eagle is a cheap coffee shop ."]]
E2E_HYPS = {1: ["The Vaults is a pub .", "Blue Spice serves food .", "The Eagle is a shop ."],
            2: ["The Vaults is a pub near the river .", "Blue Spice serves Thai food in the city centre .",
                "The Eagle is a cheap coffee shop near the river ."]}


@pytest.mark.filterwarnings("ignore:java not found")
def test_generation_run_rescored_from_outputs(compose, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gen_metrics, "HAS_JAVA", False)  # fast and the same everywhere: METEOR cannot be redone
    config = resolved_config(compose, "task=e2e", "model=tiny-gpt2", "method=lora", "seed=0")
    wrong = {"BLEU": 90.0, "NIST": 1.0, "METEOR": 40.0, "ROUGE_L": 50.0, "CIDEr": 1.0}
    epochs = [{"epoch": k, "train_loss": 2.0 / k,
               "metrics": {"test/loss": 2.5 - k / 10, **{f"test/{m}": v for m, v in wrong.items()}, **wrong}}
              for k in (1, 2)]
    epochs[1]["metrics"]["BLEU"] = epochs[1]["metrics"]["test/BLEU"] = 10.0
    files = {f"test/epoch{k}": gen_outputs(E2E_HYPS[k], E2E_REFS) for k in (1, 2)}
    run_dir = write_run(tmp_path / "runs", "e2e_tiny-gpt2_lora_s0_0000", config, epochs, 1, files, "outputs",
                        eval_examples={"test": 3}, best_outputs={"test": "outputs/test.epoch1.jsonl"})

    assert main([str(run_dir)]) == 0
    out, err = capsys.readouterr()
    expected = {k: gen_metrics.score("e2e", E2E_HYPS[k], E2E_REFS) for k in (1, 2)}
    assert out.strip() == f"{run_dir.name}: BLEU 90.0000 -> {expected[2]['BLEU']:.4f}, best epoch 1 -> 2"
    assert "kept stored values of METEOR, test/METEOR (not recomputed: METEOR needs Java)" in err

    record = read_result(run_dir)
    for entry in record["epochs"]:
        for name, value in expected[entry["epoch"]].items():
            assert entry["metrics"][name] == pytest.approx(value) == entry["metrics"][f"test/{name}"]
        assert entry["metrics"]["METEOR"] == 40.0  # not recomputable here: kept, and said so
    assert [e["metrics"]["test/loss"] for e in record["epochs"]] == [2.4, 2.3]
    assert record["best_epoch"] == 2 and record["weights_epoch"] == 1
    assert record["best_outputs"] == {"test": "outputs/test.epoch2.jsonl"}
    assert record["scored"]["kept"] == ["METEOR", "test/METEOR"]
    assert record["scored"]["versions"]["sacrebleu"] and record["scored"]["versions"]["nltk"]
    assert set(record["scored"]["changed"]) == {"BLEU", "NIST", "ROUGE_L", "CIDEr"}


@pytest.mark.filterwarnings("ignore:java not found")
def test_webnlg_seen_unseen_needs_the_seen_categories(compose, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gen_metrics, "HAS_JAVA", False)
    config = resolved_config(compose, "task=webnlg", "model=tiny-gpt2", "method=lora", "seed=0")
    config["data"]["root"] = None
    hyps, refs, cats = ["a b c d e", "v w x y z"], [["a b c d e"], ["q r s t u"]], ["Seen", "New"]
    stored = {"BLEU": 1.0, "TER": 1.0, "BLEU_S": 1.0, "BLEU_U": 1.0, "TER_S": 1.0, "TER_U": 1.0}
    epochs = [{"epoch": 1, "train_loss": 1.0,
               "metrics": {"test/loss": 2.0, **{f"test/{m}": v for m, v in stored.items()}, **stored}}]
    files = {"test/epoch1": gen_outputs(hyps, refs, cats)}
    expected = gen_metrics.score("webnlg", hyps, refs, cats, {"Seen"})

    unknown = write_run(tmp_path / "runs", "webnlg_unknown", config, epochs, 1, files, "outputs")
    assert main([str(unknown)]) == 0
    assert "not recomputed: the seen categories are not recorded" in capsys.readouterr().err
    record = read_result(unknown)
    assert record["best_metrics"]["BLEU"] == pytest.approx(expected["BLEU"]) and record["best_metrics"]["BLEU_S"] == 1.0

    known = write_run(tmp_path / "runs", "webnlg_known", config, epochs, 1, files, "outputs", seen_categories=["Seen"])
    assert main([str(known)]) == 0
    best = read_result(known)["best_metrics"]
    assert best["BLEU_S"] == pytest.approx(100) and best["BLEU_U"] == 0.0 and best["TER_S"] == 0.0
    assert "kept" not in read_result(known)["scored"]
