"""The guard on a grammar correction, as pure functions: a correction is kept only when it changes
little (the character edit distance over the original's length at most ``max_edit_ratio``) and
keeps every number and every capitalised name (none lost, none added). Number words count as
their digits ("two" = "2"), so spelling a number out is no change; a name is a word capitalised
within a sentence (not "I"), or a sentence's first word that is no common function word (for
names lost only: a correction may well start a sentence with "A"), compared regardless of case,
so capitalising "paris" is no change either."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

EDIT_RATIO = "edit_ratio"
NUMBER_CHANGED = "number_changed"
NAME_CHANGED = "name_changed"
EMPTY_REPLY = "empty_reply"
GUARD_REASONS = (EMPTY_REPLY, EDIT_RATIO, NUMBER_CHANGED, NAME_CHANGED)

# Number words that are numbers whatever the sentence ("one" is as often a pronoun, "the one on
# the left", and "second" a unit: left out).
NUMBER_WORDS = {
    "zero": "0", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
    "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14", "fifteen": "15", "sixteen": "16",
    "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50",
    "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000",
    "million": "1000000", "billion": "1000000000", "dozen": "12",
}
WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
DIGITS = re.compile(r"\d+(?:[.,:/]\d+)*(?:st|nd|rd|th)?", re.IGNORECASE)
FUNCTION_WORDS = frozenset(
    "a an the this that these those there here it its he she they we you i my our your his her their in on at with and "
    "but or of for from to as by after before when while close up inside outside under over above below behind next near "
    "some many several few all both each every no one then also however just only not".split()
)
SENTENCE_END = re.compile(r"[.!?:;\n\"“”]\s*$")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings, in characters."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def edit_ratio(original: str, corrected: str) -> float:
    return edit_distance(original, corrected) / max(len(original), 1)


def numbers(text: str) -> Counter[str]:
    """The numbers of ``text``, digits and number words alike, as digits (thousands separators
    dropped)."""
    found: Counter[str] = Counter()
    for match in DIGITS.finditer(text):
        value = match.group().lower()
        found[re.sub(r"(?<=\d),(?=\d{3}\b)", "", value)] += 1
    for word in WORD.findall(text.lower()):
        if word in NUMBER_WORDS:
            found[NUMBER_WORDS[word]] += 1
    return found


def names(text: str, sentence_starts: bool = False) -> set[str]:
    """Words capitalised within a sentence (lower-cased): the names, places and brands a
    correction must keep. ``sentence_starts``: also each sentence's first word where it is no
    common function word ("Emma holds a cup": emma; "A dog": nothing), for the names a
    correction must not lose."""
    found = set()
    for match in WORD.finditer(text):
        word = match.group()
        if not word[0].isupper() or word == "I":
            continue
        before = text[: match.start()]
        if not before.strip() or SENTENCE_END.search(before):  # a sentence's first word is capitalised whatever it is
            if sentence_starts and word.lower() not in FUNCTION_WORDS:
                found.add(word.lower())
            continue
        found.add(word.lower())
    return found


def _words(text: str) -> set[str]:
    return {word.lower() for word in WORD.findall(text)}


@dataclass(frozen=True)
class GuardResult:
    """Whether a correction is kept, and if not why (``reason``, one of :data:`GUARD_REASONS`)."""

    accepted: bool
    reason: str | None
    edit_ratio: float
    changes: dict[str, list[str]] = field(default_factory=dict)


def check_correction(original: str, corrected: str, max_edit_ratio: float) -> GuardResult:
    """Whether ``corrected`` may replace ``original``."""
    if not corrected.strip():
        return GuardResult(False, EMPTY_REPLY, 1.0)
    ratio = round(edit_ratio(original, corrected), 6)
    if ratio > max_edit_ratio:
        return GuardResult(False, EDIT_RATIO, ratio)
    before, after = numbers(original), numbers(corrected)
    if before != after:
        changes = {"lost": sorted((before - after).elements()), "added": sorted((after - before).elements())}
        return GuardResult(False, NUMBER_CHANGED, ratio, changes)
    lost = sorted(names(original, sentence_starts=True) - _words(corrected))
    added = sorted(names(corrected) - _words(original))
    if lost or added:
        return GuardResult(False, NAME_CHANGED, ratio, {"lost": lost, "added": added})
    return GuardResult(True, None, ratio)
