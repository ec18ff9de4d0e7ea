"""Offline scorers for the generation tasks, multi-reference (one hypothesis, all references of its input).

E2E (Table 3), following the E2E challenge scorer (tuetschek/e2e-metrics): BLEU and NIST on lower-cased,
mteval-13a-tokenised text (sacrebleu; nltk's NIST), METEOR 1.5, ROUGE-L and CIDEr from pycocoevalcap on
PTB-tokenised lower-cased text (the coco-caption code the scorer wraps). Scales as Table 3: BLEU, METEOR and
ROUGE_L x100, NIST and CIDEr raw.
WebNLG / DART (Tables 13, 14): BLEU x100 (sacrebleu), MET (METEOR 1.5) and TER (sacrebleu) as fractions, as the
paper prints them. SAMSum: ROUGE-1/2/L F1 x100 (rouge-score, stemming), the best reference per input.
METEOR and the PTB tokenizer run Java; without Java METEOR is left out (warned) and a regex tokenizer is used.
"""

from __future__ import annotations

import shutil
import warnings
from typing import Callable

import sacrebleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

HAS_JAVA = shutil.which("java") is not None


def _pad_references(references: list[list[str]]) -> list[list[str]]:
    """sacrebleu wants as many reference streams as the longest list; repeating an input's own references
    changes neither BLEU's clipped counts nor its closest reference length (nor TER's minimum)."""
    width = max(len(r) for r in references)
    padded = [r + [r[i % len(r)] for i in range(width - len(r))] for r in references]
    return [list(stream) for stream in zip(*padded)]


def bleu(hyps: list[str], refs: list[list[str]], lowercase: bool) -> float:
    # no smoothing, as mteval-v13a and multi-bleu (the E2E, WebNLG and DART scorers)
    return sacrebleu.corpus_bleu(hyps, _pad_references(refs), lowercase=lowercase, tokenize="13a",
                                 smooth_method="none").score


def ter(hyps: list[str], refs: list[list[str]]) -> float:
    """Fraction of edits (sacrebleu prints x100)."""
    return sacrebleu.corpus_ter(hyps, _pad_references(refs)).score / 100


def nist(hyps: list[str], refs: list[list[str]]) -> float:
    from nltk.translate.nist_score import corpus_nist

    tok = Tokenizer13a()
    split = lambda s: tok(s.lower()).split()  # noqa: E731
    hyp_tokens = [split(h) for h in hyps]
    # nltk divides by the number of hypothesis n-grams of each order: cap n at the longest hypothesis
    n = min(5, max(len(h) for h in hyp_tokens))
    return corpus_nist([[split(r) for r in rs] for rs in refs], hyp_tokens, n=n) if n else 0.0


_PTB_CACHE: dict[str, str] = {}


def coco_tokenize(texts: list[str]) -> list[str]:
    """coco-caption's PTB tokenisation (lower-cased, punctuation removed), one Java call for all texts not seen
    before (a JVM start costs seconds); without Java, lower-cased 13a tokens."""
    if not HAS_JAVA:
        tok = Tokenizer13a()
        return [tok(t.lower()) for t in texts]
    todo = sorted({t for t in texts if t not in _PTB_CACHE})
    if todo:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        done = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(todo)})
        _PTB_CACHE.update({t: done[i][0] for i, t in enumerate(todo)})
    return [_PTB_CACHE[t] for t in texts]


_METEOR = []


def _meteor():
    """One METEOR 1.5 Java process for the whole run (it reads segments on stdin)."""
    if not _METEOR:
        from pycocoevalcap.meteor.meteor import Meteor

        _METEOR.append(Meteor())
    return _METEOR[0]


def _coco_inputs(hyps: list[str], refs: list[list[str]]) -> tuple[dict, dict]:
    """{id: [tokenised text]} for references and hypotheses, as coco-caption expects."""
    flat = coco_tokenize([*hyps, *(r for rs in refs for r in rs)])
    res = {i: [flat[i]] for i in range(len(hyps))}
    gts, pos = {}, len(hyps)
    for i, rs in enumerate(refs):
        gts[i], pos = flat[pos:pos + len(rs)], pos + len(rs)
    return gts, res


def coco_scores(hyps: list[str], refs: list[list[str]], names: tuple[str, ...]) -> dict[str, float]:
    """METEOR, ROUGE_L, CIDEr (fractions / raw) from pycocoevalcap; METEOR only with Java."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _coco_inputs(hyps, refs)
    scorers: dict[str, Callable] = {"ROUGE_L": Rouge, "CIDEr": Cider}
    if HAS_JAVA:
        scorers["METEOR"] = _meteor
    elif "METEOR" in names:
        warnings.warn("java not found: METEOR skipped")
    return {name: float(scorers[name]().compute_score(gts, res)[0]) for name in names if name in scorers}


def e2e_metrics(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    coco = coco_scores(hyps, refs, ("METEOR", "ROUGE_L", "CIDEr"))
    out = {"BLEU": bleu(hyps, refs, lowercase=True), "NIST": nist(hyps, refs)}
    if "METEOR" in coco:
        out["METEOR"] = 100 * coco["METEOR"]
    out.update({"ROUGE_L": 100 * coco["ROUGE_L"], "CIDEr": coco["CIDEr"]})
    return out


def triples_metrics(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    """BLEU (x100), MET and TER (fractions): the WebNLG/DART columns."""
    out = {"BLEU": bleu(hyps, refs, lowercase=False)}
    met = coco_scores(hyps, refs, ("METEOR",))
    if "METEOR" in met:
        out["MET"] = met["METEOR"]
    out["TER"] = ter(hyps, refs)
    return out


def rouge_metrics(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    """ROUGE-1/2/L F1 x100, each input scored against its best reference."""
    from rouge_score import rouge_scorer

    keys = {"ROUGE_1": "rouge1", "ROUGE_2": "rouge2", "ROUGE_L": "rougeL"}
    scorer = rouge_scorer.RougeScorer(list(keys.values()), use_stemmer=True)
    totals = dict.fromkeys(keys, 0.0)
    for hyp, rs in zip(hyps, refs):
        scores = [scorer.score(r, hyp) for r in rs]
        for name, key in keys.items():
            totals[name] += max(s[key].fmeasure for s in scores)
    return {name: 100 * total / max(len(hyps), 1) for name, total in totals.items()}


METRIC_SETS: dict[str, Callable[[list[str], list[list[str]]], dict[str, float]]] = {
    "e2e": e2e_metrics,
    "webnlg": triples_metrics,
    "dart": triples_metrics,
    "samsum": rouge_metrics,
}


def score(metric_set: str, hyps: list[str], refs: list[list[str]],
          categories: list[str | None] | None = None, seen: set[str] | None = None) -> dict[str, float]:
    """Scores of a metric set; with `categories` and `seen` (WebNLG) also `<metric>_S` on inputs of seen
    categories and `<metric>_U` on the others (the unsuffixed values are over all inputs, Table 14's A)."""
    if len(hyps) != len(refs) or any(not r for r in refs):
        raise ValueError("one hypothesis per input and at least one reference per input are required")
    fn = METRIC_SETS[metric_set]
    out = fn(hyps, refs)
    if categories is not None and seen:
        for suffix, keep in (("S", lambda c: c in seen), ("U", lambda c: c not in seen)):
            index = [i for i, c in enumerate(categories) if keep(c)]
            if index:
                part = fn([hyps[i] for i in index], [refs[i] for i in index])
                out.update({f"{k}_{suffix}": v for k, v in part.items()})
    return out
