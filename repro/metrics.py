"""GLUE metrics computed with scikit-learn / scipy (no `evaluate`, which fetches scripts from the hub).
Values are fractions (accuracy 0.91, correlations in [-1, 1]); tables scale them to the paper's 0-100."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

MetricFn = Callable[[np.ndarray, np.ndarray], float]

METRICS: dict[str, MetricFn] = {
    "accuracy": lambda pred, ref: float(accuracy_score(ref, pred)),
    "f1": lambda pred, ref: float(f1_score(ref, pred)),
    "matthews_correlation": lambda pred, ref: float(matthews_corrcoef(ref, pred)),
    "pearson": lambda pred, ref: float(pearsonr(pred, ref)[0]),
    "spearman": lambda pred, ref: float(spearmanr(pred, ref)[0]),
}


CORRELATIONS = ("pearson", "spearman")
# metrics that are correlations of the predictions with the labels (MCC: of two binary variables): for predictions
# unrelated to the labels they scatter around 0 with a standard error of about 1/sqrt(n) on n examples
CENTRED_AT_CHANCE = (*CORRELATIONS, "matthews_correlation")
# how many such standard errors above the trivial baseline a score must be to show that a run has started learning:
# early stopping looks at a run's best of up to 16 epoch scores, and the best of k unrelated scores passes 2 standard
# errors with probability up to 1 - 0.977^k (17% for k = 8: a stuck STS-B run scored Pearson 9.0 on 500 examples in
# its first epoch, 2/sqrt(500) = 8.9, and -6.6 to 0.2 in the next seven); 3 keeps it near 2% for k = 16
CHANCE_STANDARD_ERRORS = 3.0


def trivial_baseline(names: Sequence[str], references: np.ndarray) -> dict[str, float]:
    """What a constant predictor scores on these references: the majority class for classification (accuracy of
    the majority, its F1, MCC 0), correlation 0 for regression (a constant has no correlation; Pearson's formula
    would give NaN). A reproduced number means something only above this."""
    references = np.asarray(references)
    if any(name in CORRELATIONS for name in names):
        return {name: 0.0 for name in names}
    values, counts = np.unique(references, return_counts=True)
    majority = np.full_like(references, values[np.argmax(counts)])
    return compute_metrics(names, majority, references)


def chance_level(name: str, baseline: float, n_examples: int) -> float:
    """The highest score of metric `name` that is still no evidence of learning, on `n_examples` evaluation examples
    whose trivial baseline is `baseline`: for a correlation, the baseline (0) plus CHANCE_STANDARD_ERRORS standard
    errors of the correlation of unrelated variables (3/sqrt(n), 0.134 on 500 examples: STS-B runs sitting at the
    label mean score Pearson -0.07 to 0.09 there); for accuracy and F1 the majority-class baseline itself, which a
    predictor that ignores the input does not beat in expectation."""
    if name in CENTRED_AT_CHANCE:
        return baseline + CHANCE_STANDARD_ERRORS / math.sqrt(max(n_examples, 1))
    return baseline


def compute_metrics(names: Sequence[str], predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    return {name: METRICS[name](np.asarray(predictions), np.asarray(references)) for name in names}
