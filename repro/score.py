"""`python -m repro.score RUN_DIR... | --all [--runs DIR] [--dry-run]`: re-score finished runs from what they saved.

A run's metrics are recomputed with the scorers installed now, without re-training, and its `result.json` is
updated atomically:
- classification (GLUE): every epoch's dev predictions (`predictions/<split>.epoch<k>.jsonl`, listed under
  `predictions`) are scored again with `repro.kinds.classification.split_metrics`; each epoch keeps its `<split>/loss`; the best
  epoch is chosen again with `repro.loop.is_better` on `main_metric` (a NaN epoch is never the best); the trivial
  baseline is recomputed from the labels (`repro.kinds.classification.classification_baseline`).
- generation: every decoded epoch's outputs (`outputs/<split>.epoch<k>.jsonl`, listed under `outputs`) are scored
  again with `repro.generation.metrics.score`, as `repro.kinds.generation.decode_and_score` does (the first eval
  split gives the headline numbers; `best_outputs` follows the new best epoch). A stored metric that the current
  scorers cannot recompute (METEOR without Java; WebNLG's seen/unseen split when the seen categories are unknown)
  keeps its old value, is named under `scored.kept`, and is warned about.

The saved weights stay those of the epoch chosen at training time: `weights_epoch` names it, and a warning says
when the new best epoch differs. The record gets `scored`: when, the scorer package versions and git commit, and
the headline metrics that changed (`{metric: [old, new]}`). Everything is computed before anything is written, and
the record is replaced atomically, so a re-score that fails leaves the old `result.json` as it was.

One line per run: `<run id>: <main metric> old -> new, best epoch old[ -> new]`, `up to date`, or `skipped: why`
(an incomplete or failed run, no saved predictions, a missing file, a run locked by a training process). Exit
status 0 when at least one run was re-scored or is up to date, 1 when none could be, 2 (`error: ...`) for bad
input (no such directory, not a run folder, --all over an empty runs folder).
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from repro.errors import ReproError, exit_on_user_error
from repro.results import LOCK_FILE, RESULT_FILE, read_result, write_json_atomic

# the packages whose code computes the metrics (GLUE: scikit-learn, scipy; generation: the rest)
SCORER_PACKAGES = ("scikit-learn", "scipy", "sacrebleu", "nltk", "rouge-score", "pycocoevalcap")
CHECKPOINT_FILE = "checkpoint.pt"  # repro.checkpoint.CHECKPOINT_FILE (not imported: it pulls in torch)


class Skip(Exception):
    """This run cannot be re-scored; the message says why, in one line."""


@dataclass
class Outcome:
    run_id: str
    status: str  # "rescored", "up to date", "skipped", "failed"
    line: str


def scorer_versions() -> dict[str, str | None]:
    """Versions of the scorer packages and the repository's git commit (`repro.provenance.git_commit`)."""
    from repro import provenance

    versions: dict[str, str | None] = {}
    for name in SCORER_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["git_commit"] = provenance.git_commit()
    return versions


def _same(a: Any, b: Any) -> bool:
    """Equality as stored (NaN equals NaN: both are written as `NaN`)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def read_jsonl(run_dir: Path, relative: str) -> list[dict[str, Any]]:
    path = run_dir / relative
    if not path.is_file():
        raise Skip(f"missing file {relative}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise Skip(f"{relative}:{lineno}: not a JSON line ({exc.msg})") from None
            if not isinstance(row, dict):
                raise Skip(f"{relative}:{lineno}: expected a JSON object")
            rows.append(row)
    return rows


def _check_count(record: dict, split: str, relative: str, n: int) -> None:
    expected = (record.get("eval_examples") or {}).get(split)
    if expected is not None and expected != n:
        raise Skip(f"{relative} has {n} lines, the run evaluated {expected} {split} examples")


# --- classification -------------------------------------------------------------------------------------------

def rescore_classification(record: dict, run_dir: Path, notes: list[str], kept: set[str]) -> dict[str, Any]:
    """New `epochs` and `trivial_baseline` from the saved per-epoch predictions (every metric is recomputable:
    nothing is `kept`)."""
    import numpy as np
    from omegaconf import OmegaConf
    from scipy.stats import ConstantInputWarning

    from repro.kinds.classification import classification_baseline, split_metrics

    task = record["config"]["task"]
    index = record.get("predictions")
    if not index:
        raise Skip("no saved predictions (the run predates per-epoch prediction saving; re-run it to re-score)")
    splits, names = list(task["eval_splits"]), list(task["metrics"])
    main = record.get("main_metric") or task["main_metric"]
    epochs = copy.deepcopy(record.get("epochs") or [])
    if not epochs:
        raise Skip("the record lists no epochs")
    labels: dict[str, list] | None = None
    for entry in epochs:
        preds, refs = {}, {}
        for split in splits:
            key = f"{split}/epoch{entry['epoch']}"
            if key not in index:
                raise Skip(f"no predictions listed for {key}")
            rows = read_jsonl(run_dir, index[key])
            _check_count(record, split, index[key], len(rows))
            try:
                preds[split] = np.asarray([r["prediction"] for r in rows])
                refs[split] = np.asarray([r["label"] for r in rows])
            except KeyError as exc:
                raise Skip(f"{index[key]}: a line lacks {exc}") from None
        if labels is None:
            labels = {split: ref.tolist() for split, ref in refs.items()}
        elif any(refs[split].tolist() != labels[split] for split in splits):
            raise Skip(f"the labels saved with epoch {entry['epoch']} differ from epoch {epochs[0]['epoch']}'s")
        with warnings.catch_warnings():  # a constant prediction's correlation is NaN: noted below, once
            warnings.simplefilter("ignore", ConstantInputWarning)
            fresh = split_metrics(names, preds, refs)
        entry["metrics"] = {**entry.get("metrics", {}), **fresh}  # keeps `<split>/loss`
        value = fresh.get(main)
        if isinstance(value, float) and math.isnan(value):
            notes.append(f"epoch {entry['epoch']}: {main} is NaN (e.g. constant predictions); never the best epoch")
    data = SimpleNamespace(eval={split: [{"label": y} for y in labels[split]] for split in splits})
    return {"epochs": epochs, "trivial_baseline": classification_baseline(OmegaConf.create(task), data)}


# --- generation -----------------------------------------------------------------------------------------------

def seen_categories(record: dict) -> set[str] | None:
    """WebNLG's seen categories (those of the training pairs): from the record when it stores them, else from the
    offline training file when the run's `data.root` is here; None when unknown."""
    if record.get("seen_categories") is not None:
        return set(record["seen_categories"])
    config = record.get("config") or {}
    root = (config.get("data") or {}).get("root")
    if not root or not Path(root).is_dir():
        return None
    from omegaconf import OmegaConf

    from repro.data.generation import load_generation_data

    try:
        data = load_generation_data(OmegaConf.create(config["task"]), OmegaConf.create(config["data"]))
    except (ReproError, OSError, KeyError):
        return None
    return data.train_categories


def rescore_generation(record: dict, run_dir: Path, notes: list[str], kept: set[str]) -> dict[str, Any]:
    """New `epochs` from the saved outputs of every decoded epoch (epochs that were not decoded stay as they are)."""
    task = record["config"]["task"]
    index = record.get("outputs")
    if not index:
        raise Skip("no saved outputs (outputs/<split>.epoch<k>.jsonl) to re-score")
    splits = list(task["eval_splits"])
    epochs = copy.deepcopy(record.get("epochs") or [])
    if not epochs:
        raise Skip("the record lists no epochs")
    from repro.generation.metrics import score_outputs

    seen: set[str] | None = None
    seen_looked_up = False
    for entry in epochs:
        keys = [f"{split}/epoch{entry['epoch']}" for split in splits]
        listed = [key for key in keys if key in index]
        if not listed:
            continue  # not decoded in this epoch (task.recipe.decode_every_epoch false)
        if len(listed) < len(keys):
            raise Skip(f"no outputs listed for {', '.join(k for k in keys if k not in index)}")
        old = entry.get("metrics", {})
        fresh: dict[str, float] = {}
        for n, (split, key) in enumerate(zip(splits, keys)):
            rows = read_jsonl(run_dir, index[key])
            _check_count(record, split, index[key], len(rows))
            if not seen_looked_up and any("category" in r for r in rows):
                seen, seen_looked_up = seen_categories(record), True
            try:
                scores = score_outputs(task["metric_set"], rows, seen)
            except KeyError as exc:
                raise Skip(f"{index[key]}: a line lacks {exc}") from None
            except ValueError as exc:
                raise Skip(f"{index[key]}: {exc}") from None
            fresh.update({f"{split}/{k}": v for k, v in scores.items()})
            stale = [k for k in old if k.startswith(f"{split}/") and k != f"{split}/loss" and k not in fresh]
            if n == 0:  # the first eval split gives the headline numbers, as in the pipeline
                fresh.update(scores)
                stale += [k for k in old if "/" not in k and k not in fresh]
            kept.update(stale)
        entry["metrics"] = {**old, **fresh}
    if kept:
        why = []
        if any(k.split("/")[-1] in ("METEOR", "MET") for k in kept):
            why.append("METEOR needs Java")
        if any(k.endswith(("_S", "_U")) for k in kept):
            why.append("the seen categories are not recorded")
        notes.append(f"kept stored values of {', '.join(sorted(kept))} (not recomputed: "
                     f"{'; '.join(why) or 'the current scorers do not produce them'})")
    return {"epochs": epochs}


# --- one run --------------------------------------------------------------------------------------------------

def select_best(epochs: list[dict], main: str) -> tuple[int, dict[str, float]]:
    """The trainers' rule: the first evaluation whose main metric `is_better` than every earlier one, in the order
    they ran (an epoch's `step_evals` (train.eval_every_steps, not re-scored: no predictions kept), then its end)."""
    from repro.loop import is_better

    best_epoch, best_metrics = -1, {}
    for entry in epochs:
        for metrics in [e.get("metrics", {}) for e in entry.get("step_evals", [])] + [entry.get("metrics", {})]:
            if main in metrics and is_better(metrics[main], best_metrics.get(main) if best_epoch > 0 else None):
                best_epoch, best_metrics = entry["epoch"], metrics
    return best_epoch, best_metrics


# task kind -> what re-scores its saved predictions / outputs into new `epochs` (None: the kind saves nothing to
# re-score: long_context's metrics come from the model itself, perplexity and passkey)
Rescorer = Callable[[dict, Path, list, set], dict]
RESCORERS: dict[str, Rescorer | None] = {"classification": rescore_classification,
                                         "generation": rescore_generation, "long_context": None}


def rescore(record: dict[str, Any], run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """The re-scored record (a new dict; `record` is not modified) and notes worth a warning."""
    status = record.get("status")
    if status != "complete":
        reason = f": {record['error']}" if record.get("error") else ""
        raise Skip(f"the run is {status or 'incomplete'}, not complete{reason}".splitlines()[0])
    try:
        task = record["config"]["task"]
        kind = task["kind"]
        main = record.get("main_metric") or task["main_metric"]
    except (KeyError, TypeError) as exc:
        raise Skip(f"the record's config lacks the task's {exc}") from None
    notes: list[str] = []
    kept: set[str] = set()
    new = copy.deepcopy(record)
    if kind not in RESCORERS:
        raise Skip(f"unknown task kind {kind!r}")
    if RESCORERS[kind] is None:
        raise Skip(f"{kind} runs save no predictions or outputs to re-score; re-run them (force=true)")
    new.update(RESCORERS[kind](record, run_dir, notes, kept))
    best_epoch, best_metrics = select_best(new["epochs"], main)
    if best_epoch < 0:
        raise Skip(f"no epoch has a {main} to choose the best epoch by")
    weights_epoch = record.get("weights_epoch", record.get("best_epoch"))
    new.update(best_epoch=best_epoch, best_metrics=best_metrics, weights_epoch=weights_epoch)
    if "best_outputs" in record:  # generation: the best epoch's decoded outputs
        new["best_outputs"] = {s: record["outputs"].get(f"{s}/epoch{best_epoch}") for s in task["eval_splits"]}
    if best_epoch != weights_epoch:
        weights_dir = (record.get("weights") or {}).get("dir", "adapter")
        notes.append(f"the best epoch is now {best_epoch}, but the saved weights ({weights_dir}/) are epoch "
                     f"{weights_epoch}'s (recorded as weights_epoch)")
    old_best = record.get("best_metrics") or {}
    changed = {k: [old_best.get(k), v] for k, v in best_metrics.items()
               if "/" not in k and not _same(old_best.get(k), v)}
    scored: dict[str, Any] = {"at": datetime.now(timezone.utc).isoformat(), "versions": scorer_versions(),
                              "changed": changed}
    if record.get("best_epoch") != best_epoch:
        scored["best_epoch"] = [record.get("best_epoch"), best_epoch]
    if kept:
        scored["kept"] = sorted(kept)
    new["scored"] = scored
    return new, notes


def up_to_date(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Nothing to write: the same numbers, already recorded as scored with the same package versions (a new git
    commit alone does not make a run stale)."""
    packages = lambda r: {k: v for k, v in ((r.get("scored") or {}).get("versions") or {}).items()  # noqa: E731
                          if k != "git_commit"}
    strip = lambda r: {k: v for k, v in r.items() if k != "scored"}  # noqa: E731
    return "scored" in old and packages(old) == packages(new) and _same(strip(old), strip(new))


def process(run_dir: Path, dry_run: bool = False) -> Outcome:
    """Re-score one run folder under its training lock; never raises for a run that cannot be re-scored."""
    from repro.runner import RunInProgress, run_lock

    rid = run_dir.name
    if not any((run_dir / name).exists() for name in (RESULT_FILE, LOCK_FILE, CHECKPOINT_FILE)):
        return Outcome(rid, "skipped", f"{rid}: skipped: not a run folder (no {RESULT_FILE})")  # no lock file made
    try:
        with run_lock(run_dir):
            record = read_result(run_dir)
            if record is None:
                state = "unfinished run" if (run_dir / CHECKPOINT_FILE).exists() else "incomplete run or damaged file"
                raise Skip(f"no readable {RESULT_FILE} ({state})")
            new, notes = rescore(record, run_dir)
            for note in notes:
                print(f"warning: {rid}: {note}", file=sys.stderr)
            main = new.get("main_metric") or new["config"]["task"]["main_metric"]
            if up_to_date(record, new):
                return Outcome(rid, "up to date", f"{rid}: up to date ({main} "
                               f"{_fmt(new['best_metrics'].get(main))}, best epoch {new['best_epoch']})")
            if not dry_run:
                write_json_atomic(run_dir / RESULT_FILE, new)
            epochs = str(record.get("best_epoch"))
            if record.get("best_epoch") != new["best_epoch"]:
                epochs += f" -> {new['best_epoch']}"
            line = (f"{rid}: {main} {_fmt((record.get('best_metrics') or {}).get(main))} -> "
                    f"{_fmt(new['best_metrics'].get(main))}, best epoch {epochs}")
            return Outcome(rid, "rescored", line + (" (dry run: not written)" if dry_run else ""))
    except RunInProgress:
        return Outcome(rid, "skipped", f"{rid}: skipped: locked by a training process (re-score it when it ends)")
    except Skip as exc:
        return Outcome(rid, "skipped", f"{rid}: skipped: {exc}")
    except Exception as exc:  # a scorer failed: this run keeps its old record, the others go on
        return Outcome(rid, "failed", f"{rid}: not re-scored ({RESULT_FILE} unchanged): {type(exc).__name__}: {exc}")


# --- command line ---------------------------------------------------------------------------------------------

def default_runs() -> Path:
    return Path(os.environ.get("REPRO_RESULTS", "results")) / "runs"


def run_folders(paths: list[Path], all_runs: bool, runs: Path | None) -> list[Path]:
    """The run folders to re-score; bad input raises ReproError (exit status 2) before anything is read."""
    if all_runs and paths:
        raise ReproError("give run folders or --all, not both")
    if runs is not None and not all_runs:
        raise ReproError("--runs goes with --all")
    if all_runs:
        root = runs if runs is not None else default_runs()
        if not root.is_dir():
            raise ReproError(f"no such directory: {root}")
        folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not folders:
            raise ReproError(f"no run folders under {root}")
        return folders
    if not paths:
        raise ReproError("give run folders to re-score, or --all")
    for path in paths:
        if not path.exists():
            raise ReproError(f"no such directory: {path}")
        if not path.is_dir():
            raise ReproError(f"not a run folder (not a directory): {path}")
        if not any((path / name).exists() for name in (RESULT_FILE, LOCK_FILE, CHECKPOINT_FILE)):
            hint = ""
            if any((child / RESULT_FILE).is_file() for child in path.iterdir() if child.is_dir()):
                hint = f"; it holds run folders: --all --runs {path}"
            raise ReproError(f"not a run folder (no {RESULT_FILE}): {path}{hint}")
    return list(dict.fromkeys(paths))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m repro.score", usage="%(prog)s RUN_DIR... | --all [--runs DIR] [--dry-run]",
        description="Recompute runs' metrics from their saved predictions/outputs with the current scorers and "
                    "update result.json atomically (scorer versions under `scored`).")
    parser.add_argument("run_dirs", nargs="*", type=Path, metavar="RUN_DIR",
                        help="run folders (results/runs/<run id>)")
    parser.add_argument("--all", action="store_true", help="every run folder under --runs")
    parser.add_argument("--runs", type=Path, default=None, metavar="DIR",
                        help="with --all: the runs folder (default: $REPRO_RESULTS/runs or results/runs)")
    parser.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    folders = run_folders(args.run_dirs, args.all, args.runs)
    counts: dict[str, int] = {}
    for folder in folders:
        outcome = process(folder, args.dry_run)
        print(outcome.line, flush=True)
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    if len(folders) > 1:
        print(", ".join(f"{status}: {n}" for status, n in counts.items()), file=sys.stderr)
    return 0 if counts.get("rescored") or counts.get("up to date") else 1


if __name__ == "__main__":
    sys.exit(main())
