"""The original MCM-DPO scoring script's metrics, for comparison with published numbers.

What it computed (design §3): a leading "Assistant:" stripped from each response;
``nltk.word_tokenize`` on the raw text (no lower-casing, punctuation kept); sentence-level nltk
BLEU averaged over records, with ``bleu_4`` the 4-gram precision alone (weights 0,0,0,1,
unsmoothed), ``cumulative_bleu_4`` (0.25 x 4) and ``bleu_1``; nltk METEOR averaged; the ``rouge``
package's ROUGE-L F averaged; CIDEr-D (the coco-caption formula, IDF from the file's references)
on ``str.split()`` tokens; the token edit distance. Every score x 100 but the edit distance, a
raw token count as the original reports it (:data:`UNITS`).

Two parts need data nltk downloads, which cannot be downloaded here, so they are found as follows
and what was used is reported with the scores:
- sentence splitting inside ``word_tokenize``: nltk's pretrained English Punkt model when it is
  installed; otherwise Punkt with default parameters (the same algorithm, untrained), which can
  differ only where the English model knows an abbreviation ("Dr.", "U.S.").
- WordNet for METEOR: nltk's WordNet when installed; otherwise the WordNet 3.0 database of
  Debian's ``wordnet-base`` and ``wordnet-sense-index`` packages (/usr/share/wordnet), copied into
  an nltk_data corpus under ~/.cache/mcmdpo (the same WordNet 3.0 that nltk downloads); otherwise
  METEOR is left out.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

DEBIAN_WORDNET = Path("/usr/share/wordnet")
NLTK_DATA = Path(os.environ.get("MCMDPO_CACHE", Path.home() / ".cache" / "mcmdpo")) / "nltk_data"
# The original: re.sub(r'^Assistant:', '', response).strip() (case-sensitive, before stripping).
ASSISTANT_PREFIX = re.compile(r"^Assistant:")
# WordNet 3.0's lexicographer files, in their numbered order (Debian's package leaves this list out).
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object "
    "noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape "
    "noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition "
    "verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl"
).split()
SYNTACTIC_CATEGORY = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
# The metrics that are not x 100, with their unit (every other score is a share x 100).
UNITS = {"edit_distance": "tokens"}


def strip_assistant(response: str) -> str:
    return ASSISTANT_PREFIX.sub("", response).strip()


@lru_cache(maxsize=1)
def word_tokenizer() -> tuple[Callable[[str], list[str]], str | None]:
    """nltk.word_tokenize, with the pretrained English Punkt model when installed, else untrained
    Punkt; and a note saying which, when it differs from the original."""
    import nltk
    from nltk.tokenize import PunktSentenceTokenizer, word_tokenize
    from nltk.tokenize.destructive import NLTKWordTokenizer

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return word_tokenize, None
    except LookupError:
        splitter, words = PunktSentenceTokenizer(), NLTKWordTokenizer()

        def tokenize(text: str) -> list[str]:
            return [token for sentence in splitter.tokenize(text) for token in words.tokenize(sentence)]

        return tokenize, ("sentence splitting used Punkt with default parameters: nltk's pretrained English Punkt "
                          "model is not installed (differs only on abbreviations that model knows)")


def _lay_out_debian_wordnet(target: Path) -> None:
    corpus = target / "corpora" / "wordnet"
    corpus.mkdir(parents=True, exist_ok=True)
    # Copies, not links: nltk refuses corpus files that resolve outside the corpus folder.
    for source in DEBIAN_WORDNET.iterdir():
        copy = corpus / source.name
        if source.is_file() and not copy.exists():
            tmp = copy.with_name(copy.name + f".tmp{os.getpid()}")
            shutil.copyfile(source, tmp)
            tmp.replace(copy)
    lexnames = corpus / "lexnames"
    if not lexnames.exists():
        lines = [f"{i:02d}\t{name}\t{SYNTACTIC_CATEGORY[name.split('.')[0]]}" for i, name in enumerate(LEXNAMES)]
        lexnames.write_text("\n".join(lines) + "\n")


@lru_cache(maxsize=1)
def wordnet() -> tuple[Any | None, str | None]:
    """nltk's WordNet reader (or None) and a note on where it came from."""
    import nltk
    from nltk.corpus import wordnet as nltk_wordnet

    try:
        nltk.data.find("corpora/wordnet")
        nltk_wordnet.ensure_loaded()
        return nltk_wordnet, None
    except LookupError:
        pass
    if not all((DEBIAN_WORDNET / name).is_file() for name in ("data.noun", "index.sense")):
        return None, "METEOR left out: no WordNet (install nltk's wordnet data, or Debian's wordnet-base and wordnet-sense-index)"
    _lay_out_debian_wordnet(NLTK_DATA)
    if str(NLTK_DATA) not in nltk.data.path:
        nltk.data.path.append(str(NLTK_DATA))
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not needed by METEOR
        reader = WordNetCorpusReader(nltk.data.find("corpora/wordnet"), None)
    return reader, "METEOR used WordNet 3.0 from Debian's wordnet-base (the database nltk's download holds)"


def noun_lemma(reader: Any, word: str) -> str:
    """``nltk.stem.WordNetLemmatizer().lemmatize(word)`` with its default noun part of speech:
    the shortest lemma WordNet's morphy finds, else the word itself (``reader``: :func:`wordnet`'s)."""
    lemmas = reader._morphy(word, "n")
    return min(lemmas, key=len) if lemmas else word


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

    tokenize, tokenizer_note = word_tokenizer()
    wordnet_reader, wordnet_note = wordnet()
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
