"""Verdicts that can say no and don't know (repro/verdicts.py, conf/paper/verdict_rule.yaml): holds, fails and
inconclusive on synthetic per-seed values and on synthetic result sets through `repro.tables.build` — including
today's cpu-scale case (every method at its trivial baseline), a single seed, runs without a stored baseline, and
one task counted while another is not; the same rule on the sweep tables' claims (Tables 5 and 6)."""

from __future__ import annotations

import pytest
from scipy import stats

from repro.paper import paper_data
from repro.results import RESULT_FILE, write_json_atomic
from repro.tables import build
from repro.verdicts import Cell, Rule, compare, load_rule, tolerance_from_gap, welch_interval

TASK_METRIC = {"SST-2": ("sst2", "accuracy"), "CoLA": ("cola", "matthews_correlation"), "RTE": ("rte", "accuracy"),
               "STS-B": ("stsb", "pearson"), "MRPC": ("mrpc", "accuracy")}
# the trivial baselines (fractions, as runs store them): majority class for SST-2/RTE/MRPC, 0 for MCC and Pearson
BASELINE = {"SST-2": 0.509, "CoLA": 0.0, "RTE": 0.527, "STS-B": 0.0, "MRPC": 0.684}
TRAINABLE = {"roberta_base.lora": 74_000, "roberta_base.ft": 22_600_000, "roberta_base.adapter_d.0.3M": 75_000}


def _write(root, name, *, seed, value, paper_task, row=None, sweep=None, r=8, targets=("q", "v"), baseline=True):
    """One complete run record as repro.train writes it (fractions; `trivial_baseline` unless `baseline=False`)."""
    task, metric = TASK_METRIC[paper_task]
    record = {"run_id": name, "status": "complete", "task": task, "model": "minilm-l6", "method": "lora",
              "seed": seed, "main_metric": metric, "best_metrics": {metric: value},
              "params": {"trainable": TRAINABLE.get(row, 1000), "head": 10, "total": 22_700_000},
              "config": {"scale_name": "cpu", "paper_row": row, "sweep_name": sweep,
                         "task": {"name": task, "paper_key": paper_task, "kind": "classification"},
                         "method": {"r": r, "targets": list(targets)}}}
    if baseline:
        record["trivial_baseline"] = {metric: BASELINE[paper_task], f"validation/{metric}": BASELINE[paper_task]}
    write_json_atomic(root / name / RESULT_FILE, record)


def _table2(tmp_path, cells: dict[tuple[str, str], list[float]], baseline=True) -> str:
    """(paper row, task) -> per-seed values (fractions) -> the claims part of table2.md."""
    root = tmp_path / "runs"
    for (row, task), values in cells.items():
        for seed, value in enumerate(values):
            _write(root, f"{row}_{task}_{seed}", seed=seed, value=value, paper_task=task, row=row, baseline=baseline)
    build(root, tmp_path / "tables")
    md = (tmp_path / "tables" / "table2.md").read_text()
    return md[md.index("Claims at this scale:"):]


def _claim(md: str, text: str) -> list[str]:
    """The verdict lines under one claim of the summary."""
    lines = md.splitlines()
    start = lines.index(f"- {text}:") + 1
    out = []
    for line in lines[start:]:
        if not line.startswith("  - "):
            break
        out.append(line[4:])
    return out


MATCHES_FT = paper_data("table2_claims")["lora_matches_ft"]["text"]
BEATS_ADAPTERS = paper_data("table2_claims")["lora_beats_adapters"]["text"]
FEWER_PARAMS = paper_data("table2_claims")["lora_fewer_params"]["text"]


# --- the rule -------------------------------------------------------------------------------------------------

def test_rule_comes_from_config_and_is_printed_with_its_numbers():
    cfg = paper_data("verdict_rule")["rule"]
    rule = load_rule()
    assert (rule.k_std, rule.min_seeds, rule.min_tasks, rule.level) == (
        cfg["k_std"], cfg["min_seeds"], cfg["min_tasks"], cfg["interval"]["level"])
    text = rule.text()
    assert f"at least {cfg['min_seeds']} seeds" in text and f"more than {cfg['k_std']:g} x its standard" in text
    assert f"{cfg['interval']['level']:.0%} Welch t-interval" in text
    with pytest.raises(ValueError, match="min_seeds"):
        Rule(k_std=2, min_seeds=1, min_tasks=1, level=0.9)
    with pytest.raises(ValueError, match="level"):
        Rule(k_std=2, min_seeds=2, min_tasks=1, level=1.5)


def test_welch_interval_matches_scipy_on_one_task():
    a, b = [90.0, 90.5, 91.5], [88.0, 89.5, 89.0, 88.2]
    diff, lo, hi = welch_interval([(a, b)], 0.9)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence_level=0.9)
    assert diff == pytest.approx(sum(a) / 3 - sum(b) / 4)
    assert (lo, hi) == pytest.approx((ci.low, ci.high))
    # pooled over two tasks with the same values: the same difference, a narrower interval (more seeds)
    diff2, lo2, hi2 = welch_interval([(a, b), (a, b)], 0.9)
    assert diff2 == pytest.approx(diff) and hi2 - lo2 < hi - lo


# --- compare() on cells ---------------------------------------------------------------------------------------

RULE = Rule(k_std=2.0, min_seeds=2, min_tasks=1, level=0.9)
TOL = tolerance_from_gap(1.0)


def test_holds_fails_and_straddles():
    ft = {"SST-2": Cell((88.0, 88.5, 89.0), 50.9)}
    holds = compare("lora", {"SST-2": Cell((90.0, 90.5, 91.0), 50.9)}, "ft", ft, TOL, RULE)
    assert str(holds) == ("holds: lora - ft = +2.0 points on 1 counted task(s) (SST-2), 90% interval [+1.1, +2.9] "
                          "above the tolerance -1.0")
    fails = compare("lora", {"SST-2": Cell((83.0, 83.5, 84.0), 50.9)}, "ft", ft, TOL, RULE)
    assert str(fails) == ("fails: lora - ft = -5.0 points on 1 counted task(s) (SST-2), 90% interval [-5.9, -4.1] "
                          "below the tolerance -1.0")
    noisy = compare("lora", {"SST-2": Cell((85.0, 88.0, 91.0), 50.9)}, "ft", ft, TOL, RULE)
    assert noisy.word == "inconclusive" and "straddles the tolerance -1.0" in noisy.reason
    lo, hi = noisy.interval
    assert lo < -1.0 < hi and f"interval [{lo:+.1f}, {hi:+.1f}]" in noisy.reason


def test_tasks_below_the_baseline_do_not_count_and_are_named():
    """One task counts (SST-2), two do not: CoLA (both at MCC 0) and RTE (LoRA at chance)."""
    lora = {"SST-2": Cell((90.0, 90.5, 91.0), 50.9), "CoLA": Cell((0.0, 0.0, 0.0), 0.0),
            "RTE": Cell((50.0, 52.0, 54.0), 52.7)}
    ft = {"SST-2": Cell((88.0, 88.5, 89.0), 50.9), "CoLA": Cell((0.0, 1.0, -1.0), 0.0),
          "RTE": Cell((60.0, 61.0, 62.0), 52.7)}
    verdict = compare("lora", lora, "ft", ft, TOL, RULE)
    assert verdict.word == "holds" and verdict.counted == ["SST-2"]
    assert verdict.not_counted == {
        "CoLA": "no method above the trivial baseline by more than 2 x std (lora 0.0±0.0 vs baseline 0.0, "
                "ft 0.0±1.0 vs baseline 0.0)",
        "RTE": "lora not above the trivial baseline by more than 2 x std (lora 52.0±2.0 vs baseline 52.7)"}
    assert str(verdict) == ("holds: lora - ft = +2.0 points on 1 counted task(s) (SST-2), 90% interval [+1.1, +2.9] "
                            "above the tolerance -1.0; not counted: CoLA: " + verdict.not_counted["CoLA"]
                            + "; RTE: " + verdict.not_counted["RTE"])


def test_above_the_baseline_but_not_by_enough_seeds_spread():
    """RTE at 54.5±1.5 over a 52.7 baseline (today's full fine-tuning): above, but not by 2 x std."""
    verdict = compare("lora", {"RTE": Cell((60.0, 61.0, 62.0), 52.7)}, "ft", {"RTE": Cell((53.0, 54.5, 56.0), 52.7)},
                      TOL, RULE)
    assert str(verdict) == ("inconclusive: lora vs ft: no task counts: RTE: ft not above the trivial baseline by "
                            "more than 2 x std (ft 54.5±1.5 vs baseline 52.7)")


def test_single_seed_and_missing_baseline_and_min_tasks():
    single = compare("lora", {"SST-2": Cell((90.0,), 50.9)}, "ft", {"SST-2": Cell((88.0,), 50.9)}, TOL, RULE)
    assert str(single) == ("inconclusive: lora vs ft: no task counts: SST-2: only 1 seed (lora), only 1 seed (ft), "
                           "the rule needs 2")
    old = compare("lora", {"SST-2": Cell((90.0, 91.0), None), "RTE": Cell((70.0, 71.0), None)}, "ft",
                  {"SST-2": Cell((88.0, 89.0), None), "RTE": Cell((70.0, 71.0), None)}, TOL, RULE)
    assert str(old) == ("inconclusive: lora vs ft: no task counts: SST-2, RTE: no trivial baseline stored for lora, "
                        "ft (runs made before result.json recorded it)")  # tasks with the same reason together
    two = Rule(k_std=2.0, min_seeds=2, min_tasks=2, level=0.9)
    lora = {"SST-2": Cell((90.0, 90.5, 91.0), 50.9), "CoLA": Cell((0.0, 0.0), 0.0)}
    ft = {"SST-2": Cell((88.0, 88.5, 89.0), 50.9), "CoLA": Cell((0.0, 0.0), 0.0)}
    assert compare("lora", lora, "ft", ft, TOL, two).reason.startswith(
        "lora vs ft: only 1 task(s) count (SST-2), the rule needs 2: CoLA: no method above the trivial baseline")


# --- through the tables: Table 2 --------------------------------------------------------------------------------

def test_todays_case_every_method_at_the_baseline_is_inconclusive_never_holds(tmp_path):
    """Today's cpu-scale Table 2: CoLA at MCC 0 for every method, RTE at chance, STS-B near 0."""
    values = {"CoLA": [0.0, 0.0, 0.0], "RTE": [0.52, 0.53, 0.527], "STS-B": [0.01, -0.02, 0.03]}
    cells = {(row, task): v for row in TRAINABLE for task, v in values.items()}
    md = _table2(tmp_path, cells)
    for text in (MATCHES_FT, BEATS_ADAPTERS):
        lines = _claim(md, text)
        assert lines and all(line.startswith("inconclusive: ") for line in lines), lines
        for line in lines:
            assert "no task counts: CoLA: no method above the trivial baseline" in line
            assert "; RTE: no method above the trivial baseline" in line
            assert "; STS-B: no method above the trivial baseline" in line
    assert _claim(md, MATCHES_FT) == [
        "inconclusive: roberta_base.lora vs roberta_base.ft: no task counts: "
        "CoLA: no method above the trivial baseline by more than 2 x std (roberta_base.lora 0.0±0.0 vs baseline 0.0, "
        "roberta_base.ft 0.0±0.0 vs baseline 0.0); "
        "RTE: no method above the trivial baseline by more than 2 x std (roberta_base.lora 52.7±0.5 vs baseline "
        "52.7, roberta_base.ft 52.7±0.5 vs baseline 52.7); "
        "STS-B: no method above the trivial baseline by more than 2 x std (roberta_base.lora 1.0±2.5 vs baseline "
        "0.0, roberta_base.ft 1.0±2.5 vs baseline 0.0)"]
    assert _claim(md, FEWER_PARAMS)[0].startswith("holds: roberta_base.lora trains 0.33%")  # deterministic claim
    assert "Verdict rule (conf/paper/verdict_rule.yaml)" in md
    table = (tmp_path / "tables" / "table2.md").read_text()
    assert "| trivial baseline " in table and "| 52.7 " in table


def test_table2_holds_fails_and_partial_counting(tmp_path):
    cells = {("roberta_base.lora", "SST-2"): [0.900, 0.905, 0.910],
             ("roberta_base.ft", "SST-2"): [0.880, 0.885, 0.890],
             ("roberta_base.lora", "CoLA"): [0.0, 0.0, 0.0],   # constant predictions: not counted
             ("roberta_base.ft", "CoLA"): [0.0, 0.0, 0.0],
             ("roberta_base.adapter_d.0.3M", "SST-2"): [0.950, 0.955, 0.960]}
    md = _table2(tmp_path, cells)
    assert _claim(md, MATCHES_FT) == [
        "holds: roberta_base.lora - roberta_base.ft = +2.0 points on 1 counted task(s) (SST-2), 90% interval "
        "[+1.1, +2.9] above the tolerance -1.0; not counted: CoLA: no method above the trivial baseline by more than "
        "2 x std (roberta_base.lora 0.0±0.0 vs baseline 0.0, roberta_base.ft 0.0±0.0 vs baseline 0.0)"]
    # LoRA 5 points below an adapter of about its size: the claim fails
    assert _claim(md, BEATS_ADAPTERS) == [
        "fails: roberta_base.lora - roberta_base.adapter_d.0.3M = -5.0 points on 1 counted task(s) (SST-2), 90% "
        "interval [-5.9, -4.1] below the tolerance +0.0; adapter with 1.0x LoRA's parameters"]


def test_table2_single_seed_is_inconclusive(tmp_path):
    md = _table2(tmp_path, {("roberta_base.lora", "SST-2"): [0.90], ("roberta_base.ft", "SST-2"): [0.80]})
    assert _claim(md, MATCHES_FT) == [
        "inconclusive: roberta_base.lora vs roberta_base.ft: no task counts: SST-2: only 1 seed (roberta_base.lora), "
        "only 1 seed (roberta_base.ft), the rule needs 2"]


# --- through the tables: the sweeps (Tables 5 and 6) -----------------------------------------------------------

def _sweep(tmp_path, name, cells: dict[tuple[tuple[str, ...], int], list[float]], task="SST-2") -> str:
    root = tmp_path / "runs"
    for (targets, r), values in cells.items():
        for seed, value in enumerate(values):
            _write(root, f"{name}_{'-'.join(targets)}_{r}_{seed}", seed=seed, value=value, paper_task=task,
                   sweep=name, r=r, targets=targets)
    build(root, tmp_path / "tables")
    return (tmp_path / "tables" / f"{name}.md").read_text()


def test_rank_claim_small_rank_within_tolerance_of_r64(tmp_path):
    qv = ("q", "v")
    md = _sweep(tmp_path, "rank", {(qv, 1): [0.900, 0.905, 0.910], (qv, 2): [0.850, 0.855, 0.860],
                                   (qv, 64): [0.902, 0.905, 0.908], (("q",), 1): [0.90]})
    claims = md[md.index("Claims at this scale:"):]
    assert "- a very small rank suffices (Table 6)" in claims and "(tolerance -1.0: the difference must be" in claims
    assert ("  - lora {q,v}: holds: r=1 - r=64 = +0.0 points on 1 counted task(s) (sst2), 90% interval "
            "[-0.8, +0.8] above the tolerance -1.0") in claims
    assert ("  - lora {q,v}: fails: r=2 - r=64 = -5.0 points on 1 counted task(s) (sst2), 90% interval "
            "[-5.8, -4.2] below the tolerance -1.0") in claims
    assert "lora {q}:" not in claims  # no r=64 run on {q}: nothing to compare
    assert "| sst2   | trivial baseline |           | 50.9" in md


def test_rank_claim_with_one_seed_is_inconclusive(tmp_path):
    md = _sweep(tmp_path, "rank", {(("q", "v"), 1): [0.90], (("q", "v"), 64): [0.91]})
    assert ("  - lora {q,v}: inconclusive: r=1 vs r=64: no task counts: sst2: only 1 seed (r=1), only 1 seed (r=64), "
            "the rule needs 2") in md


def test_targets_claim_several_weight_types_beat_one(tmp_path):
    md = _sweep(tmp_path, "targets", {(("q",), 8): [0.880, 0.885, 0.890], (("q", "v"), 4): [0.900, 0.905, 0.910],
                                      (("q", "k", "v", "o"), 2): [0.870, 0.875, 0.880]})
    assert ("  - lora: holds: {q,v} - {q} = +2.0 points on 1 counted task(s) (sst2), 90% interval [+1.1, +2.9] "
            "above the tolerance +0.0") in md
    assert ("  - lora: fails: {q,k,v,o} - {q} = -1.0 points on 1 counted task(s) (sst2), 90% interval [-1.9, -0.1] "
            "below the tolerance +0.0") in md
    assert "q (r=8)" in md and "q,v (r=4)" in md  # the paper's columns: weight set and its rank at equal budget
