"""The language data nltk downloads, found without downloading it: the word tokenizer and WordNet
that the paper protocol's METEOR and the benchmarks' object matching (CHAIR for Object HalBench,
AMBER's nouns) read.

- Sentence splitting inside ``word_tokenize``: nltk's pretrained English Punkt model when it is
  installed; otherwise Punkt with default parameters (the same algorithm, untrained), which can
  differ only where the English model knows an abbreviation ("Dr.", "U.S.").
- WordNet: nltk's WordNet when installed; otherwise the WordNet 3.0 database of Debian's
  ``wordnet-base`` and ``wordnet-sense-index`` packages (/usr/share/wordnet), copied into an
  nltk_data corpus under the project's cache folder (the same WordNet 3.0 that nltk downloads);
  otherwise none.

Each loader returns what it found with a note saying what differs from nltk's own data (None
when nothing does), for the scores to report.
"""

from __future__ import annotations

import shutil
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from mcmdpo.files import cache_root, write_atomically, write_text_atomically

DEBIAN_WORDNET = Path("/usr/share/wordnet")
NLTK_DATA = cache_root() / "nltk_data"
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
            with source.open("rb") as original:
                write_atomically(copy, lambda handle: shutil.copyfileobj(original, handle))
    lexnames = corpus / "lexnames"
    if not lexnames.exists():
        lines = [f"{i:02d}\t{name}\t{SYNTACTIC_CATEGORY[name.split('.')[0]]}" for i, name in enumerate(LEXNAMES)]
        write_text_atomically(lexnames, "\n".join(lines) + "\n")


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
