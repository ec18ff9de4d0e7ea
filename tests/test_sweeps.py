"""Sweeps (Tables 5 and 6), the equal-budget rank rule, and the launchers: every sweep composes at every scale
with the basic and joblib launchers; the SLURM configs compose; one multirun each through joblib and submitit's
local executor trains tiny-bert and ends in a generated table."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from repro.budget import lora_params, rank_for_budget
from repro.config import CONF_DIR
from repro.plan import Composer, expand

REPO = Path(__file__).resolve().parent.parent
SWEEPS = {"rank": 15, "targets": 7, "seeds": 5}  # sweep -> number of runs it expands to
TMAP = {"W_q": "q", "W_k": "k", "W_v": "v", "W_o": "o"}


def _paper(name):
    with open(CONF_DIR / "paper" / f"{name}.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_budget_rule_gives_table5_ranks(paper_reference):
    gpt3 = paper_reference["models"]["gpt3_175b"]
    table5 = paper_reference["table5_weight_types"]
    budget = table5["trainable_params"]["value"] * 1e6
    for column in table5["columns"]:
        n = len(column["weight_types"])
        assert rank_for_budget(budget, gpt3["n_layers"], gpt3["full_rank_d"], n) == column["rank"]


def test_budget_rule_edges():
    assert lora_params(2, 32, 8, 1) == 1024
    assert rank_for_budget(1024, 2, 32, 4) == 2 and rank_for_budget(1, 2, 32, 4) == 1
    with pytest.raises(Exception):
        rank_for_budget(0, 2, 32, 1)


def test_shipped_table5_and_table6_match_paper(paper_reference):
    t5, ref5 = _paper("table5_weight_types"), paper_reference["table5_weight_types"]
    assert t5["budget"]["printed"] == ref5["trainable_params"]["printed"]
    for ours, col in zip(t5["columns"], ref5["columns"], strict=True):
        assert ours["targets"] == [TMAP[w] for w in col["weight_types"]] and ours["rank"] == col["rank"]
        assert ours["results"] == {k: col[k]["value"] for k in ("WikiSQL", "MultiNLI")}
    t6, ref6 = _paper("table6_rank"), paper_reference["table6_rank"]
    assert t6["ranks"] == ref6["ranks"]
    for ours, row in zip(t6["rows"], ref6["rows"], strict=True):
        assert (ours["dataset"], ours["targets"]) == (row["dataset"], [TMAP[w] for w in row["weight_types"]])
        assert ours["by_rank"] == {b["r"]: b["value"] for b in row["by_rank"]}


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_every_sweep_composes(sweep, scale, launcher):
    compose = Composer(REPO / "sweeps" / f"{sweep}.yaml")
    model = "roberta-base" if scale == "paper" else "minilm-l6"
    base = [f"scale={scale}", f"model={model}", "task=glue/rte", f"hydra/launcher={launcher}"]
    jobs = expand(compose, base)
    assert len(jobs) == SWEEPS[sweep]
    for job in jobs:
        cfg = compose(job, hydra_cfg=True)
        assert cfg.hydra.launcher._target_.endswith("BasicLauncher" if launcher == "basic" else "JoblibLauncher")
        del cfg.hydra
        OmegaConf.resolve(cfg)
        assert cfg.scale_name == scale


@pytest.mark.parametrize("sweep", ["rank", "targets"])
def test_rank_and_target_sweeps_draw_a_independently_of_r(sweep):
    compose = Composer(REPO / "sweeps" / f"{sweep}.yaml")
    jobs = expand(compose, ["model=tiny-bert"])
    assert {compose(job).method.init for job in jobs} == {"peft_default"}


def test_targets_sweep_ranks_on_tiny_bert():
    compose = Composer(REPO / "sweeps" / "targets.yaml")
    ranks = {tuple(compose(job).method.targets): compose(job).method.r
             for job in expand(compose, ["model=tiny-bert"])}
    assert ranks[("q",)] == 8 and ranks[("q", "v")] == 4 and ranks[("q", "k", "v", "o")] == 2


@pytest.mark.parametrize("launcher", ["slurm", "submitit_local_cpu"])
def test_submitit_launchers_compose(launcher):
    cfg = Composer(None)([f"hydra/launcher={launcher}", "model=tiny-bert"], hydra_cfg=True)
    assert "submitit_launcher" in cfg.hydra.launcher._target_
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_task == 1 and cfg.hydra.launcher.array_parallelism > 0
        assert cfg.hydra.launcher.setup


def _multirun(tmp_path, data_root, *args, timeout=240):
    env = {**os.environ, "REPRO_RESULTS": str(tmp_path), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    small = [f"data.root={data_root}", "data.max_train_samples=64", "data.max_eval_samples=64", "model=tiny-bert",
             "scale=smoke", "task=glue/rte"]
    proc = subprocess.run([sys.executable, "-m", "repro.train", "-m", *args, *small], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_joblib_multirun_ends_in_tables(tmp_path, data_root):
    """The targets sweep (its resolver registered in the joblib workers by the callback) on two weight sets."""
    proc = _multirun(tmp_path, data_root, "--config-dir", "sweeps", "--config-name", "targets",
                     "method.targets=[q],[q,v]", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert "FutureWarning" not in proc.stderr, proc.stderr[-2000:]  # the workers quiet library chatter too
    from repro.tables import build

    written = build(tmp_path / "runs", tmp_path / "tables")
    text = (tmp_path / "tables" / "targets.md").read_text()
    assert "q (r=8)" in text and "q,v (r=4)" in text and "tiny-bert" in text and "smoke" in text
    assert all(p.is_file() for p in written["targets"]) and (tmp_path / "tables" / "targets.png").is_file()


@pytest.mark.slow
def test_submitit_local_multirun(tmp_path, data_root):
    """One job through submitit's local executor (a SLURM job's path without a cluster); ~35 s on 2 cores."""
    proc = _multirun(tmp_path, data_root, "hydra/launcher=submitit_local_cpu", "+experiment=table2/roberta_base_lora",
                     "seed=0", "init_from_task=null")  # RTE would start from MNLI, which is not offline
    runs = list((tmp_path / "runs").glob("*/result.json"))
    assert len(runs) == 1
    # the summary says where the job's console output went; no folder named after an unexpanded "%j"
    logs = [line.split(": ", 1)[1] for line in (proc.stdout + proc.stderr).splitlines()
            if line.startswith("  job logs (submitit): ")]
    assert len(logs) == 1 and list(Path(logs[0]).glob("*_log.out")), proc.stderr[-2000:]
    assert not list(tmp_path.rglob("%j"))


def _make_dry_run(target: str, *make_vars: str, modules: tuple[str, ...] = ("repro.train",)) -> list[str]:
    """The `python -m <module>` lines of `modules` that `make -n TARGET` would run (recursive makes included)."""
    out = subprocess.run(["make", "-n", "-s", target, *make_vars], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if any(f"-m {m} " in f"{line} " for m in modules)]


def _make_train_overrides(target: str, *make_vars: str) -> list[tuple[str, list[str]]]:
    """The (sweep, overrides) of each `python -m repro.train` line that `make -n TARGET` would run."""
    lines = []
    for line in _make_dry_run(target, *make_vars):
        args = shlex.split(line.split("-m repro.train", 1)[1])
        sweep = args[args.index("--config-name") + 1]
        lines.append((sweep, [a for a in args if "=" in a and not a.startswith("hydra")]))
    return lines


def _budget(overrides: list[str]) -> set[str]:
    """The data/train overrides of a make line, less the per-machine thread count: the budget it gives its runs."""
    return {o for o in overrides if o.startswith(("data.", "train.")) and "num_threads" not in o}


def test_rank_budget_comes_from_each_tasks_recipe():
    """`make reproduce-rank` at cpu scale reads every budget value from the task's `rank_budget` (Tables 5 and 6 use
    one budget per task for every arm); a task the recipe gives no rank budget stops with the missing key."""
    lines = _make_train_overrides("reproduce-rank", "SCALE=cpu", "RANK_TASKS=glue/sst2")
    assert [sweep for sweep, _ in lines] == ["rank", "targets"]
    recipe = yaml.safe_load((CONF_DIR / "cpu_recipe" / "glue.yaml").read_text(encoding="utf-8"))
    for sweep, overrides in lines:
        one = [o.split(",")[0] if o.startswith(("seed=", "method.r=")) else o for o in overrides
               if not o.startswith(("task=", "method.targets="))]
        for task in ("sst2", "stsb"):
            cfg = Composer(REPO / "sweeps" / f"{sweep}.yaml")([*one, f"task=glue/{task}", "method.targets=[q,v]"])
            budget = recipe[task]["rank_budget"]
            got = {"max_train_samples": cfg.data.max_train_samples, "max_eval_samples": cfg.data.max_eval_samples,
                   **{k: cfg.train[k] for k in ("learning_rate", "epochs", "batch_size", "early_stopping_patience",
                                               "early_stopping_min_epochs")}}
            assert got == budget, (sweep, task)
        with pytest.raises(Exception, match="rank_budget"):
            OmegaConf.to_container(Composer(REPO / "sweeps" / f"{sweep}.yaml")([*one, "task=glue/cola"]), resolve=True)


def test_rank_budget_search_runs_two_arms_at_three_seeds_on_the_rank_budget_less_its_rate():
    """`make lr-search-rank`: the rank budget pilots' rate x 0.3 and x 1 at seeds 0-2 on {q} r=1 and {q,k,v,o} r=2,
    every other budget value the rank budget's (as reproduce-rank gives it), scored on held-out training data, each
    arm its own row of the search table."""
    lines = _make_train_overrides("lr-search-rank", "SCALE=cpu")
    assert [sweep for sweep, _ in lines] == ["lr_search_rank"] * 2
    (_, rank_line), _ = _make_train_overrides("reproduce-rank", "SCALE=cpu")
    rank_budget = _budget(rank_line)
    recipe = yaml.safe_load((CONF_DIR / "cpu_recipe" / "glue.yaml").read_text(encoding="utf-8"))
    composer = Composer(REPO / "sweeps" / "lr_search_rank.yaml")
    runs = set()
    for _, overrides in lines:
        budget = _budget(overrides)
        assert budget == {o for o in rank_budget if not o.startswith("train.learning_rate=")}
        for job in expand(composer, overrides):
            cfg = composer(job)
            assert cfg.train.learning_rate == pytest.approx(recipe["stsb"]["rank_budget_pilot_learning_rate"]
                                                            * cfg.lr_factor)
            assert cfg.data.holdout_fraction > 0 and cfg.method.init == "peft_default" and cfg.task.name == "stsb"
            assert cfg.train.epochs == recipe["stsb"]["rank_budget"]["epochs"]
            runs.add((cfg.search_row, cfg.lr_factor, cfg.seed))
    assert runs == {(f"lora {arm}, rank budget", f, s) for arm in ("q r=1", "q,k,v,o r=2") for f in (0.3, 1.0)
                    for s in (0, 1, 2)}


def test_lr_search_gives_listed_methods_the_same_factors_on_their_recipe_rates():
    """`make lr-search LR_SEARCH_METHODS=...` searches methods that have no Table 2 row (the PEFT methods of `make
    compare`): the same three factors times each method's own cpu-recipe rate, scored on held-out training data."""
    (sweep, overrides), = _make_train_overrides("lr-search", "SCALE=cpu", "LR_SEARCH_METHODS=vera,ia3",
                                                "LR_SEARCH_TASKS=glue/stsb")
    assert sweep == "lr_search" and "method=vera,ia3" in overrides and not any("experiment" in o for o in overrides)
    recipe = yaml.safe_load((CONF_DIR / "cpu_recipe" / "glue.yaml").read_text(encoding="utf-8"))["stsb"]
    composer = Composer(REPO / "sweeps" / "lr_search.yaml")
    fixed = [o for o in overrides if not o.startswith(("seed=", "method=", "task="))]
    factors = [float(f) for f in OmegaConf.load(REPO / "sweeps" / "lr_search.yaml").hydra.sweeper.params.lr_factor
               .split(",")]
    for method in ("vera", "ia3"):
        rates = [composer([*fixed, "task=glue/stsb", f"method={method}", f"lr_factor={f}"]).train.learning_rate
                 for f in factors]
        assert rates == pytest.approx([recipe["learning_rate"][method] * f for f in factors])
        assert composer([*fixed, "task=glue/stsb", f"method={method}"]).data.holdout_fraction > 0
    (_, table2), = _make_train_overrides("lr-search", "SCALE=cpu")
    assert any(o.startswith("+experiment=table2/") for o in table2) and not any(o.startswith("method=") for o in table2)


def test_successors_train_on_the_rank_budget_at_their_searched_rates():
    """`make compare-variants` at cpu scale gives the successors the budget Tables 5 and 6 use (the same keys, read
    from the task's `rank_budget`), so rsLoRA's high-rank rows are judged on the budget of the rank claims, but for
    the keys the task's `variant_budget` sets (SST-2's epochs); each row's rate is the recipe's
    `variant_learning_rate.<method>_r<rank>` (the successors' search), else the rank budget's."""
    rank_keys = {o.split("=")[0] for _, overrides in _make_train_overrides("reproduce-rank", "SCALE=cpu")
                 for o in _budget(overrides)}
    lines = _make_train_overrides("compare-variants", "SCALE=cpu")
    assert [sweep for sweep, _ in lines] == ["lora_variants", "lora_variants"]
    for _, overrides in lines:
        assert {o.split("=")[0] for o in _budget(overrides)} == rank_keys
    recipes = yaml.safe_load((CONF_DIR / "cpu_recipe" / "glue.yaml").read_text(encoding="utf-8"))
    recipe = recipes["stsb"]
    composer = Composer(REPO / "sweeps" / "lora_variants.yaml")
    fixed = [o for o in lines[1][1] if not o.startswith(("task=", "method="))]
    one = [*fixed, "task=glue/stsb", "seed=0"]
    assert "variant_budget" in recipes["sst2"] and "variant_budget" not in recipe
    for task in ("sst2", "stsb"):  # a task's own value for the successors, else its rank budget's
        cfg = composer([*fixed, f"task=glue/{task}", "seed=0", "method=lora"])
        for key in rank_keys - {"train.learning_rate"}:
            group, name = key.split(".")
            expected = recipes[task].get("variant_budget", {}).get(name, recipes[task]["rank_budget"][name])
            assert cfg[group][name] == expected, (task, key)
    assert composer([*fixed, "task=glue/sst2", "seed=0", "method=lora",
                     "++cpu_recipe.sst2.variant_budget.epochs=3"]).train.epochs == 3
    searched = recipe.get("variant_learning_rate") or {}
    for method in ("lora", "rslora"):
        cfg = composer([*one, f"method={method}"])
        assert cfg.variant_row == f"{method}_r64"
        assert cfg.train.learning_rate == searched.get(cfg.variant_row, recipe["rank_budget"]["learning_rate"])
    moved = composer([*one, "method=rslora", "++cpu_recipe.stsb.variant_learning_rate.rslora_r64=1.0e-5"])
    assert moved.train.learning_rate == 1.0e-5
    assert composer([*one, "method=lora", "++cpu_recipe.stsb.variant_learning_rate.rslora_r64=1.0e-5"]
                    ).train.learning_rate != 1.0e-5


def test_successors_search_gives_every_row_the_same_factors_of_the_rank_budget_pilots_rate():
    """`make lr-search-variants`: every row of `make compare-variants` (four methods at r=8, LoRA and rsLoRA at r=64)
    at the successors' budget less its rate, which is the rank budget pilots' times the search's factors, scored on
    held-out training data and labelled by method and rank in the search table; on STS-B, x0.3 and x1 again at seeds
    0-2 for every row, on SST-2 every factor."""
    lines = _make_train_overrides("lr-search-variants", "SCALE=cpu")
    assert [sweep for sweep, _ in lines] == ["lr_search_variants"] * 6
    (_, first_variants), _ = _make_train_overrides("compare-variants", "SCALE=cpu")
    variants = _budget(first_variants)
    recipe = yaml.safe_load((CONF_DIR / "cpu_recipe" / "glue.yaml").read_text(encoding="utf-8"))
    factors = [float(f) for f in OmegaConf.load(REPO / "sweeps" / "lr_search.yaml").hydra.sweeper.params.lr_factor
               .split(",")]
    composer = Composer(REPO / "sweeps" / "lr_search_variants.yaml")
    rows, seeded = set(), set()
    for _, overrides in lines:
        budget = _budget(overrides)
        assert budget == {o for o in variants if not o.startswith("train.learning_rate=")}
        one_seed = "seed=0" in overrides
        tasks = ["glue/stsb"] if one_seed else [o.split("=")[1] for o in overrides if o.startswith("task=")]
        for task in tasks:  # the seeded lines name their task
            for job in expand(composer, [o for o in overrides if not o.startswith("task=")] + [f"task={task}"]):
                cfg = composer(job)
                name = cfg.task.name
                assert cfg.train.learning_rate == pytest.approx(recipe[name]["rank_budget_pilot_learning_rate"]
                                                                * cfg.lr_factor)
                assert cfg.train.epochs == recipe[name].get("variant_budget", {}).get(
                    "epochs", recipe[name]["rank_budget"]["epochs"])
                assert cfg.data.holdout_fraction > 0 and cfg.method.init == "peft_default"
                (rows if one_seed else seeded).add((name, cfg.search_row, cfg.lr_factor, cfg.seed))
    labels = {"lora r=8", "rslora r=8", "dora r=8", "adalora r=8", "lora r=64", "rslora r=64"}
    assert rows == {("stsb", f"{label}, rank budget", f, 0) for label in labels for f in factors}
    assert seeded == {(task, f"{label}, rank budget", f, s) for label in labels for s in (0, 1, 2)
                      for task, task_factors in (("stsb", (0.3, 1.0)), ("sst2", factors)) for f in task_factors}


def test_decide_first_runs_the_first_seeds_of_every_judged_table():
    """`make decide` from nothing: each judged table's own sweeps at cpu scale first (Table 2 in fp32, the precision
    its claims are judged in; Tables 6 and 5 at the ranks and weights their claims compare; the successors; Table 3),
    then `repro.decide`; `DECIDE_BASE=` and a dry run go straight to it."""
    def run_lines(target: str, *make_vars: str) -> list[str]:
        return _make_dry_run(target, *make_vars, modules=("repro.train", "repro.decide"))

    lines = run_lines("decide")
    assert lines[-1].rstrip().endswith("-m repro.decide")
    assert lines[:-1] == [*run_lines("reproduce-glue", "SCALE=cpu", "GLUE_PRECISION=fp32"),
                          *run_lines("reproduce-rank", "SCALE=cpu", "RANK_RANKS=1,2,64",
                                     "TARGETS_SETS=[q],[q,v],[q,k,v,o]"),
                          *run_lines("compare-variants", "SCALE=cpu"), *run_lines("reproduce-e2e", "SCALE=cpu")]
    assert "train.precision=fp32" in lines[0] and "method.r=1,2,64" in lines[1]
    assert "'method.targets=[q],[q,v],[q,k,v,o]'" in lines[2]
    assert run_lines("decide", "DECIDE_BASE=") == lines[-1:]
    [dry] = run_lines("decide", "DECIDE_ARGS=--dry-run")  # a dry run trains nothing
    assert dry.rstrip().endswith("-m repro.decide --dry-run")


def test_e2e_runs_two_at_a_time_one_thread_each():
    [line] = [shlex.split(line) for line in _make_dry_run("reproduce-e2e", "SCALE=cpu")]
    assert "train.num_threads=1" in line and "hydra/launcher=joblib" in line and "hydra.launcher.n_jobs=2" in line


def test_table2_at_cpu_scale_trains_in_the_precision_the_cpu_supports():
    """`make reproduce-glue` asks for `train.precision=auto` (bf16 on a CPU with AVX512_BF16 or AMX, fp32 elsewhere,
    where the run ids are those of fp32 runs: tests/test_precision.py); GLUE_PRECISION=fp32 forces fp32."""
    def precision(*make_vars: str) -> list[str]:
        return [a for line in _make_dry_run("reproduce-glue", "SCALE=cpu", *make_vars) for a in shlex.split(line)
                if a.startswith("train.precision=")]

    assert precision() == ["train.precision=auto"]
    assert precision("GLUE_PRECISION=fp32") == ["train.precision=fp32"]
