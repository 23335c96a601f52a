"""CHAIR (Rohrbach et al., 2018) as RLAIF-V's Object HalBench evaluation computes it without its
GPT object extractor: the COCO objects a response mentions, found by exact word match against
COCO's 80 classes and their synonyms, compared with the objects the image holds.

How a text's mentions are found (the ``caption_to_words`` of ``eval/eval_gpt_obj_halbench.py``):
lower-case, ``nltk.word_tokenize``, each token lemmatised as ``WordNetLemmatizer().lemmatize``
does (noun, the shortest WordNet lemma, else the token); adjacent tokens joined where the pair is
a "double word" (every multi-word synonym, "home plate", "train track", "baby dog" -> dog, ...);
"seat" dropped where "toilet" is there too; every remaining word that is a synonym counts, each
occurrence once, under the class its synonym line starts with.

What an image holds: the classes of its COCO instance annotations, plus the classes its COCO
reference captions mention (found as above).

Metrics, over N responses with mentions M_r and ground truth G_r:
``CHAIRs`` = responses with a hallucinated mention / N; ``CHAIRs_refine`` = the same over the
responses that mention any COCO object; ``CHAIRi`` = hallucinated mentions / mentions;
``obj_rec`` = sum over r of |classes of r's correct mentions| / sum of |G_r|; ``avg_word_len`` =
words (split on spaces) per response.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from mcmdpo.data.records import Problem
from mcmdpo.eval.benchmarks.base import percentage
from mcmdpo.eval.language_data import noun_lemma

SYNONYMS_FILE = "synonyms_refine.txt"
VAL_FILES = ("instances_val2014.json", "captions_val2014.json")
TRAIN_FILES = ("instances_train2014.json", "captions_train2014.json")
# Pairs the original adds to the multi-word synonyms.
EXTRA_DOUBLE_WORDS = ("home plate", "train track")
# "baby dog" is a dog (not a person: "baby" is a person synonym), "adult horse" a horse.
YOUNG_AND_ADULT = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")
PASSENGER_VEHICLES = ("jet", "train")


class ChairError(ValueError):
    """A file CHAIR needs is missing or unreadable."""


@dataclass(frozen=True)
class Synonyms:
    """``synonyms_refine.txt``: one line per COCO class, items separated by ", ", the class name first."""

    words: frozenset[str]  # every item of every line
    canonical: dict[str, str]  # item -> the first item of its line (a later line wins, as in the original)
    classes: tuple[str, ...]  # the first items, in file order

    @classmethod
    def read(cls, path: Path) -> Synonyms:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise ChairError(f"{path}: file not found (RLAIF-V's COCO synonym list, eval/data/{SYNONYMS_FILE})") from None
        except UnicodeDecodeError as error:
            raise ChairError(f"{path}: not UTF-8 text ({error})") from None
        canonical: dict[str, str] = {}
        classes = []
        for line in lines:
            if not line.strip():
                continue
            items = [item.strip() for item in line.strip().split(", ")]
            classes.append(items[0])
            for item in items:
                canonical[item] = items[0]
        if not classes:
            raise ChairError(f"{path}: no synonym lines")
        return cls(frozenset(canonical), canonical, tuple(classes))

    def double_words(self) -> dict[str, str]:
        """Word pairs read as one word, and what each stands for."""
        pairs = {word: word for word in self.canonical if len(word.split(" ")) >= 2}
        pairs.update({word: word for word in EXTRA_DOUBLE_WORDS})
        for animal in YOUNG_AND_ADULT:
            pairs[f"baby {animal}"] = animal
            pairs[f"adult {animal}"] = animal
        for vehicle in PASSENGER_VEHICLES:
            pairs[f"passenger {vehicle}"] = vehicle
        pairs["bow tie"] = "tie"
        pairs["toilet seat"] = "toilet"
        pairs["wine glas"] = "wine glass"  # kept from the original CHAIR, whose singulariser made "glass" "glas"
        return pairs


class ObjectMatcher:
    """The COCO objects a text mentions: (word as found, COCO class) per mention, in order."""

    def __init__(self, synonyms: Synonyms, tokenize: Callable[[str], list[str]], wordnet_reader: Any):
        self.synonyms = synonyms
        self.double_words = synonyms.double_words()
        self.tokenize = tokenize
        self._reader = wordnet_reader
        self._lemmas: dict[str, str] = {}

    def lemmatize(self, token: str) -> str:
        """``nltk.stem.WordNetLemmatizer().lemmatize(token)``: the shortest noun lemma WordNet's
        morphy finds, else the token itself."""
        lemma = self._lemmas.get(token)
        if lemma is None:
            lemma = self._lemmas[token] = noun_lemma(self._reader, token)
        return lemma

    def words(self, text: str) -> list[str]:
        """The text's words after lemmatisation and the merging of double words."""
        tokens = [self.lemmatize(token) for token in self.tokenize(text.lower())]
        words = []
        i = 0
        while i < len(tokens):
            pair = " ".join(tokens[i:i + 2])
            if pair in self.double_words:
                words.append(self.double_words[pair])
                i += 2
            else:
                words.append(tokens[i])
                i += 1
        if "toilet" in words and "seat" in words:  # "the seat of the toilet" is not a chair
            words = [word for word in words if word != "seat"]
        return words

    def mentions(self, text: str) -> list[tuple[str, str]]:
        return [(word, self.synonyms.canonical[word]) for word in self.words(text) if word in self.synonyms.words]


@dataclass
class CocoObjects:
    """What COCO 2014 says about some images: the category names of their instance annotations and
    their reference captions, for the images the annotation files list."""

    found: set[int] = field(default_factory=set)
    categories: dict[int, list[str]] = field(default_factory=dict)
    captions: dict[int, list[str]] = field(default_factory=dict)
    files_read: list[str] = field(default_factory=list)


def coco_problems(directory: Path | None) -> list[Problem]:
    """What is missing for ground truth: the folder, or its val2014 instances / captions files."""
    if directory is None:
        return [Problem("--coco_annotations", "Object HalBench's ground truth is COCO 2014's: pass --coco_annotations, "
                                              f"the folder holding {' and '.join(VAL_FILES)} (COCO's annotations_trainval2014.zip)")]
    if not directory.is_dir():
        return [Problem(str(directory), "--coco_annotations: not a folder")]
    return [Problem(str(directory / name), "file not found (COCO 2014 annotations, --coco_annotations)")
            for name in VAL_FILES if not (directory / name).is_file()]


def load_coco(directory: Path, image_ids: Iterable[int]) -> CocoObjects:
    """The COCO 2014 annotations of ``image_ids``: val2014 always; train2014's files (optional)
    only when some image is not a val2014 one (COCO's image ids are unique across the two, so
    reading them for val2014 images would add nothing). Cached: checking and scoring share it."""
    files = [directory / name for name in VAL_FILES + TRAIN_FILES]
    stamps = tuple((str(path), path.stat().st_mtime_ns, path.stat().st_size) if path.is_file() else (str(path), None, None)
                   for path in files)
    return _load_coco(str(directory), frozenset(image_ids), stamps)


@lru_cache(maxsize=2)
def _load_coco(directory: str, image_ids: frozenset[int], _stamps: tuple) -> CocoObjects:
    coco = CocoObjects()
    for split_files in (VAL_FILES, TRAIN_FILES):
        wanted = image_ids - coco.found
        instances, captions = (Path(directory) / name for name in split_files)
        if not wanted or not instances.is_file():
            continue
        data = _read_json(instances)
        coco.files_read.append(instances.name)
        names = {category["id"]: category["name"] for category in data.get("categories", [])}
        listed = {image["id"] for image in data.get("images", [])} & wanted
        coco.found |= listed
        for annotation in data.get("annotations", []):
            if annotation["image_id"] in listed:
                category = annotation["category_id"]
                if category not in names:
                    raise ChairError(f"{instances}: annotation {annotation.get('id')} has category_id {category}, "
                                     "which its categories do not list")
                coco.categories.setdefault(annotation["image_id"], []).append(names[category])
        del data
        if captions.is_file():
            data = _read_json(captions)
            coco.files_read.append(captions.name)
            for annotation in data.get("annotations", []):
                if annotation["image_id"] in listed:
                    coco.captions.setdefault(annotation["image_id"], []).append(annotation["caption"])
    return coco


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ChairError(f"{path}: not a COCO annotation file ({error})") from None
    if not isinstance(data, dict):
        raise ChairError(f"{path}: not a COCO annotation file (the top level must be an object)")
    return data


def ground_truth(matcher: ObjectMatcher, coco: CocoObjects, image_ids: Iterable[int]) -> tuple[dict[int, set[str]], list[str]]:
    """Each image's COCO classes (its instances' categories and its captions' mentions), and the
    category names that are not a synonym (never with RLAIF-V's list: each counts as itself)."""
    truth: dict[int, set[str]] = {}
    unknown: set[str] = set()
    for image_id in set(image_ids):
        classes = set()
        for name in coco.categories.get(image_id, []):
            if name not in matcher.synonyms.canonical:
                unknown.add(name)
            classes.add(matcher.synonyms.canonical.get(name, name))
        for caption in coco.captions.get(image_id, []):
            classes.update(coco_class for _, coco_class in matcher.mentions(caption))
        truth[image_id] = classes
    return truth, sorted(unknown)


@dataclass
class ChairResult:
    """One response's CHAIR: its mentions and which of them the image does not hold."""

    mentions: list[tuple[str, str]]
    hallucinated: list[tuple[str, str]]
    correct_classes: set[str]
    words: int  # len(caption.split(" ")), the original's length


def chair_of(matcher: ObjectMatcher, caption: str, truth: set[str]) -> ChairResult:
    mentions = matcher.mentions(caption)
    hallucinated = [(word, coco_class) for word, coco_class in mentions if coco_class not in truth]
    correct = {coco_class for _, coco_class in mentions if coco_class in truth}
    return ChairResult(mentions, hallucinated, correct, len(caption.strip().split(" ")))


def chair_metrics(results: list[ChairResult], truths: list[set[str]]) -> tuple[dict[str, float], dict[str, int]]:
    """The overall metrics (rates in percent; 0 where a denominator is 0) and their counts."""
    responses = len(results)
    hallucinated_responses = sum(bool(result.hallucinated) for result in results)
    with_mention = sum(bool(result.mentions) for result in results)
    mentions = sum(len(result.mentions) for result in results)
    hallucinated_mentions = sum(len(result.hallucinated) for result in results)
    recalled = sum(len(result.correct_classes) for result in results)
    gt_objects = sum(len(truth) for truth in truths)
    scores = {
        "CHAIRs": percentage(hallucinated_responses, responses),
        "CHAIRs_refine": percentage(hallucinated_responses, with_mention),
        "CHAIRi": percentage(hallucinated_mentions, mentions),
        "obj_rec": percentage(recalled, gt_objects),
        "avg_word_len": sum(result.words for result in results) / responses if responses else 0.0,
    }
    counts = {
        "responses": responses,
        "responses_with_coco_mention": with_mention,
        "hallucinated_responses": hallucinated_responses,
        "mentions": mentions,
        "hallucinated_mentions": hallucinated_mentions,
        "recalled_objects": recalled,
        "gt_objects": gt_objects,
    }
    return scores, counts

