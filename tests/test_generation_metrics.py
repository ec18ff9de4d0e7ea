"""Scorers: hand-checked cases, maximal scores for identical text, multi-reference behaviour, and the figures the
official scorers printed on fixed inputs (tests/data).

Official figures (their code is not part of this project; only what it printed is kept here):
- E2E: tuetschek/e2e-metrics measure_scores.py (commit 1b9c4d8) on tests/data/e2e_scorer_{refs,hyps}.txt, run as
  `measure_scores.py -p REFS HYPS` (the Python mteval, as the LoRA paper ran it) and without -p (the edited Perl
  mteval-v13a-sig.pl; it differs only in NIST's reference length when inputs have different numbers of
  references). 20 E2E test-set inputs with 2 to 6 of their references and made-up outputs.
- WebNLG / DART: microsoft/LoRA's pipeline on tests/data/webnlg_scorer_inputs.json (16 WebNLG test inputs with 1 to
  3 references, made-up outputs): gpt2_decode.py's post_process(--tokenize --lower), references padded to 6 with
  the first one, then LoRA's examples/NLG/eval/eval.py (WebNLG GenerationEval: multi-bleu-detok.perl, METEOR 1.5
  -norm, pyter3 0.3) with `-nr 6 -m bleu,meteor,ter`; the values its run() returned before its table rounds them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from repro.generation import metrics
from repro.generation.metrics import (bleu, lora_tokenize, nist, rouge_metrics, score, sentence_ter, ter,
                                      triples_metrics)

DATA = Path(__file__).parent / "data"


def _e2e_inputs() -> tuple[list[str], list[list[str]]]:
    """The official scorer's text format: one output per line; references one per line, inputs split by a blank
    line."""
    refs = [[r.strip() for r in group.splitlines() if r.strip()]
            for group in (DATA / "e2e_scorer_refs.txt").read_text(encoding="utf-8").strip().split("\n\n")]
    hyps = [h.strip() for h in (DATA / "e2e_scorer_hyps.txt").read_text(encoding="utf-8").splitlines() if h.strip()]
    assert len(hyps) == len(refs) == 20 and {len(r) for r in refs} == {2, 3, 4, 5, 6}
    return hyps, refs


def _webnlg_inputs() -> tuple[list[str], list[list[str]]]:
    data = json.loads((DATA / "webnlg_scorer_inputs.json").read_text(encoding="utf-8"))
    return data["hyps"], data["refs"]


# measure_scores.py printed (4 decimals; BLEU, METEOR, ROUGE_L as fractions, x100 here as Table 3)
E2E_OFFICIAL = {"BLEU": 30.62, "NIST": 2.5554, "METEOR": 30.52, "ROUGE_L": 48.09, "CIDEr": 0.8836}
E2E_OFFICIAL_PERL_NIST = 2.4946  # without -p; BLEU, METEOR, ROUGE_L and CIDEr printed the same


def test_e2e_bleu_and_nist_match_the_official_scorer():
    hyps, refs = _e2e_inputs()
    assert bleu(hyps, refs, lowercase=True) == pytest.approx(E2E_OFFICIAL["BLEU"], abs=0.01)
    assert nist(hyps, refs) == pytest.approx(E2E_OFFICIAL["NIST"], abs=1e-4)
    assert nist(hyps, refs, ref_length="corpus") == pytest.approx(E2E_OFFICIAL_PERL_NIST, abs=1e-4)


@pytest.mark.skipif(not metrics.HAS_JAVA, reason="METEOR and the PTB tokenizer (ROUGE_L, CIDEr input) need Java")
def test_e2e_metrics_match_the_official_scorer():
    hyps, refs = _e2e_inputs()
    out = score("e2e", hyps, refs)
    assert set(out) == set(E2E_OFFICIAL)
    for name, expected in E2E_OFFICIAL.items():
        assert out[name] == pytest.approx(expected, abs=0.01 if name in ("BLEU", "METEOR", "ROUGE_L") else 1e-4), name


# LoRA's eval.py: multi-bleu-detok printed BLEU = 46.71; METEOR 0.41017290085219854, TER 0.4591255099067599
# (its table: 0.41, 0.46)
WEBNLG_OFFICIAL = {"BLEU": 46.71, "MET": 0.41017290085219854, "TER": 0.4591255099067599}


def test_webnlg_bleu_and_ter_match_the_official_scripts(monkeypatch):
    monkeypatch.setattr(metrics, "HAS_JAVA", False)  # METEOR is checked below
    hyps, refs = _webnlg_inputs()
    with pytest.warns(UserWarning, match="METEOR skipped"):
        out = triples_metrics(hyps, refs)
    assert out["BLEU"] == pytest.approx(WEBNLG_OFFICIAL["BLEU"], abs=0.01)
    assert out["TER"] == pytest.approx(WEBNLG_OFFICIAL["TER"], abs=1e-6)


@pytest.mark.skipif(not metrics.HAS_JAVA, reason="METEOR needs Java")
def test_webnlg_meteor_matches_the_official_scripts():
    hyps, refs = _webnlg_inputs()
    assert triples_metrics(hyps, refs)["MET"] == pytest.approx(WEBNLG_OFFICIAL["MET"], abs=1e-4)


def test_lora_tokenize_as_the_papers_decoder():
    # the string gpt2_decode.py's post_process(text, tokenize, lower) returned
    text = "Alan Shepard (born 1923-11-18) isn't \"great\"; £20-25 café's 1.5km e.g. U.S.A.\tx\u00a0y"
    assert lora_tokenize(text) == ("alan shepard ( born 1923 - 11 - 18 ) isn ' t \" great \" ; £ 20 - 25 café ' s "
                                   "1 . 5km e . g . u . s . a . x y")


@pytest.mark.parametrize("hyp, ref, expected", [  # pyter3 0.3's ter() on the same words
    ("THIS WEEK THE SAUDIS denied information published in the new york times",
     "SAUDI ARABIA denied THIS WEEK information published in the AMERICAN new york times", 4 / 13),
    ("c d a b", "a b c d", 0.25),
    ("the cat sat on the mat", "on the mat the cat sat", 1 / 6),
    ("a b a b a", "b a b a b c", 1 / 3),
])
def test_sentence_ter_as_pyter(hyp, ref, expected):
    assert sentence_ter(hyp.split(), ref.split()) == pytest.approx(expected)


def test_bleu_multi_reference_takes_the_best_match():
    hyp = ["the cat sat on the mat"]
    assert bleu(hyp, [["a dog ran in the park", "the cat sat on the mat"]], lowercase=True) == pytest.approx(100)
    # references of different counts per input: padding repeats an input's own references (no effect)
    two = bleu(hyp * 2, [["the cat sat on the mat"], ["x y", "the cat sat on the mat"]], lowercase=True)
    assert two == pytest.approx(100)


def test_bleu_hand_checked():
    # hyp 4 tokens, ref 4 tokens: 1-gram 3/4, 2-gram 1/3, 3-gram 0/2 -> BLEU 0 (no smoothing, as multi-bleu)
    assert bleu(["a b c d"], [["a b x d"]], lowercase=False) == 0.0
    # 1..4-gram precisions 5/6, 3/5, 2/4, 1/3, no brevity penalty
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert bleu(["a b c d e f"], [["a b c d x f"]], lowercase=False) == pytest.approx(expected)


def test_nist_hand_checked():
    # reference words a a b c: info(a) = log2(4/2) = 1, info(b) = log2(4/1) = 2, info(a b) = log2(2/1) = 1;
    # "A b." -> "a b ." (the "." matches nothing): unigrams (1 + 2) / 3, bigram 1 / 2, length 3 >= 2: no penalty
    assert nist(["A b."], [["a b", "a c"]]) == pytest.approx(3 / 3 + 1 / 2)
    # length penalty: 1 hypothesis word against 3 reference words, 0.5 at ratio 2/3
    beta = math.log(0.5) / math.log(1.5) ** 2
    assert nist(["a"], [["a b c"]]) == pytest.approx(math.log2(3) * math.exp(beta * math.log(1 / 3) ** 2))
    # reference length: per input average (2 + 3) or all words over references per input (8 / 1.5)
    hyps, refs = ["a b", "c"], [["a b"], ["c d e f", "c d"]]
    ratio = nist(hyps, refs, ref_length="corpus") / nist(hyps, refs)
    assert ratio == pytest.approx(math.exp(beta * (math.log(3 / (8 / 1.5)) ** 2 - math.log(3 / 5) ** 2)))
    assert nist(["a b c"], [["a b c"]]) > nist(["a b d"], [["a b c"]]) > 0


def test_ter_hand_checked():
    assert ter(["a b c d"], [["a b x d"]]) == pytest.approx(0.25)  # one substitution in four words
    assert ter(["a b"], [["a b"]]) == 0.0
    # per input the closest reference (an empty one counts 1), then the mean over inputs
    assert ter(["a b c d", "a b"], [["x y z w", "a b c x", ""], ["", "a b"]]) == pytest.approx((0.25 + 0) / 2)


def test_rouge_best_reference():
    out = rouge_metrics(["the cat sat"], [["nothing here", "the cat sat"]])
    assert out == {"ROUGE_1": 100.0, "ROUGE_2": 100.0, "ROUGE_L": 100.0}


def test_rouge_hand_checked_with_stemming():
    # stems: cats -> cat, sitting -> sit; hyp "the cat sat on the mat", ref "the cat is sit on a mat":
    # ROUGE-1 4 matches (P 4/6, R 4/7, F 8/13), ROUGE-2 "the cat" (F 2/11), LCS "the cat on mat" (F 8/13);
    # the second input is exact (100), the mean over inputs is reported
    out = rouge_metrics(["The cats sat on the mat.", "Amanda will call."],
                        [["The cat is sitting on a mat."], ["amanda will call", "no"]])
    assert out["ROUGE_1"] == pytest.approx(100 * (8 / 13 + 1) / 2)
    assert out["ROUGE_2"] == pytest.approx(100 * (2 / 11 + 1) / 2)
    assert out["ROUGE_L"] == pytest.approx(100 * (8 / 13 + 1) / 2)


def test_seen_unseen_split(monkeypatch):
    monkeypatch.setattr(metrics, "HAS_JAVA", False)  # METEOR is checked in the Java tests
    with pytest.warns(UserWarning, match="METEOR skipped"):
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
