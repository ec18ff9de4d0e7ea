"""Offline scorers for the generation tasks, multi-reference (one hypothesis, all references of its input),
computed as the official scorers the LoRA paper used compute them (checked against their printed figures in
tests/test_generation_metrics.py).

E2E (Table 3), as the E2E challenge scorer (tuetschek/e2e-metrics measure_scores.py; the paper ran it with -p):
BLEU and NIST on mteval-v13a-tokenised, lower-cased text. BLEU: corpus BLEU-4, closest reference length (ties
to the shorter), no smoothing (sacrebleu). NIST: mteval-v13a's NIST-5, written here: information weights from
the n-gram counts over every reference of the corpus, the length penalty against the sum over inputs of each
input's average reference length (the scorer's Python mteval; its edited Perl mteval instead divides all
reference words by the mean number of references per input: `nist(..., ref_length="corpus")`, equal when all
inputs have as many references). METEOR 1.5, ROUGE-L and CIDEr(-D) from pycocoevalcap on PTB-tokenised,
lower-cased text without punctuation (the coco-caption code the scorer wraps). Scales as Table 3: BLEU, METEOR
and ROUGE_L x100, NIST and CIDEr raw.
WebNLG / DART (Tables 13, 14), as the paper's pipeline: its decoder lower-cases and splits every non-word
character off (gpt2_decode.py --tokenize --lower), then WebNLG's GenerationEval eval.py scores: BLEU
(multi-bleu-detok.perl: mteval-13a tokens, case-sensitive, no smoothing; sacrebleu here) x100; MET, METEOR 1.5
-norm on nltk word tokens, as a fraction; TER, pyter's greedy-shift TER of each input against the reference that
gives the lowest, averaged over inputs, as a fraction (written here).
SAMSum: ROUGE-1/2/L F1 x100 (rouge-score, Porter stemming), each input against its best reference (rouge-score's
score_multi), averaged over inputs (the mean that the usual bootstrap aggregate estimates).
METEOR and the PTB tokenizer run Java; without Java METEOR is left out (warned) and E2E's ROUGE_L and CIDEr get
lower-cased 13a tokens instead of PTB ones (then not the official figures).
"""

from __future__ import annotations

import math
import re
import shutil
import warnings
from collections import Counter
from typing import Callable

import numpy as np
import sacrebleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

HAS_JAVA = shutil.which("java") is not None


def _pad_references(references: list[list[str]]) -> list[list[str]]:
    """sacrebleu wants as many reference streams as the longest list; repeating an input's own references
    changes neither BLEU's clipped counts nor its closest reference length."""
    width = max(len(r) for r in references)
    padded = [r + [r[i % len(r)] for i in range(width - len(r))] for r in references]
    return [list(stream) for stream in zip(*padded)]


def bleu(hyps: list[str], refs: list[list[str]], lowercase: bool) -> float:
    # no smoothing, as multi-bleu-detok (WebNLG, DART) and the E2E scorer's Python mteval (a corpus with no
    # matching n-gram of some order scores 0; the Perl mteval would smooth that order)
    # force: tokenised input is expected here (E2E references, the WebNLG/DART post-processing)
    return sacrebleu.corpus_bleu(hyps, _pad_references(refs), lowercase=lowercase, tokenize="13a",
                                 smooth_method="none", force=True).score


_TOK13A = Tokenizer13a()


def mteval_tokens(text: str) -> list[str]:
    """mteval-v13a's tokenisation, lower-cased (the E2E scorer's BLEU and NIST are case-insensitive)."""
    return _TOK13A(text.strip()).lower().split()


def _ngram_counts(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _nist_length_penalty(ratio: float) -> float:
    """1 at or above the reference length, 0.5 at 2/3 of it (beta = -ln 0.5 / ln(1.5)^2)."""
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    return math.exp(math.log(0.5) / math.log(1.5) ** 2 * math.log(ratio) ** 2)


def nist(hyps: list[str], refs: list[list[str]], max_n: int = 5, ref_length: str = "segment") -> float:
    """Corpus NIST as mteval-v13a computes it with several references: the sum over n <= max_n of the
    information of the clipped matching n-grams (clipped by the most any one reference of the input has) over
    the number of hypothesis n-grams, times the length penalty of the hypothesis words over the reference
    length. Information of an n-gram: log2(count of its first n-1 words / count of the n-gram), counted over
    every reference of the corpus (unigrams: over all reference words). Reference length ("segment"): the sum
    over inputs of each input's average reference length; "corpus": all reference words over the average
    number of references per input (the E2E scorer's edited Perl mteval)."""
    hyp_tokens = [mteval_tokens(h) for h in hyps]
    ref_tokens = [[mteval_tokens(r) for r in rs] for rs in refs]
    counts: Counter = Counter()
    for rs in ref_tokens:
        for r in rs:
            counts[()] += len(r)
            for n in range(1, max_n + 1):
                counts.update(_ngram_counts(r, n))
    info = {g: math.log2(counts[g[:-1]] / c) for g, c in counts.items() if g}
    matched_info, hyp_ngrams = np.zeros(max_n), np.zeros(max_n)
    for h, rs in zip(hyp_tokens, ref_tokens):
        for n in range(1, max_n + 1):
            ref_max: Counter = Counter()
            for r in rs:
                ref_max |= _ngram_counts(r, n)
            matched_info[n - 1] += sum(info[g] * min(c, ref_max[g]) for g, c in _ngram_counts(h, n).items()
                                       if g in ref_max)
            hyp_ngrams[n - 1] += max(len(h) - n + 1, 0)
    if ref_length == "segment":
        ref_len = sum(sum(map(len, rs)) / len(rs) for rs in ref_tokens)
    elif ref_length == "corpus":
        ref_len = counts[()] / (sum(map(len, ref_tokens)) / len(ref_tokens))
    else:
        raise ValueError(f"ref_length must be 'segment' or 'corpus', not {ref_length!r}")
    hyp_len = sum(map(len, hyp_tokens))
    penalty = _nist_length_penalty(hyp_len / ref_len) if ref_len else 0.0
    return float(np.sum(matched_info / np.maximum(hyp_ngrams, 1))) * penalty


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


_WORD_TOKENIZER = []


def nltk_tokenize(text: str) -> str:
    """nltk's word tokenizer (GenerationEval tokenises with word_tokenize; its per-sentence split changes nothing
    on text whose punctuation is already split off, and needs no punkt model here)."""
    if not _WORD_TOKENIZER:
        from nltk.tokenize import NLTKWordTokenizer

        _WORD_TOKENIZER.append(NLTKWordTokenizer())
    return " ".join(_WORD_TOKENIZER[0].tokenize(text))


def lora_tokenize(text: str) -> str:
    """The paper's decoder post-processing for WebNLG and DART (--lower --tokenize): lower-cased, every
    character that is neither a word character nor a space made a token of its own."""
    return " ".join(re.findall(r"\w+|[^\w\s]", text.lower()))


def _edit_rows(hyp_ids: list[int], ref_ids: np.ndarray, rows: list[np.ndarray], start: int) -> list[np.ndarray]:
    """Levenshtein DP rows of hyp_ids against ref_ids (row i: distances of hyp_ids[:i] to each ref prefix),
    reusing rows[:start + 1], which belong to a sequence with the same first `start` words."""
    steps = np.arange(len(ref_ids) + 1)
    out = rows[:start + 1]
    prev = out[-1]
    for word in hyp_ids[start:]:
        best = np.empty_like(prev)
        best[0] = prev[0] + 1
        best[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (ref_ids != word))
        prev = steps + np.minimum.accumulate(best - steps)  # insertions: min over k <= j of best[k] + (j - k)
        out.append(prev)
    return out


def _shift_candidates(words: list[str], ref: list[str]):
    """(i, j, length) for each hypothesis position i and reference position j != i with the same word, with the
    length of the longest run of equal words from there."""
    for i, word in enumerate(words):
        for j, ref_word in enumerate(ref):
            if i != j and word == ref_word:
                length = 1
                while (i + length < len(words) and j + length < len(ref)
                       and words[i + length] == ref[j + length]):
                    length += 1
                yield i, j, length


def sentence_ter(hyp: list[str], ref: list[str]) -> float:
    """pyter's TER, as GenerationEval computes it: while some phrase move lowers the word edit distance, make the
    one that lowers it most (a phrase = the longest run of hypothesis words from position i equal to the
    reference words from position j != i, moved to index j of the rest; ties to the lexically greatest
    result); then (moves + edit distance) / reference words."""
    vocab = {w: k for k, w in enumerate(dict.fromkeys(ref))}
    ref_ids = np.array([vocab[w] for w in ref], dtype=np.int64)
    ids = lambda ws: [vocab.get(w, -1) for w in ws]  # noqa: E731
    words, moves = list(hyp), 0
    rows = _edit_rows(ids(words), ref_ids, [np.arange(len(ref) + 1)], 0)
    while True:
        distance, best = rows[-1][-1], None
        for i, j, length in _shift_candidates(words, ref):
            rest = words[:i] + words[i + length:]
            moved = rest[:j] + words[i:i + length] + rest[j:]
            moved_rows = _edit_rows(ids(moved), ref_ids, rows, min(i, j))
            key = (int(distance - moved_rows[-1][-1]), moved)
            if best is None or key > best[0]:
                best = (key, moved_rows)
        if best is None or best[0][0] <= 0:
            return (moves + int(distance)) / len(ref)
        moves, words, rows = moves + 1, best[0][1], best[1]


def ter(hyps: list[str], refs: list[list[str]]) -> float:
    """GenerationEval's TER (fraction): each input's lowest sentence TER over its references (whitespace tokens;
    a reference without tokens counts 1), averaged over inputs."""
    per_input = [min(sentence_ter(h.split(), r.split()) if r.split() else 1.0 for r in dict.fromkeys(rs))
                 for h, rs in zip(hyps, refs)]
    return sum(per_input) / max(len(per_input), 1)


def meteor(hyps: list[str], refs: list[list[str]]) -> float:
    """METEOR 1.5 (-l en -norm) of text as given, the corpus score from the statistics of every input against
    its best reference (fraction)."""
    return float(_meteor().compute_score({i: list(rs) for i, rs in enumerate(refs)},
                                         {i: [h] for i, h in enumerate(hyps)})[0])


def triples_metrics(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    """BLEU (x100), MET and TER (fractions): the WebNLG/DART columns, on the paper's post-processed text."""
    hyps = [lora_tokenize(h) for h in hyps]
    refs = [[lora_tokenize(r) for r in rs] for rs in refs]
    out = {"BLEU": bleu(hyps, refs, lowercase=False)}
    hyp_words = [nltk_tokenize(h) for h in hyps]
    ref_words = [[nltk_tokenize(r) for r in rs] for rs in refs]
    if HAS_JAVA:
        out["MET"] = meteor(hyp_words, ref_words)
    else:
        warnings.warn("java not found: METEOR skipped")
    out["TER"] = ter(hyp_words, ref_words)
    return out


def rouge_metrics(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    """ROUGE-1/2/L F1 x100, each input scored against its best reference, averaged over inputs."""
    from rouge_score import rouge_scorer

    keys = {"ROUGE_1": "rouge1", "ROUGE_2": "rouge2", "ROUGE_L": "rougeL"}
    scorer = rouge_scorer.RougeScorer(list(keys.values()), use_stemmer=True)
    totals = dict.fromkeys(keys, 0.0)
    for hyp, rs in zip(hyps, refs):
        best = scorer.score_multi(rs, hyp)
        for name, key in keys.items():
            totals[name] += best[key].fmeasure
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


def score_outputs(metric_set: str, rows: list[dict], seen: set[str] | None) -> dict[str, float]:
    """Scores of saved output lines (`{"hypothesis", "references", "category"?...}`, as the generation pipeline
    writes them): the one path by which fresh decodes and `repro.score` re-scoring are scored."""
    categories = [r.get("category") for r in rows] if any("category" in r for r in rows) else None
    return score(metric_set, [r["hypothesis"] for r in rows], [r["references"] for r in rows], categories, seen)
