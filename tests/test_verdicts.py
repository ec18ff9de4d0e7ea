"""Verdict rule v2 (repro/verdicts.py, conf/paper/verdict_rule.yaml): the stratified permutation test against
scipy's, Holm's correction, the chance gate that never favours the method under test, convergence (a claim cannot
fail on runs still improving), the power figure; on synthetic per-seed cells and through `repro.tables.build`
(Table 2 and the sweep tables' claims)."""

from __future__ import annotations

import pytest
import numpy as np
from scipy import stats

from repro.paper import paper_data
from repro.results import RESULT_FILE, write_json_atomic
from repro.tables import build
from repro.verdicts import (FAILS, HOLDS, INCONCLUSIVE, Cell, Rule, compare, decide, holm, load_rule,
                            permutation_pvalues, seeds_to_decide, tolerance_from_gap)

TASK_METRIC = {"SST-2": ("sst2", "accuracy"), "CoLA": ("cola", "matthews_correlation"), "RTE": ("rte", "accuracy"),
               "STS-B": ("stsb", "pearson"), "MRPC": ("mrpc", "accuracy")}
# the trivial baselines (fractions, as runs store them): majority class for SST-2/RTE/MRPC, 0 for MCC and Pearson
BASELINE = {"SST-2": 0.509, "CoLA": 0.0, "RTE": 0.527, "STS-B": 0.0, "MRPC": 0.684}
TRAINABLE = {"roberta_base.lora": 74_000, "roberta_base.ft": 22_600_000, "roberta_base.adapter_d.0.3M": 75_000}


def curve(best: float, converged: bool) -> tuple[float, ...]:
    """Three epochs' dev metric (fractions) ending at `best`: a plateau (best at epoch 2, epoch 3 a point below), or
    still rising (epoch 3 two points above epoch 2, beyond the rule's min_delta)."""
    return (best - 0.05, best, best - 0.01) if converged else (best - 0.05, best - 0.02, best)


def _write(root, name, *, seed, value, paper_task, row=None, sweep=None, r=8, targets=("q", "v"), baseline=True,
           converged=True):
    """One complete run record as repro.train writes it (fractions; `trivial_baseline` unless `baseline=False`;
    three epochs, the best the second one, or the last one when `converged=False`)."""
    task, metric = TASK_METRIC[paper_task]
    record = {"run_id": name, "status": "complete", "task": task, "model": "minilm-l6", "method": "lora",
              "seed": seed, "main_metric": metric, "best_metrics": {metric: value},
              "epochs": [{"epoch": e, "metrics": {metric: v}} for e, v in zip((1, 2, 3), curve(value, converged))],
              "best_epoch": 2 + (not converged),
              "params": {"trainable": TRAINABLE.get(row, 1000), "head": 10, "total": 22_700_000},
              "config": {"scale_name": "cpu", "paper_row": row, "sweep_name": sweep,
                         "task": {"name": task, "paper_key": paper_task, "kind": "classification"},
                         "method": {"r": r, "targets": list(targets)}}}
    if baseline:
        record["trivial_baseline"] = {metric: BASELINE[paper_task], f"validation/{metric}": BASELINE[paper_task]}
    write_json_atomic(root / name / RESULT_FILE, record)


def _table2(tmp_path, cells: dict[tuple[str, str], list[float]], baseline=True, unconverged=()) -> str:
    """(paper row, task) -> per-seed values (fractions) -> the claims part of table2.md (the rows in `unconverged`
    still improving at their last epoch)."""
    root = tmp_path / "runs"
    for (row, task), values in cells.items():
        for seed, value in enumerate(values):
            _write(root, f"{row}_{task}_{seed}", seed=seed, value=value, paper_task=task, row=row, baseline=baseline,
                   converged=row not in unconverged)
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

RULE = load_rule()
ON_PAR = tolerance_from_gap(1.0)   # "A at most 1 point below B"
BETTER = tolerance_from_gap(0.0)   # "A above B"


def _decided(a_name, a, b_name, b, tolerance=ON_PAR, rule=RULE):
    return decide([compare(a_name, a, b_name, b, tolerance, rule)], rule)[0]


def test_rule_comes_from_config_and_is_printed_with_its_numbers():
    cfg = paper_data("verdict_rule")["rule"]
    assert (RULE.k_std, RULE.min_seeds, RULE.alpha, RULE.convergence.patience, RULE.seed_cap) == (
        cfg["k_std"], cfg["min_seeds"], cfg["alpha"], cfg["convergence"]["patience"], cfg["power"]["seed_cap"])
    text = RULE.text()
    assert text.startswith("Verdict rule v2 (conf/paper/verdict_rule.yaml)")
    assert f"by more than {cfg['k_std']:g} x its std" in text and f"family-wise {cfg['alpha']:g}" in text
    assert f"{cfg['power']['target']:.0%} power (cap {cfg['power']['seed_cap']})" in text
    with pytest.raises(ValueError, match="min_seeds"):
        Rule.from_config({**cfg, "min_seeds": 1})
    with pytest.raises(ValueError, match="alpha"):
        Rule.from_config({**cfg, "alpha": 0.7})


@pytest.mark.parametrize("a,b,margin", [([90.0, 90.5, 91.5], [88.0, 89.5, 89.0, 88.2], 0.0),
                                        ([70.1, 68.0, 71.3, 69.9], [70.0, 70.2, 69.5], 1.0)])
def test_one_task_permutation_pvalues_equal_scipys_exact_test(a, b, margin):
    """The same statistic (Welch's t, each std at least the rule's floor), scipy's enumeration of arrangements."""
    p_holds, p_fails, _ = permutation_pvalues([(a, b)], margin, RULE)
    shifted = np.asarray(a) + margin

    def welch_t(x, y):
        vx, vy = (max(np.var(v, ddof=1), RULE.std_floor**2) for v in (x, y))
        return (np.mean(x) - np.mean(y)) / np.sqrt(vx / len(x) + vy / len(y))

    for alternative, ours in (("greater", p_holds), ("less", p_fails)):
        ref = stats.permutation_test((shifted, np.asarray(b)), welch_t, vectorized=False,
                                     permutation_type="independent", alternative=alternative, n_resamples=np.inf)
        assert ours == pytest.approx(ref.pvalue)


def test_drawn_arrangements_approximate_the_exact_test():
    pairs = [([81.4, 82.8, 81.0, 82.0], [79.8, 80.2, 79.4, 81.5]), ([78.0, 83.7, 82.3], [44.6, 48.6, 77.3, 80.0])]
    exact = permutation_pvalues(pairs, 0.0, RULE)
    drawn = permutation_pvalues(pairs, 0.0, Rule.from_config({**paper_data("verdict_rule")["rule"],
                                                              "test": {"exact_max": 10, "draws": 20000, "seed": 1}}))
    assert drawn[0] == pytest.approx(exact[0], abs=0.005) and drawn[1] == pytest.approx(exact[1], abs=0.005)


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03], 0.05) == [True, False, False]   # 0.01 <= 0.05/3; 0.03 > 0.05/2 stops
    assert holm([0.01, 0.02, 0.04], 0.05) == [True, True, True]     # 0.01, 0.02 <= 0.025, 0.04 <= 0.05
    assert holm([], 0.05) == []


def test_targets_case_from_the_issue_holds():
    """{q,v} r=4 beats {q} r=8 in every seed on both tasks (the committed cpu-scale Table 5 before rule v2, there
    'inconclusive +13.2 [-1.5, +27.9]'): the exact stratified test gives p = 1/400."""
    qv = {"SST-2": Cell((81.4, 82.8, 81.0), 50.9), "STS-B": Cell((78.0, 83.7, 82.3), 0.0)}
    q = {"SST-2": Cell((79.8, 80.2, 79.4), 50.9), "STS-B": Cell((44.6, 48.6, 77.3), 0.0)}
    verdict = _decided("{q,v}", qv, "{q}", q, BETTER)
    assert verdict.word == HOLDS and verdict.p_holds == pytest.approx(1 / 400)
    assert verdict.kind == "superiority" and "SST-2 +1.9, STS-B +24.5" in verdict.reason


def test_all_methods_at_chance_is_inconclusive_and_not_informative():
    lora = {"CoLA": Cell((0.0, 0.0, 0.0), 0.0), "RTE": Cell((52.0, 53.0, 52.5), 52.7)}
    ft = {"CoLA": Cell((0.0, 1.0, -1.0), 0.0), "RTE": Cell((52.7, 53.1, 52.2), 52.7)}
    verdict = _decided("lora", lora, "ft", ft)
    assert verdict.word == INCONCLUSIVE and verdict.counted == []
    assert verdict.reason.startswith("lora vs ft: no task counts: CoLA: not informative: every method at chance "
                                     "(lora 0.0±0.0, ft 0.0±1.0 vs baseline 0.0); RTE: not informative")


def test_one_method_at_chance_counts_against_it():
    """RTE: LoRA at chance, FT not. Rule v1 dropped the task (favouring LoRA); v2 counts it as a difference."""
    lora = {"RTE": Cell((52.0, 53.5, 52.7, 53.0), 52.7), "SST-2": Cell((85.0, 85.5, 86.0, 85.2), 50.9)}
    ft = {"RTE": Cell((60.0, 61.0, 62.0, 61.5), 52.7), "SST-2": Cell((85.1, 85.6, 85.9, 85.3), 50.9)}
    verdict = _decided("lora", lora, "ft", ft)
    assert verdict.counted == ["RTE", "SST-2"] and "lora at chance on RTE" in verdict.reason
    assert verdict.word == FAILS


def test_clear_fail_and_unconverged_runs_cannot_fail():
    ft = {"SST-2": Cell((88.0, 88.5, 89.0, 88.7), 50.9), "STS-B": Cell((84.0, 84.5, 85.0, 84.2), 0.0)}
    values = {"SST-2": (83.0, 83.5, 84.0, 83.2), "STS-B": (80.0, 79.5, 80.5, 81.0)}
    done = {t: Cell(v, ft[t].baseline, (True,) * 4) for t, v in values.items()}
    assert _decided("lora", done, "ft", ft).word == FAILS
    rising = {t: Cell(v, ft[t].baseline, (False, True, False, True)) for t, v in values.items()}
    verdict = _decided("lora", rising, "ft", ft)
    assert verdict.word == INCONCLUSIVE
    assert "would fail, but lora still improving at its last epoch in 2/4 seeds on SST-2, 2/4 seeds on STS-B" \
        in verdict.reason
    # the other method's unconverged runs do not block a fail of this one's claim; they are named
    verdict = _decided("lora", done, "ft", {t: Cell(c.values, c.baseline, (False,) * 4) for t, c in ft.items()})
    assert verdict.word == FAILS and "ft still improving in 4/4 seeds on SST-2" in verdict.reason


def test_holm_over_a_tables_claims():
    """Each claim decides alone at p = 1/70 (one task, 4 vs 4 seeds); four together need p <= 0.0125 for the first."""
    a, b = {"SST-2": Cell((90.0, 90.5, 91.0, 90.8), 50.9)}, {"SST-2": Cell((88.0, 88.5, 89.0, 88.7), 50.9)}
    one = compare("lora", a, "ft", b, BETTER, RULE)
    assert one.p_holds == pytest.approx(1 / 70) and decide([one], RULE)[0].word == HOLDS
    four = decide([compare(f"lora{i}", a, "ft", b, BETTER, RULE) for i in range(4)], RULE)
    assert all(v.word == INCONCLUSIVE and "Holm over 4 claims" in v.reason for v in four)


def test_inconclusive_prints_seeds_that_decide_it_and_they_do():
    a, b = (85.0, 86.0, 84.4), (84.5, 83.6, 85.1)
    small = _decided("lora", {"SST-2": Cell(a, 50.9)}, "ft", {"SST-2": Cell(b, 50.9)}, BETTER)
    assert small.word == INCONCLUSIVE and small.seeds_needed is not None
    assert f"~{small.seeds_needed} seeds per method would decide it at 80% power" in small.reason
    # at the predicted seed count, replications with the observed difference and spread mostly decide (80% power)
    n, spread = small.seeds_needed, np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
    rng = np.random.default_rng(0)
    decided = sum(_decided("lora", {"SST-2": Cell(tuple(small.difference + rng.normal(0, spread, n)), -100.0)}, "ft",
                           {"SST-2": Cell(tuple(rng.normal(0, spread, n)), -100.0)}, BETTER).word == HOLDS
                  for _ in range(40))
    assert 24 <= decided, (n, decided)


def test_seeds_to_decide_never_below_what_the_exact_test_can_resolve():
    """One task, 3 vs 3 seeds, a huge standardised effect: the normal approximation says 2 seeds, but the exact
    test's smallest p is 1/20, above Holm's 0.05/8; it needs 5 per method (1/252). An undecided claim always asks
    for more seeds than it has, so `make decide` never stalls on it."""
    assert seeds_to_decide(20.0, 1, 0.05, RULE) == 3  # 1/20 <= 0.05: resolvable at 3
    assert seeds_to_decide(20.0, 1, 0.05 / 8, RULE) == 5  # C(8, 4) = 70 < 160 <= C(10, 5) = 252
    assert seeds_to_decide(20.0, 2, 0.05 / 8, RULE) == 3  # 20^2 = 400 >= 160
    assert seeds_to_decide(20.0, 2, 0.05 / 8, RULE, have=3) == 4
    a, b = {"STS-B": Cell((84.0, 84.3, 84.6), 0.0)}, {"STS-B": Cell((80.0, 80.3, 80.6), 0.0)}
    eight = decide([compare(f"m{i}", a, "lora", b, BETTER, RULE) for i in range(8)], RULE)
    assert all(v.word == INCONCLUSIVE and v.seeds_needed == 5 and "~5 seeds per method" in v.reason for v in eight)


# --- through the tables: Table 2 --------------------------------------------------------------------------------

def test_table2_every_method_at_the_baseline_is_not_informative(tmp_path):
    values = {"CoLA": [0.0, 0.0, 0.0], "RTE": [0.52, 0.53, 0.527], "STS-B": [0.01, -0.02, 0.03]}
    md = _table2(tmp_path, {(row, task): v for row in TRAINABLE for task, v in values.items()})
    for text in (MATCHES_FT, BEATS_ADAPTERS):
        lines = _claim(md, text)
        assert lines and all(line.startswith("inconclusive: ") and "no task counts: CoLA: not informative" in line
                             and "; RTE: not informative" in line and "; STS-B: not informative" in line
                             for line in lines), lines
    assert _claim(md, FEWER_PARAMS)[0].startswith("holds: roberta_base.lora trains 0.33%")  # deterministic claim
    assert "Verdict rule v2 (conf/paper/verdict_rule.yaml)" in md


def test_table2_holds_fails_and_convergence(tmp_path):
    cells = {("roberta_base.lora", "SST-2"): [0.900, 0.905, 0.910, 0.908],
             ("roberta_base.ft", "SST-2"): [0.880, 0.885, 0.890, 0.887],
             ("roberta_base.adapter_d.0.3M", "SST-2"): [0.950, 0.955, 0.960, 0.958]}
    md = _table2(tmp_path / "a", cells)
    [matches] = _claim(md, MATCHES_FT)
    assert matches.startswith("holds: roberta_base.lora - roberta_base.ft = +2.0 points on 1 task(s) (SST-2 +2.0); "
                              "non-inferiority with margin 1")
    [beats] = _claim(md, BEATS_ADAPTERS)  # LoRA 5 points below an adapter of its size
    assert beats.startswith("fails: roberta_base.lora - roberta_base.adapter_d.0.3M = -5.0 points")
    assert beats.endswith("; adapter with 1.0x LoRA's parameters") and "Holm over 2 claims" in beats
    md = _table2(tmp_path / "b", cells, unconverged={"roberta_base.lora"})
    [beats] = _claim(md, BEATS_ADAPTERS)
    assert beats.startswith("inconclusive: ") and "would fail, but roberta_base.lora still improving at its last " \
        "epoch in 4/4 seeds on SST-2" in beats


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


def test_rank_claim_small_rank_on_par_with_r64(tmp_path):
    qv = ("q", "v")
    md = _sweep(tmp_path, "rank", {(qv, 1): [0.900, 0.905, 0.910, 0.907, 0.903],
                                   (qv, 2): [0.850, 0.855, 0.860, 0.852, 0.858],
                                   (qv, 64): [0.902, 0.905, 0.908, 0.904, 0.906], (("q",), 1): [0.90]})
    claims = md[md.index("Claims at this scale:"):]
    assert "- a very small rank suffices (Table 6)" in claims and "(tolerance -1.0: the difference must be" in claims
    assert "  - holds: lora {q,v} r=1 - r=64 = +0.0 points on 1 task(s) (sst2 +0.0)" in claims
    assert "  - fails: lora {q,v} r=2 - r=64 = -5.0 points on 1 task(s) (sst2 -5.0)" in claims
    assert "lora {q} r=1" not in claims  # no r=64 run on {q}: nothing to compare
    assert "| sst2   | trivial baseline |           | 50.9" in md


def test_targets_claim_through_the_tables(tmp_path):
    md = _sweep(tmp_path, "targets", {(("q",), 8): [0.880, 0.885, 0.890, 0.887, 0.884],
                                      (("q", "v"), 4): [0.900, 0.905, 0.910, 0.906, 0.903],
                                      (("q", "k", "v", "o"), 2): [0.870, 0.875, 0.880, 0.872, 0.878]})
    assert "  - holds: lora {q,v} - {q} = +2.0 points on 1 task(s) (sst2 +2.0); superiority" in md
    assert "  - fails: lora {q,k,v,o} - {q} = -1.0 points on 1 task(s) (sst2 -1.0); superiority" in md
    assert "q (r=8)" in md and "q,v (r=4)" in md  # the paper's columns: weight set and its rank at equal budget


def test_convergence_is_a_plateau_within_min_delta_points():
    from repro.verdicts import Convergence

    plateau = Convergence(patience=1, min_delta=0.5)
    assert plateau((70.0, 74.0, 74.3), 3, 3)           # last epoch +0.3 points: a plateau
    assert not plateau((70.0, 74.0, 75.0), 3, 3)       # +1.0: still improving
    assert plateau((70.0, 74.0, 73.0), 3, 2)
    assert not plateau((74.0,), 1, 1)                  # one epoch says nothing about a plateau
    assert plateau(None, 3, 2) and not plateau(None, 3, 3) and plateau(None, None, None) is None  # no curve: best epoch
    strict = Convergence(patience=1)
    assert not strict((70.0, 74.0, 74.3), 3, 3) and Convergence(patience=2, min_delta=0.5)((70, 74, 74.2, 74.4), 4, 4)
    assert RULE.convergence.min_delta == paper_data("verdict_rule")["rule"]["convergence"]["min_delta"]
