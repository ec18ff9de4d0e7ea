"""Scorers: hand-checked cases, maximal scores for identical text, multi-reference behaviour."""

from __future__ import annotations

import pytest

from repro.generation import metrics
from repro.generation.metrics import bleu, nist, rouge_metrics, score, ter


def test_bleu_multi_reference_takes_the_best_match():
    hyp = ["the cat sat on the mat"]
    assert bleu(hyp, [["a dog ran in the park", "the cat sat on the mat"]], lowercase=True) == pytest.approx(100)
    # references of different counts per input: padding repeats an input's own references (no effect)
    two = bleu(hyp * 2, [["the cat sat on the mat"], ["x y", "the cat sat on the mat"]], lowercase=True)
    assert two == pytest.approx(100)


def test_bleu_hand_checked():
    # hyp 4 tokens, ref 4 tokens: 1-gram 3/4, 2-gram 1/3, 3-gram 0/2 -> BLEU 0 (no smoothing, as mteval)
    assert bleu(["a b c d"], [["a b x d"]], lowercase=False) == 0.0
    # 1..4-gram precisions 5/6, 3/5, 2/4, 1/3, no brevity penalty
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert bleu(["a b c d e f"], [["a b c d x f"]], lowercase=False) == pytest.approx(expected)


def test_ter_and_nist_hand_checked():
    assert ter(["a b c d"], [["a b x d"]]) == pytest.approx(0.25)  # one substitution in four words
    assert ter(["a b"], [["a b"]]) == 0.0
    assert nist(["a b c"], [["a b c"]]) > nist(["a b d"], [["a b c"]]) > 0


def test_rouge_best_reference():
    out = rouge_metrics(["the cat sat"], [["nothing here", "the cat sat"]])
    assert out == {"ROUGE_1": 100.0, "ROUGE_2": 100.0, "ROUGE_L": 100.0}


def test_seen_unseen_split(monkeypatch):
    monkeypatch.setattr(metrics, "HAS_JAVA", False)  # METEOR is checked in the Java test below
    out = score("webnlg", ["a b c d e", "v w x y z"], [["a b c d e"], ["q r s t u"]], ["Seen", "New"], {"Seen"})
    assert out["BLEU_S"] == pytest.approx(100) and out["BLEU_U"] == 0.0 and out["TER_S"] == 0.0
    assert 0 < out["BLEU"] < 100


@pytest.mark.skipif(not metrics.HAS_JAVA, reason="METEOR and the PTB tokenizer need Java")
def test_identical_text_gets_maximal_e2e_scores():
    hyps = ["The Vaults is a pub near Café Adriatic .", "Blue Spice serves Thai food in the riverside area ."]
    out = score("e2e", hyps, [[h] for h in hyps])
    assert out["BLEU"] == pytest.approx(100) and out["METEOR"] == pytest.approx(100)
    assert out["ROUGE_L"] == pytest.approx(100) and out["NIST"] > 0 and out["CIDEr"] > 0
    worse = score("e2e", hyps[::-1], [[h] for h in hyps])
    assert all(worse[k] < out[k] for k in out)
