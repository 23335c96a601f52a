"""Scoring one alt-text output file against its references under a protocol: ``coco``
(:mod:`mcmdpo.eval.caption_metrics`) or ``paper`` (:mod:`mcmdpo.eval.paper_protocol`). Every score
is x 100, except the paper protocol's edit distance: a raw token count (the summary's ``units``
says so). The per-record scores go beside the file (:mod:`mcmdpo.eval.record_scores`). With a CLIP
checkpoint, CLIPScore too (:class:`mcmdpo.eval.clip_score.ClipMetrics`), on its own 0-2.5 scale."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcmdpo.data.reading import read_raw_records
from mcmdpo.data.records import DataValidationError, Problem, RecordLocation
from mcmdpo.eval.caption_metrics import coco_scores
from mcmdpo.eval.record_scores import save_record_scores

if TYPE_CHECKING:
    from mcmdpo.eval.clip_score import ClipMetrics


@dataclass
class Predictions:
    """The scorable records of one output file: hypotheses and references by position."""

    path: Path
    hypotheses: dict[int, str] = field(default_factory=dict)
    references: dict[int, list[str]] = field(default_factory=dict)
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    locations: dict[int, RecordLocation] = field(default_factory=dict)  # to name a record in a problem
    without_reference: list[Any] = field(default_factory=list)  # positions of records with no `chosen`


def read_predictions(path: str | Path) -> Predictions:
    """Records with a ``response`` and a ``chosen`` (a string or a list of strings). Records with
    no reference are counted, not scored; anything else malformed is an error naming the line."""
    path = Path(path)
    raw, problems, _ = read_raw_records(path)
    predictions = Predictions(path)
    for location, record in raw:
        where = dict(file=str(path), location=location, idx=record.get("idx") if isinstance(record, dict) else None)
        if not isinstance(record, dict):
            problems.append(Problem(message="a record must be a JSON object", **where))
            continue
        response = record.get("response")
        if not isinstance(response, str):
            problems.append(Problem(message="missing or not a string (is this an inference output?)", field="response", **where))
            continue
        chosen = record.get("chosen")
        references = [chosen] if isinstance(chosen, str) else chosen
        if references is None or references == [] or references == [""]:
            predictions.without_reference.append(location.number)
            continue
        if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
            problems.append(Problem(message="must be a string or a list of strings", field="chosen", **where))
            continue
        predictions.hypotheses[location.number] = response
        predictions.references[location.number] = references
        predictions.records[location.number] = record
        predictions.locations[location.number] = location
    if problems:
        raise DataValidationError(problems)
    if not predictions.hypotheses:
        raise DataValidationError([Problem(str(path), "no record with both a response and a reference")])
    return predictions


def score_file(path: Path, protocol: str, write_record_scores: bool = True, clip: ClipMetrics | None = None) -> dict[str, Any]:
    """Score one output file; return its summary (scores, counts, notes). With ``clip``, its
    CLIPScore metrics are added to the protocol's."""
    predictions = read_predictions(path)
    notes: list[str] = []
    units: dict[str, str] = {}  # metrics not x 100, with their unit
    if protocol == "paper":
        from mcmdpo.eval.paper_protocol import UNITS, paper_scores

        corpus, per_record, notes = paper_scores(predictions.hypotheses, predictions.references)
        units = {name: unit for name, unit in UNITS.items() if name in corpus}
    else:
        corpus, per_record = coco_scores(predictions.hypotheses, predictions.references)
        if "spice" not in corpus:
            notes.append("SPICE skipped: Stanford CoreNLP 3.6.0 models are not installed beside pycocoevalcap's SPICE jar")
    if clip is not None:
        from mcmdpo.eval.clip_score import CLIP_S_UNIT

        clip_corpus, clip_per_record = clip.score(predictions)
        corpus.update(clip_corpus)
        units.update({name: CLIP_S_UNIT for name in clip_corpus})
        for position, scores in clip_per_record.items():
            per_record[position].update(scores)
    if write_record_scores:
        write_record_scores_file(predictions, per_record, protocol)
    return {
        "file": str(path),
        "protocol": protocol,
        "scores": corpus,
        "units": units,
        "num_scored": len(predictions.hypotheses),
        "num_without_reference": len(predictions.without_reference),
        "notes": notes,
    }


def write_record_scores_file(predictions: Predictions, per_record: dict[int, dict[str, float]], protocol: str) -> Path:
    """Beside the input, never over it, one file per protocol, written atomically."""
    rows = []
    for position, scores in per_record.items():
        record = predictions.records[position]
        rows.append({"position": position, "idx": record.get("idx"), "response": predictions.hypotheses[position],
                     "references": predictions.references[position], **scores})
    return save_record_scores(predictions.path, protocol, rows)
