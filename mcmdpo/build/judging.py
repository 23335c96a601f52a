"""Pairwise judgements as pure functions: which comparisons to ask (every two distinct candidates,
in both orders, to cancel the judge's preference for a position), how to read a reply, and how the
verdicts become each candidate's score. A pair is won only when both orders name the same winner;
orders that disagree count as a tie, and so does a pair with an unparsable reply, which is also
counted. A candidate's score is (wins + ties / 2) / (candidates - 1), in [0, 1]; two identical
candidates tie without being asked, and a text several candidates share is asked about once."""

from __future__ import annotations

import re
from typing import Iterable

VERDICTS = ("first", "second", "tie")
VERDICT_WORD = re.compile(r"\b(first|second|tie|1|2)\b", re.IGNORECASE)
SYNONYMS = {"1": "first", "2": "second"}


def _first_of_text(candidates: list[str]) -> list[int]:
    """For each candidate, the index of the first candidate with its text."""
    first: dict[str, int] = {}
    return [first.setdefault(text.strip(), i) for i, text in enumerate(candidates)]


def comparisons(candidates: list[str]) -> list[tuple[int, int]]:
    """(shown first, shown second) for every two distinct texts among the candidates (each text
    by its first candidate), both orders."""
    distinct = sorted(set(_first_of_text(candidates)))
    asked = []
    for position, i in enumerate(distinct):
        for j in distinct[position + 1:]:
            asked += [(i, j), (j, i)]
    return asked


def parse_verdict(reply: str) -> str | None:
    """first, second or tie: the reply's one verdict word (or 1 / 2); None when it holds none, or
    more than one distinct."""
    found = {SYNONYMS.get(word.lower(), word.lower()) for word in VERDICT_WORD.findall(reply)}
    return found.pop() if len(found) == 1 else None


def _outcome(i: int, j: int, forward: str | None, backward: str | None) -> tuple[int | None, str]:
    """The winner of i (shown first in ``forward``) and j, or None, and what kind of outcome."""
    if forward is None or backward is None:
        return None, "unparsable"
    if forward == backward == "tie":
        return None, "tied"
    first_says = {"first": i, "second": j}.get(forward)
    second_says = {"first": j, "second": i}.get(backward)
    if first_says is not None and first_says == second_says:
        return first_says, "agreed"
    return None, "disagreed"


def score_candidates(candidates: list[str], verdicts: dict[tuple[int, int], str | None]) -> tuple[list[float], dict[str, int]]:
    """Each candidate's score from the verdicts of the asked comparisons (``verdicts[(a, b)]``:
    the verdict with a shown first), and the counts over the distinct texts' pairs: ``agreed``
    (a winner in both orders), ``disagreed`` (the orders disagree: a tie), ``tied`` (both orders
    say tie), ``unparsable`` (replies; their pairs tie)."""
    count = len(candidates)
    first = _first_of_text(candidates)
    counts = {"agreed": 0, "disagreed": 0, "tied": 0, "unparsable": 0}
    for i, j in verdicts:
        if i < j:
            _, kind = _outcome(i, j, verdicts[(i, j)], verdicts[(j, i)])
            if kind == "unparsable":
                counts[kind] += (verdicts[(i, j)] is None) + (verdicts[(j, i)] is None)
            else:
                counts[kind] += 1
    wins = [0.0] * count
    for i in range(count):
        for j in range(i + 1, count):
            a, b = sorted((first[i], first[j]))
            winner = None
            if a != b:  # identical texts tie without being asked
                winner, _ = _outcome(a, b, verdicts[(a, b)], verdicts[(b, a)])
            if winner is None:
                wins[i] += 0.5
                wins[j] += 0.5
            else:
                wins[i if first[i] == winner else j] += 1.0
    return [round(win / max(1, count - 1), 6) for win in wins], counts


def add_counts(total: dict[str, int], more: Iterable[tuple[str, int]]) -> dict[str, int]:
    for name, value in more:
        total[name] = total.get(name, 0) + value
    return total
