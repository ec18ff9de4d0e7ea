"""Metrics equal scikit-learn / scipy on the same predictions, and hand-checked values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from repro.metrics import chance_level, compute_metrics

rng = np.random.default_rng(0)
PRED = rng.integers(0, 2, 200)
REF = np.where(rng.random(200) < 0.7, PRED, 1 - PRED)


def test_classification_metrics_match_sklearn():
    got = compute_metrics(["accuracy", "f1", "matthews_correlation"], PRED, REF)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(REF, PRED))
    assert got["f1"] == pytest.approx(skm.f1_score(REF, PRED))
    assert got["matthews_correlation"] == pytest.approx(skm.matthews_corrcoef(REF, PRED))


def test_hand_checked_values():
    pred, ref = np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0])
    got = compute_metrics(["accuracy", "f1", "matthews_correlation"], pred, ref)
    assert got["accuracy"] == 0.75
    assert got["f1"] == pytest.approx(2 / 3)  # precision 1/2, recall 1
    # MCC = (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (1*2 - 1*0) / sqrt(2*1*3*2)
    assert got["matthews_correlation"] == pytest.approx(2 / math.sqrt(12))


def test_regression_metrics_match_scipy():
    ref = rng.uniform(0, 5, 100)
    pred = ref + rng.normal(0, 1, 100)
    got = compute_metrics(["pearson", "spearman"], pred, ref)
    assert got["pearson"] == pytest.approx(stats.pearsonr(pred, ref)[0])
    assert got["spearman"] == pytest.approx(stats.spearmanr(pred, ref)[0])
    assert compute_metrics(["pearson"], ref, 2 * ref + 1)["pearson"] == pytest.approx(1.0)


def test_chance_level_covers_what_unrelated_predictions_score():
    """Early stopping must not take a run that has not started learning for a plateau, and it judges a run by its
    best epoch. A correlation of predictions unrelated to the labels scatters around 0: on 500 examples, the best of
    16 such scores falls below chance_level (3/sqrt(n), 0.134) in at least 95% of runs, and a single score below
    two standard errors would not do (17% of 8-epoch runs pass it). Accuracy's level is the majority baseline."""
    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 5, 500)
    best_of = lambda k: np.array([max(compute_metrics(["pearson"], rng.normal(size=500), labels)["pearson"]  # noqa: E731
                                      for _ in range(k)) for _ in range(300)])
    level = chance_level("pearson", 0.0, 500)
    assert level == pytest.approx(3 / math.sqrt(500))
    assert 0.95 <= np.mean(best_of(16) <= level) < 1.0
    assert np.mean(best_of(8) <= 2 / math.sqrt(500)) < 0.9
    assert chance_level("matthews_correlation", 0.0, 1043) == pytest.approx(3 / math.sqrt(1043))
    assert chance_level("accuracy", 0.527, 277) == 0.527
