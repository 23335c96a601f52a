"""AMBER (Wang et al., 2023, arXiv 2311.07397): an LLM-free hallucination benchmark on 1004 images.

Its released files (github junyangwang0410/AMBER), read from ``--benchmark_dir`` (the checkout, or
one folder holding the files directly):
- ``data/query/query_all.json``: a JSON array of ``{"id", "image", "query"}``. Ids 1..1004 are
  the generative queries ("Describe this image."), ids 1005..15220 yes/no questions about the
  same images (attribute state / number / action, existence, relation);
- ``data/annotations.json``: per id its ``type`` and ``truth`` (the objects in the image, or
  "yes"/"no") and, for generative ids, ``hallu`` (absent objects a model is likely to invent);
- ``data/relation.json`` (each object word's synonyms and associated words) and
  ``data/safe_words.txt`` (words never counted as hallucinated).
The images ``AMBER_<n>.jpg`` come from the Google Drive zip the README links; they are looked for
in ``--benchmark_dir``/image unless ``--image_folder`` says otherwise.

A generative query is asked as written, a yes/no question with the suffix the original MCM-DPO
script appends (:data:`YES_NO_SUFFIX`). Scoring follows AMBER's ``inference.py``, quirks
included:
- yes/no: a response counts only when it is exactly "Yes" or "No" (mcmdpo's outputs are stripped);
  the positive class is "no"; accuracy, precision, recall are rounded to 1 decimal, and F1 is
  computed from the rounded precision and recall with an epsilon of 1e-4 (1e-3 for existence);
  every denominator starts at 0.001, as ``data/metrics.txt`` initialises them;
- descriptions: nltk nouns (word_tokenize, pos_tag NN*, WordNet noun lemma, no lower-casing)
  kept when they are AMBER object words; a noun found among the truth objects or their synonyms
  (synonyms first) covers its truth object; otherwise it is hallucinated, unless spaCy
  ``en_core_web_lg`` finds it similar (> 0.8) to one of them; a noun not found exactly among the
  truth words counts toward Cog for the hallucination targets it matches (exactly or by
  similarity), hallucinated or not; global safe words are skipped, though counted among the
  mentions. CHAIR = hallucinated / mentions, Cover = truth objects mentioned,
  Hal = responses with a hallucination, Cog = hallucination targets mentioned.
- AMBER Score = (100 - CHAIR + F1) / 2, the paper's combination, when both parts are scored.

The nltk tagger data and spaCy's ``en_core_web_lg`` cannot be installed offline; where they are
missing, every word is a noun candidate and only exact matches count, and the scores say they
are approximate (:func:`language_tools`; both parts are small functions that can be swapped).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache, partial
from pathlib import Path
from typing import Any

from mcmdpo.data.records import DataValidationError, ImageRef, Problem, RecordLocation, TestExample
from mcmdpo.eval.benchmarks.base import (
    YES_NO_SUFFIX,
    Benchmark,
    BenchmarkData,
    BenchmarkScores,
    RecordFields,
    ScoreOptions,
    json_array_records,
    read_json_value,
)

PARTS = ("generative", "discriminative")
QUERY_FILE = "query_all.json"
QUERY_PLACES = ("data/query", ".")  # the checkout's layout, or the files side by side
DATA_PLACES = ("data", ".")
ANNOTATIONS, RELATIONS, SAFE_WORDS = "annotations.json", "relation.json", "safe_words.txt"
IMAGE_FOLDER = "image"  # the Drive zip's folder, unzipped into the checkout
LAST_GENERATIVE_ID = 1004  # the released split, used when annotations.json is not there to tell

GENERATIVE = "generative"
# The annotation types of the yes/no questions and the dimension inference.py files them under
# (it files every other type under relation: "discriminative-relation" (yes) and "relation" (no)).
DIMENSIONS = {
    "discriminative-attribute-state": "state",
    "discriminative-attribute-number": "number",
    "discriminative-attribute-action": "action",
    "discriminative-hallucination": "existence",
    "discriminative-relation": "relation",
    "relation": "relation",
}
ATTRIBUTE = ("state", "number", "action")
GROUP_ORDER = ("existence", "attribute", "state", "number", "action", "relation")
# The epsilon inference.py adds to F1's denominator: 1e-4, but 1e-3 for existence.
F1_EPSILON = {"existence": 0.001}
DEFAULT_F1_EPSILON = 0.0001
DENOMINATOR_START = 0.001  # data/metrics.txt starts every *_num counter here
SIMILARITY_THRESHOLD = 0.8  # inference.py's --similarity_score


def _find(directory: Path, name: str, places: tuple[str, ...]) -> Path | None:
    for place in places:
        path = directory / place / name
        if path.is_file():
            return path
    return None


def _expected(directory: Path, name: str, places: tuple[str, ...]) -> str:
    return " or ".join(str(directory / place / name) if place != "." else str(directory / name) for place in places)


# ----------------------------------------------------------------------------- reading


def read(benchmark_dir: Path, image_folder: Path | None, parts: tuple[str, ...]) -> BenchmarkData:
    """The queries of ``parts`` (default both), generative ones as written, yes/no ones with
    :data:`YES_NO_SUFFIX`, each record kept as released."""
    parts = parts or PARTS
    query_path = _find(benchmark_dir, QUERY_FILE, QUERY_PLACES)
    if query_path is None:
        return BenchmarkData(str(benchmark_dir), problems=[Problem(
            _expected(benchmark_dir, QUERY_FILE, QUERY_PLACES),
            "file not found (AMBER's queries: --benchmark_dir must be the AMBER checkout or a folder holding query_all.json)")])
    data = BenchmarkData(str(query_path))
    images = image_folder or benchmark_dir / IMAGE_FOLDER
    data.image_folder = images
    if not images.is_dir():
        where = "--image_folder" if image_folder else "--benchmark_dir/image (or pass --image_folder)"
        data.problems.append(Problem(str(images), "not a folder: AMBER's images (AMBER_<n>.jpg, from the Google Drive zip "
                                                  f"its README links) go in {where}"))
    types, type_note = _query_types(benchmark_dir)
    seen: dict[int, int] = {}
    by_range = 0
    for location, record in json_array_records(query_path, data.problems):
        fields = RecordFields(location, record, data.problems, "id")
        query_id = fields.get("id", int)
        image = fields.get("image", str)
        query = fields.get("query", str)
        if query_id is not None and query_id in seen:
            fields.report("id", f"repeated (also record {seen[query_id]})")
        if not fields.ok:
            continue
        seen[query_id] = location.number
        if types is not None and query_id in types:
            generative = types[query_id] == GENERATIVE
        else:
            generative = query_id <= LAST_GENERATIVE_ID
            by_range += types is not None
        if (GENERATIVE if generative else "discriminative") not in parts:
            continue
        question = query if generative else query + YES_NO_SUFFIX
        data.examples.append(TestExample(query_id, ImageRef(path=image, source_field="image"), question, (), dict(record), location))
    if not images.is_dir():
        data.examples = []  # every image would be reported missing: the one problem above says it all
    if type_note:
        data.notes.append(type_note)
    if by_range:
        data.notes.append(f"{by_range} AMBER queries have no entry in {ANNOTATIONS}: ids up to {LAST_GENERATIVE_ID} taken as "
                          "generative, the others as yes/no (scoring will need their annotations)")
    if "discriminative" in parts:
        data.notes.append("AMBER: mcmdpo answers the yes/no (discriminative) queries too, which the original MCM-DPO "
                          "inference script skipped; --benchmark_parts generative gives the original's set")
    return data


def _query_types(benchmark_dir: Path) -> tuple[dict[int, str] | None, str | None]:
    """Each id's annotation type, when annotations.json is there (else the id range decides)."""
    path = _find(benchmark_dir, ANNOTATIONS, DATA_PLACES)
    if path is None:
        return None, (f"AMBER: no {ANNOTATIONS} beside the queries: ids up to {LAST_GENERATIVE_ID} are taken as the "
                      "generative queries, the others as yes/no questions (the released split)")
    problems: list[Problem] = []
    value = read_json_value(path, problems)
    if not isinstance(value, list):
        reason = str(problems[0]) if problems else f"{path}: not a JSON array"
        return None, f"AMBER: {reason}; ids up to {LAST_GENERATIVE_ID} are taken as the generative queries"
    return {entry["id"]: entry.get("type") for entry in value
            if isinstance(entry, dict) and isinstance(entry.get("id"), int)}, None


# ----------------------------------------------------------------------------- annotations


@dataclass
class Annotation:
    id: int
    type: str
    truth: Any  # a list of object words (generative) or "yes" / "no"
    hallu: list[str] = field(default_factory=list)


@dataclass
class Resources:
    """AMBER's scoring files: annotations by id, the association map, the global safe words."""

    annotations: dict[int, Annotation]
    association: dict[str, list[str]]
    safe_words: set[str]
    vocabulary: set[str]  # the keys and values of relation.json: the only words inference.py looks at


def load_resources(benchmark_dir: Path | None) -> tuple[Resources | None, list[Problem]]:
    """The three scoring files from ``benchmark_dir`` (or its ``data/``), every problem named."""
    if benchmark_dir is None:
        return None, [Problem("--benchmark_dir", f"AMBER's scoring needs its {ANNOTATIONS}, {RELATIONS} and {SAFE_WORDS}: "
                                                 "pass --benchmark_dir (the AMBER checkout)")]
    problems: list[Problem] = []
    paths = {}
    for name in (ANNOTATIONS, RELATIONS, SAFE_WORDS):
        paths[name] = _find(benchmark_dir, name, DATA_PLACES)
        if paths[name] is None:
            problems.append(Problem(_expected(benchmark_dir, name, DATA_PLACES), "file not found (AMBER's scoring needs it)"))
    if problems:
        return None, problems
    stamps = tuple((str(path), path.stat().st_mtime_ns, path.stat().st_size) for path in paths.values())
    resources, found = _read_resources(stamps)
    return resources, list(found)


@lru_cache(maxsize=2)
def _read_resources(stamps: tuple[tuple[str, int, int], ...]) -> tuple[Resources | None, tuple[Problem, ...]]:
    """Read once per run (check, then score) and again only when a file changes (``stamps``)."""
    paths = {Path(name).name: Path(name) for name, _, _ in stamps}
    problems: list[Problem] = []
    association = _read_association(paths[RELATIONS], problems)
    safe_words = _read_safe_words(paths[SAFE_WORDS], problems)
    annotations = _read_annotations(paths[ANNOTATIONS], association, problems)
    if problems:
        return None, tuple(problems)
    vocabulary = set(association) | {word for words in association.values() for word in words}
    return Resources(annotations, association, safe_words, vocabulary), ()


def _read_association(path: Path, problems: list[Problem]) -> dict[str, list[str]]:
    value = read_json_value(path, problems)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(Problem(str(path), f"the top level must be a JSON object (word -> related words), found {type(value).__name__}"))
        return {}
    for word, related in value.items():
        if not isinstance(related, list) or not all(isinstance(w, str) for w in related):
            problems.append(Problem(str(path), "must be a list of words", field=word))
    return value


def _read_safe_words(path: Path, problems: list[Problem]) -> set[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        problems.append(Problem(str(path), f"not UTF-8 text ({error})"))
        return set()
    return {line.rstrip("\r") for line in text.split("\n") if line.rstrip("\r")}


def _read_annotations(path: Path, association: dict[str, list[str]], problems: list[Problem]) -> dict[int, Annotation]:
    """By id (the released list holds id i at position i-1, where inference.py looks it up)."""
    annotations: dict[int, Annotation] = {}
    for location, record in json_array_records(path, problems):
        fields = RecordFields(location, record, problems, "id")
        entry_id = fields.get("id", int)
        kind = fields.get("type", str)
        if kind is not None and kind != GENERATIVE and kind not in DIMENSIONS:
            fields.report("type", f"unknown type {kind!r} (expected {GENERATIVE} or one of {', '.join(DIMENSIONS)})")
        if entry_id is not None and entry_id in annotations:
            fields.report("id", "repeated")
        if not fields.ok:
            continue
        if kind == GENERATIVE:
            truth = _object_words(fields, "truth", association)
            hallu = _object_words(fields, "hallu", association)
            if fields.ok:
                annotations[entry_id] = Annotation(entry_id, kind, truth, hallu)
        else:
            truth = fields.get("truth", str)
            if truth is not None and truth not in ("yes", "no"):
                fields.report("truth", f"must be \"yes\" or \"no\", found {truth!r}")
            if fields.ok:
                annotations[entry_id] = Annotation(entry_id, kind, truth)
    return annotations


def _object_words(fields: RecordFields, name: str, association: dict[str, list[str]]) -> list[str]:
    words = fields.get(name, list, non_empty=False)
    if words is None:
        return []
    if not all(isinstance(word, str) for word in words):
        fields.report(name, "must be a list of words")
        return []
    unknown = [word for word in dict.fromkeys(words) if word not in association]
    if unknown and association:
        fields.report(name, f"{', '.join(map(repr, unknown))} not a key of {RELATIONS} (inference.py needs every object word there)")
    return words


# ----------------------------------------------------------------------------- checking


def check(records: list[tuple[RecordLocation, dict[str, Any]]], options: ScoreOptions) -> list[Problem]:
    """The scoring files, and an annotated integer ``id`` (once) for every output record."""
    resources, problems = load_resources(options.benchmark_dir)
    seen: dict[int, int] = {}
    for location, record in records:
        record_id = record.get("id")
        if not isinstance(record_id, int) or isinstance(record_id, bool):
            problems.append(Problem(location.file, f"missing or not an integer (found {record_id!r}); is this an AMBER output?",
                                    location, None, "id"))
            continue
        if record_id in seen:
            problems.append(Problem(location.file, f"repeated (also line {seen[record_id]}): it would be scored twice",
                                    location, record_id, "id"))
        seen[record_id] = location.number
        if resources is not None and record_id not in resources.annotations:
            problems.append(Problem(location.file, f"not in {ANNOTATIONS}", location, record_id, "id"))
    return problems


# ----------------------------------------------------------------------------- language tools


@dataclass(frozen=True)
class LanguageTools:
    """What the description scoring needs from nltk and spaCy: a text's nouns (lemmatised, as
    inference.py's ``extract_nouns``) and the similarity of two words (spaCy's ``Doc.similarity``)."""

    nouns: Callable[[str], list[str]]
    similarity: Callable[[str, str], float]
    notes: tuple[str, ...] = ()


def exact_similarity(word: str, other: str) -> float:
    """The fallback: 1 for the same word (spaCy's answer too), 0 otherwise."""
    return 1.0 if word == other else 0.0


def spacy_similarity() -> tuple[Callable[[str, str], float] | None, str | None]:
    """spaCy ``en_core_web_lg``'s ``nlp(a).similarity(nlp(b))``, or None and why not."""
    try:
        import spacy
    except ImportError:
        return None, "spaCy is not installed"
    try:
        nlp = spacy.load("en_core_web_lg")
    except OSError:
        return None, "spaCy's en_core_web_lg model is not installed"

    @cache
    def doc(word: str) -> Any:
        return nlp(word)

    @cache
    def similarity(word: str, other: str) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # W008, an empty vector: inference.py silences it too
            return float(doc(word).similarity(doc(other)))

    return similarity, None


def nltk_tagger() -> tuple[Callable[[list[str]], list[tuple[str, str]]] | None, str | None]:
    """``nltk.pos_tag`` when its averaged perceptron tagger data is installed, or None and why not."""
    import nltk

    try:
        nltk.pos_tag(["a", "dog"])
    except (LookupError, OSError):
        return None, "nltk's averaged perceptron tagger data is not installed"
    return nltk.pos_tag, None


# WordNet's noun detachment rules (nltk's MORPHOLOGICAL_SUBSTITUTIONS), for when WordNet itself is missing.
NOUN_SUFFIXES = (("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
                 ("men", "man"), ("ies", "y"))


def noun_lemmatizer(vocabulary: set[str]) -> tuple[Callable[[str], str], str | None]:
    """``WordNetLemmatizer().lemmatize(word)`` (noun): the shortest of WordNet's noun lemmas, the
    word itself when it has none; without WordNet, its detachment rules checked against AMBER's
    object words instead of WordNet's lemmas, and a note."""
    from mcmdpo.eval.language_data import noun_lemma, wordnet

    reader, _ = wordnet()
    if reader is not None:
        return partial(noun_lemma, reader), None

    def lemmatize_by_rules(word: str) -> str:
        forms = [word] + [word[: len(word) - len(old)] + new for old, new in NOUN_SUFFIXES if word.endswith(old)]
        known = [form for form in dict.fromkeys(forms) if form in vocabulary]
        return min(known, key=len) if known else word

    return lemmatize_by_rules, "WordNet is not installed, so plurals were reduced by WordNet's suffix rules alone"


@lru_cache(maxsize=4)
def _official_tools(vocabulary: frozenset[str]) -> LanguageTools:
    from mcmdpo.eval.language_data import word_tokenizer

    tokenize, tokenizer_note = word_tokenizer()
    tag, tagger_missing = nltk_tagger()
    lemmatize, lemmatizer_note = noun_lemmatizer(set(vocabulary))
    similarity, spacy_missing = spacy_similarity()
    notes = []
    if tokenizer_note:
        notes.append(f"AMBER descriptions: {tokenizer_note}")
    if tagger_missing:
        notes.append(f"AMBER's CHAIR, Cover, Hal and Cog are approximate: {tagger_missing}, so every word was taken as a "
                     "noun candidate (inference.py keeps only the words tagged NN*): an object word used as a verb or an "
                     "adjective (\"light\", \"park\", \"water\") counts as a mention")
    if lemmatizer_note:
        notes.append(f"AMBER's CHAIR, Cover, Hal and Cog are approximate: {lemmatizer_note}")
    if spacy_missing:
        notes.append(f"AMBER's CHAIR, Cover, Hal and Cog are approximate: {spacy_missing}, so an object word matched the "
                     "truth and hallucination-target words (and their synonyms in relation.json) only exactly, where "
                     f"inference.py also accepts a word vector similarity above {SIMILARITY_THRESHOLD}")

    def nouns(text: str) -> list[str]:
        tokens = tokenize(text)
        candidates = [word for word, pos in tag(tokens) if pos.startswith("NN")] if tag else tokens
        return [lemmatize(word) for word in candidates]

    return LanguageTools(nouns, similarity or exact_similarity, tuple(notes))


def language_tools(resources: Resources) -> LanguageTools:
    """inference.py's noun extraction and similarity, as far as what is installed allows."""
    return _official_tools(frozenset(resources.vocabulary))


# ----------------------------------------------------------------------------- scoring


class _Objects:
    """One response's truth (or hallucination-target) objects as inference.py looks them up: the
    synonyms of every object first, then the objects themselves; a match marks its owner object."""

    def __init__(self, words: list[str], association: dict[str, list[str]]):
        self.words = words
        self.candidates: list[str] = []
        self.owners: list[int] = []
        for k, word in enumerate(words):
            self.candidates += association[word]
            self.owners += [k] * len(association[word])
        self.candidates += words
        self.owners += range(len(words))
        self.found = [False] * len(words)

    def mark_exact(self, noun: str) -> bool:
        """The first candidate equal to ``noun`` marks its owner (so a synonym beats the word itself
        and a repeated object is never marked twice)."""
        if noun not in self.candidates:
            return False
        self.found[self.owners[self.candidates.index(noun)]] = True
        return True

    def mark_similar(self, noun: str, similarity: Callable[[str, str], float]) -> bool:
        for j, candidate in enumerate(self.candidates):
            if similarity(noun, candidate) > SIMILARITY_THRESHOLD:
                self.found[self.owners[j]] = True
                return True
        return False

    def marked(self) -> list[str]:
        return [word for word, found in zip(self.words, self.found) if found]


@dataclass
class _Counter:
    """One level's yes/no counts, each denominator starting at 0.001 as in data/metrics.txt."""

    questions: float = DENOMINATOR_START
    correct: int = 0
    truth_no: float = DENOMINATOR_START
    truth_no_answered_no: int = 0
    answered_no: float = DENOMINATOR_START
    answered_no_truth_no: int = 0
    seen: int = 0

    def add(self, truth: str, response: str) -> bool:
        self.seen += 1
        self.questions += 1
        correct = (truth == "yes" and response == "Yes") or (truth == "no" and response == "No")
        self.correct += correct
        if truth == "no":
            self.truth_no += 1
            self.truth_no_answered_no += response == "No"
        if response == "No":
            self.answered_no += 1
            self.answered_no_truth_no += truth == "no"
        return correct


def _qa_metrics(counters: list[_Counter], epsilon: float) -> dict[str, float]:
    """inference.py's Accuracy, Precision, Recall ("no" is the positive class) and F1, pooled over
    ``counters`` (the attribute level sums its three dimensions' counters, 0.001s included)."""

    def pooled(name: str) -> float:
        return sum(getattr(counter, name) for counter in counters)

    accuracy = round(pooled("correct") / pooled("questions") * 100, 1)
    precision = round(pooled("answered_no_truth_no") / pooled("answered_no") * 100, 1)
    recall = round(pooled("truth_no_answered_no") / pooled("truth_no") * 100, 1)
    f1 = round(2 * (precision / 100) * (recall / 100) / ((precision / 100) + (recall / 100) + epsilon) * 100, 1)
    return {"Accuracy": accuracy, "Precision": precision, "Recall": recall, "F1": f1}


@dataclass
class _Generative:
    mentions: int = 0
    hallucinated: int = 0
    responses: int = 0
    without_hallucination: int = 0
    truth_objects: int = 0
    truth_covered: int = 0
    hallu_targets: int = 0
    hallu_mentioned: int = 0

    def metrics(self) -> dict[str, float]:
        start = DENOMINATOR_START
        return {
            "CHAIR": round(self.hallucinated / (self.mentions + start) * 100, 1),
            "Cover": round(self.truth_covered / (self.truth_objects + start) * 100, 1),
            "Hal": round(100 - self.without_hallucination / (self.responses + start) * 100, 1),
            "Cog": round(self.hallu_mentioned / (self.hallu_targets + start) * 100, 1),
        }


def score_description(response: str, annotation: Annotation, resources: Resources, tools: LanguageTools) -> dict[str, Any]:
    """One generative response as inference.py scores it: its object mentions, which of them are
    hallucinated, the truth objects it covers and the hallucination targets it mentions."""
    nouns = [noun for noun in tools.nouns(response) if noun in resources.vocabulary]
    truth = _Objects(annotation.truth, resources.association)
    hallu = _Objects(annotation.hallu, resources.association)
    hallucinated = []
    for noun in nouns:
        if noun in resources.safe_words:
            continue  # neither hallucinated nor covering anything, even when it is a truth object
        if truth.mark_exact(noun):
            continue
        hallu.mark_exact(noun)
        hallu.mark_similar(noun, tools.similarity)  # runs after an exact match too: it may mark a second target
        if truth.mark_similar(noun, tools.similarity):
            continue
        hallucinated.append(noun)
    return {"nouns": nouns, "hallucinated": hallucinated, "truth_covered": truth.marked(), "hallu_mentioned": hallu.marked(),
            "num_truth": len(annotation.truth), "num_hallu": len(annotation.hallu)}


def score_with(records: list[tuple[RecordLocation, dict[str, Any]]], resources: Resources,
               tools: LanguageTools | Callable[[], LanguageTools] | None = None) -> BenchmarkScores:
    """AMBER's scores for output records already checked (:func:`check`); ``tools`` (or a function
    making them, called only when there are descriptions) default to :func:`language_tools`."""
    generative = _Generative()
    overall = _Counter()
    dimensions: dict[str, _Counter] = {}
    not_yes_no = 0
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for location, record in records:
        annotation = resources.annotations[record["id"]]
        row: dict[str, Any] = {"line": location.number, "id": record["id"], "type": annotation.type}
        if annotation.type == GENERATIVE:
            if not isinstance(tools, LanguageTools):
                tools = tools() if tools is not None else language_tools(resources)
            result = score_description(record["response"], annotation, resources, tools)
            generative.responses += 1
            generative.mentions += len(result["nouns"])
            generative.hallucinated += len(result["hallucinated"])
            generative.without_hallucination += not result["hallucinated"]
            generative.truth_objects += result["num_truth"]
            generative.truth_covered += len(result["truth_covered"])
            generative.hallu_targets += result["num_hallu"]
            generative.hallu_mentioned += len(result["hallu_mentioned"])
            row.update({key: result[key] for key in ("nouns", "hallucinated", "truth_covered", "hallu_mentioned")})
        else:
            response = record["response"]  # compared as it is, as inference.py compares it
            prediction = response if response in ("Yes", "No") else None
            not_yes_no += prediction is None
            dimension = DIMENSIONS[annotation.type]
            overall.add(annotation.truth, response)
            correct = dimensions.setdefault(dimension, _Counter()).add(annotation.truth, response)
            row.update({"dimension": dimension, "truth": annotation.truth, "prediction": prediction, "correct": correct})
        rows.append(row)

    scores: dict[str, float] = {}
    groups: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    if generative.responses:
        scores.update(generative.metrics())
        counts.update({"descriptions": generative.responses, "object_mentions": generative.mentions,
                       "hallucinated_mentions": generative.hallucinated, "truth_objects": generative.truth_objects,
                       "truth_objects_covered": generative.truth_covered, "hallucination_targets": generative.hallu_targets,
                       "hallucination_targets_mentioned": generative.hallu_mentioned})
        notes += tools.notes if isinstance(tools, LanguageTools) else []
    if overall.seen:
        scores.update(_qa_metrics([overall], DEFAULT_F1_EPSILON))
        for group in GROUP_ORDER:
            members = ATTRIBUTE if group == "attribute" else (group,)
            counters = [dimensions[name] for name in members if name in dimensions]
            if counters:
                groups[group] = _qa_metrics(counters, F1_EPSILON.get(group, DEFAULT_F1_EPSILON))
        counts.update({"questions": overall.seen, "correct": overall.correct, "not_yes_or_no": not_yes_no})
        if not_yes_no:
            notes.append(f"AMBER: {not_yes_no} of {overall.seen} yes/no responses are neither exactly \"Yes\" nor \"No\" "
                         "(e.g. \"Yes.\" or \"no\"); AMBER's official rule counts them wrong, and never as a \"No\"")
    if generative.responses and overall.seen:
        scores["AMBER Score"] = round((100 - scores["CHAIR"] + scores["F1"]) / 2, 2)
        notes.append("AMBER Score = (100 - CHAIR + F1) / 2, the paper's combination (inference.py does not compute it)")
    if scores:
        notes.append("AMBER scores are rounded to 1 decimal as its inference.py prints them, each denominator starting at "
                     "0.001 as in its data/metrics.txt")
    return BenchmarkScores(scores, rows, counts, notes, groups=groups)


def score(records: list[tuple[RecordLocation, dict[str, Any]]], options: ScoreOptions) -> BenchmarkScores:
    resources, problems = load_resources(options.benchmark_dir)
    if resources is None:  # check() reports these first; reached only when it was skipped
        raise DataValidationError(problems)
    return score_with(records, resources)


BENCHMARK = Benchmark(
    name="amber",
    aliases=("AMBER",),
    summary="AMBER: descriptions (CHAIR, Cover, Hal, Cog) and yes/no questions (accuracy, precision, recall, F1; "
            "\"no\" positive) on 1004 images",
    parts=PARTS,
    read=read,
    score=score,
    check=check,
    score_inputs=("benchmark_dir",),
)
