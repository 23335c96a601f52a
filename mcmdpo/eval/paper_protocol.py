"""The original MCM-DPO scoring script's metrics, for comparison with published numbers.

What it computed: a leading "Assistant:" stripped from each response; ``nltk.word_tokenize`` on
the raw text (no lower-casing, punctuation kept); sentence-level nltk BLEU averaged over records,
with ``bleu_4`` the 4-gram precision alone (weights 0,0,0,1, unsmoothed), ``cumulative_bleu_4``
(0.25 x 4) and ``bleu_1``; nltk METEOR averaged; the ``rouge`` package's ROUGE-L F averaged;
CIDEr-D (the coco-caption formula, IDF from the file's references) on ``str.split()`` tokens; the
token edit distance. Every score x 100 but the edit distance, a raw token count as the original
reports it (:data:`UNITS`).

The tokenizer's sentence splitting and METEOR's WordNet are data nltk downloads, which cannot be
downloaded here: :mod:`mcmdpo.eval.language_data` finds them (METEOR is left out without a
WordNet), and its notes on what was used are reported with the scores.
"""

from __future__ import annotations

import re
import sys
import warnings
from typing import Any

from mcmdpo.eval import language_data

# The original: re.sub(r'^Assistant:', '', response).strip() (case-sensitive, before stripping).
ASSISTANT_PREFIX = re.compile(r"^Assistant:")
# The metrics that are not x 100, with their unit (every other score is a share x 100).
UNITS = {"edit_distance": "tokens"}


def strip_assistant(response: str) -> str:
    return ASSISTANT_PREFIX.sub("", response).strip()


def _cider_d(hypotheses: dict[Any, str], references: dict[Any, list[str]]) -> tuple[float, list[float]]:
    """CIDEr-D of the coco-caption formula on whitespace tokens (no PTB tokenisation)."""
    from pycocoevalcap.cider.cider import Cider

    score, scores = Cider().compute_score(references, {key: [hypotheses[key]] for key in references})
    return float(score), [float(s) for s in scores]


def _rouge_l(rouge: Any, hypothesis: str, references: list[str]) -> float:
    """The rouge package's ROUGE-L F against the best reference. It raises on a text that holds no
    sentence once split at full stops (a response that is only "."); the original then counts the
    record with no ROUGE, i.e. 0, and so do we."""
    if not hypothesis:
        return 0.0
    scores = []
    # Its LCS is recursive; the original raises the recursion limit for long texts, and so do we.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10**5))
    try:
        for reference in references:
            try:
                scores.append(rouge.get_scores(hypothesis, reference)[0]["rouge-l"]["f"])
            except ValueError:
                scores.append(0.0)
    finally:
        sys.setrecursionlimit(limit)
    return max(scores)


def _original_rounding(name: str, mean: float) -> float:
    """As the original reports them: round(mean, 5) * 100, and the edit distance round(mean, 3)."""
    return round(mean, 3) if name in UNITS else round(mean, 5) * 100


def paper_scores(
    hypotheses: dict[Any, str], references: dict[Any, list[str]]
) -> tuple[dict[str, float], dict[Any, dict[str, float]], list[str]]:
    """Averages over records with the original's rounding (x 100; the edit distance as a raw
    token count), per-record scores and notes on what differs from the original script."""
    from nltk import edit_distance
    from nltk.translate.bleu_score import sentence_bleu
    from nltk.translate.meteor_score import meteor_score
    from rouge import Rouge

    tokenize, tokenizer_note = language_data.word_tokenizer()
    wordnet_reader, wordnet_note = language_data.wordnet()
    notes = [note for note in (tokenizer_note, wordnet_note) if note]
    rouge = Rouge()
    cleaned = {key: strip_assistant(text) for key, text in hypotheses.items()}
    _, cider = _cider_d(cleaned, references)
    per_record: dict[Any, dict[str, float]] = {}
    raw: dict[Any, dict[str, float]] = {}
    for position, key in enumerate(references):
        hypothesis, refs = cleaned[key], references[key]
        hyp_tokens, ref_tokens = tokenize(hypothesis), [tokenize(ref) for ref in refs]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nltk warns on every zero n-gram count; unsmoothed is the point
            scores = {
                "bleu_1": sentence_bleu(ref_tokens, hyp_tokens, weights=(1, 0, 0, 0)),
                "bleu_4": sentence_bleu(ref_tokens, hyp_tokens, weights=(0, 0, 0, 1)),
                "cumulative_bleu_4": sentence_bleu(ref_tokens, hyp_tokens, weights=(0.25, 0.25, 0.25, 0.25)),
            }
        if wordnet_reader is not None:
            scores["meteor"] = meteor_score(ref_tokens, hyp_tokens, wordnet=wordnet_reader)
        scores["rouge_l"] = _rouge_l(rouge, hypothesis, refs)
        scores["cider_d"] = cider[position]
        scores["edit_distance"] = min(edit_distance(hyp_tokens, tokens) for tokens in ref_tokens)
        raw[key] = {name: float(value) for name, value in scores.items()}
        # Shares x 100; the edit distance is a token count, which the original reports as it is.
        per_record[key] = {name: value if name in UNITS else 100 * value for name, value in raw[key].items()}
    names = list(next(iter(raw.values())))
    corpus = {name: _original_rounding(name, sum(scores[name] for scores in raw.values()) / len(raw)) for name in names}
    return corpus, per_record, notes
