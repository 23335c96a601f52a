"""How far annotators agree, from their labels: Cohen's kappa (scikit-learn) between every two
annotators on the records both labelled, and over everyone Cohen's kappa when there are two
annotators, Krippendorff's alpha (the ``krippendorff`` package, nominal) when there are more.
Both are computed by those libraries, on the labels as they are; a value a library leaves
undefined (one label only, no shared record) is None, with the reason.

A label is about a record's two alt-texts in the candidates file's order, whatever side each
was shown on: ``A`` (the first is better), ``B`` (the second), ``tie`` or ``both_bad``; a skip
is no label."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from typing import Any

from mcmdpo.build.annotations import Answer, Item

LABELS = ("A", "B", "tie", "both_bad")
Labels = dict[str, dict[str, str]]  # record id -> annotator -> label


def label_of(answer: Answer, item: Item) -> str | None:
    """The answer's label about the item, or None: a skip, or an answer about other texts."""
    if answer.choice == "skip":
        return None
    shown = (answer.first_text, answer.second_text)
    if shown == (item.first_text, item.second_text):
        flipped = False
    elif shown == (item.second_text, item.first_text):
        flipped = True
    else:
        return None
    if answer.choice in ("tie", "both_bad"):
        return answer.choice
    first_better = (answer.choice == "first") != flipped
    return "A" if first_better else "B"


def undefined(value: float) -> bool:
    return value is None or not math.isfinite(value)


def cohen_kappa(first: list[str], second: list[str]) -> float | None:
    """scikit-learn's Cohen's kappa of two annotators' labels of the same records; None where
    it is undefined (no record, or both used one and the same label only)."""
    if not first:
        return None
    from sklearn.metrics import cohen_kappa_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the undefined case: its NaN is reported as None
        value = float(cohen_kappa_score(first, second))
    return None if undefined(value) else value


def krippendorff_alpha(labels: Labels, annotators: list[str]) -> float | None:
    """The ``krippendorff`` package's nominal alpha over every annotator (a row each, a column a
    record, missing labels NaN); None where it is undefined (fewer than two values in all)."""
    import krippendorff
    import numpy as np

    records = sorted(labels)
    data = np.full((len(annotators), len(records)), np.nan)
    for column, record in enumerate(records):
        for row, annotator in enumerate(annotators):
            if annotator in labels[record]:
                data[row, column] = LABELS.index(labels[record][annotator])
    try:
        value = float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
    except ValueError:  # "There has to be more than one value in the domain."
        return None
    return None if undefined(value) else value


def shared(labels: Labels, first: str, second: str) -> tuple[list[str], list[str]]:
    """Both annotators' labels of the records both labelled, in record order."""
    both = [record for record in sorted(labels) if first in labels[record] and second in labels[record]]
    return [labels[record][first] for record in both], [labels[record][second] for record in both]


def majority_of(labels: list[str]) -> str | None:
    """The label most given, when one is given more often than any other."""
    counts = Counter(labels).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def agreement_report(labels: Labels) -> dict[str, Any]:
    """Per annotator (their labels, their kappa with each other annotator, how often they give
    the label most of the others give) and overall (the measure, its value, the records it
    covers, and the share of agreeing label pairs)."""
    annotators = sorted({annotator for given in labels.values() for annotator in given})
    per_annotator: dict[str, Any] = {}
    for annotator in annotators:
        kappas = {}
        for other in annotators:
            if other != annotator:
                mine, theirs = shared(labels, annotator, other)
                kappas[other] = {"cohen_kappa": cohen_kappa(mine, theirs), "shared_records": len(mine)}
        with_others = [(given[annotator], majority_of([label for name, label in given.items() if name != annotator]))
                       for given in labels.values() if annotator in given and len(given) > 1]
        compared = [(mine, theirs) for mine, theirs in with_others if theirs is not None]
        per_annotator[annotator] = {
            "labels": sum(annotator in given for given in labels.values()),
            "label_counts": dict(Counter(given[annotator] for given in labels.values() if annotator in given)),
            "kappa_with": kappas,
            "agreement_with_others_majority": (sum(mine == theirs for mine, theirs in compared) / len(compared)) if compared else None,
            "records_with_others_majority": len(compared),
        }
    return {"labels": list(LABELS), "annotators": per_annotator, "overall": overall_agreement(labels, annotators)}


def overall_agreement(labels: Labels, annotators: list[str]) -> dict[str, Any]:
    multiply = [given for given in labels.values() if len(given) > 1]
    pairs = agree = 0
    for given in multiply:
        values = list(given.values())
        for i in range(len(values)):
            for j in range(i + 1, len(values)):
                pairs += 1
                agree += values[i] == values[j]
    found: dict[str, Any] = {"annotators": len(annotators), "records_with_two_or_more_labels": len(multiply),
                             "observed_agreement": agree / pairs if pairs else None}
    if len(annotators) < 2:
        return {**found, "measure": None, "value": None, "note": "one annotator: no agreement to measure"}
    if len(annotators) == 2:
        value = cohen_kappa(*shared(labels, *annotators))
        found.update(measure="cohen_kappa", value=value)
    else:
        value = krippendorff_alpha(labels, annotators)
        found.update(measure="krippendorff_alpha", value=value)
    if value is None:
        found["note"] = "undefined: no record labelled by two annotators, or only one label given"
    return found
