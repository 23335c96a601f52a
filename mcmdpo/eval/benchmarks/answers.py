"""Yes/no answers from free text, and the binary-classification metrics the yes/no benchmarks report."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from mcmdpo.eval.benchmarks.base import percentage

_WORD = re.compile(r"[a-z]+")


def pope_yes_no(text: str) -> str:
    """POPE's official rule (its ``evaluate.py``, also LLaVA's ``eval_pope``): keep the text before
    the first period, drop commas, split on spaces; "No", "no" or "not" among the words means
    no, anything else yes. Never unparsed, by design: a rambling answer counts as yes."""
    first_sentence = text.split(".")[0] if "." in text else text
    words = first_sentence.replace(",", "").split(" ")
    return "no" if any(word in ("No", "not", "no") for word in words) else "yes"


def strict_yes_no(text: str) -> str | None:
    """Rule-based extraction for benchmarks that count unparsed answers: lower-cased words
    (letters only); "yes" without "no" is yes, "no" without "yes" is no, else None."""
    words = set(_WORD.findall(text.lower()))
    if "yes" in words and "no" not in words:
        return "yes"
    if "no" in words and "yes" not in words:
        return "no"
    return None


@dataclass
class BinaryCounts:
    """Confusion counts with "yes" as the positive class."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> "BinaryCounts":
        """From (prediction, label) pairs, each "yes" or "no"."""
        counts = cls()
        for prediction, label in pairs:
            if prediction == "yes":
                counts.tp += label == "yes"
                counts.fp += label == "no"
            else:
                counts.fn += label == "yes"
                counts.tn += label == "no"
        return counts

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def metrics(self) -> dict[str, float]:
        """accuracy, precision, recall, F1 and the share of yes answers, in percent."""
        precision = percentage(self.tp, self.tp + self.fp)
        recall = percentage(self.tp, self.tp + self.fn)
        return {
            "accuracy": percentage(self.tp + self.tn, self.total),
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "yes_ratio": percentage(self.tp + self.fp, self.total),
        }
