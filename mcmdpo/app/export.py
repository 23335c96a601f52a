"""python -m mcmdpo.app export --db FILE --output pairs.json [--min_agreement F]

The annotation database's answers as training pairs, with the annotators' agreement:

- each annotator's label of a record is their last answer about it that is not undone (a skip is
  no label; an answer about texts the record does not hold is stale, counted, not used);
- a record's pair comes from the label most of its annotators gave (strictly more than any
  other): ``A`` or ``B`` make the better text chosen and the other rejected; a majority for
  ``tie`` or ``both_bad``, no majority, or a majority share under ``--min_agreement`` leaves the
  record out, counted by reason;
- where annotators of the majority corrected the chosen text, their correction (the one most
  of them wrote, else the first written) is the chosen alt-text, the original in the provenance.

Writes the pairs (upstream preference format, a JSON array, atomically) and
``export_report.json`` beside them: the counts, the records left out by reason, and the agreement
(:mod:`mcmdpo.app.agreement`) per annotator and overall."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcmdpo.app.agreement import Labels, agreement_report, label_of, majority_of
from mcmdpo.build.annotations import AnnotationError, Answer, Item, read_answers, read_image, read_items, read_setting
from mcmdpo.build.pair import pairs_json
from mcmdpo.files import write_text_atomically

DS_NAME = "mcmdpo_annotation"
REPORT_FILE = "export_report.json"
LEFT_OUT = ("unanswered", "only_skipped", "tie", "both_bad", "no_majority", "below_min_agreement")


@dataclass(frozen=True)
class ExportOptions:
    db: str
    output: str
    min_agreement: float = 0.0  # the least share of a record's labels its majority needs


def build_parser() -> argparse.ArgumentParser:
    defaults = ExportOptions("", "")
    parser = argparse.ArgumentParser(prog="python -m mcmdpo.app export",
                                     description="The annotation database's answers as training pairs (majority of each record's "
                                                 "annotators, corrections as chosen), and the annotators' agreement.")
    parser.add_argument("--db", required=True, help="the annotation database the page wrote")
    parser.add_argument("--output", required=True, help=f"the pairs file (JSON); {REPORT_FILE} is written beside it")
    parser.add_argument("--min_agreement", type=float, default=defaults.min_agreement,
                        help="the least share of a record's labels its majority must have, 0 to 1 (default: any majority)")
    return parser


def record_labels(items: list[Item], answers: list[Answer]) -> tuple[Labels, Counter]:
    """Each record's label by annotator (their last answer counts), and counts of what was not
    used: skips, stale answers, answers about records the database does not hold."""
    by_id = {item.record_id: item for item in items}
    labels: Labels = {item.record_id: {} for item in items}
    unused: Counter = Counter()
    for answer in answers:  # in the order given: a later answer replaces an earlier one
        item = by_id.get(answer.record_id)
        if item is None:
            unused["answers_without_record"] += 1
            continue
        label = label_of(answer, item)
        if label is None:
            unused["skips" if answer.choice == "skip" else "stale_answers"] += 1
            labels[item.record_id].pop(answer.annotator, None)
            continue
        labels[item.record_id][answer.annotator] = label
    return labels, unused


def chosen_correction(item: Item, label: str, answers: list[Answer]) -> str | None:
    """The majority's correction of the chosen text: the one most written, else the first."""
    written = [answer.corrected_text for answer in answers
               if answer.corrected_text and label_of(answer, item) == label and answer.corrected_text.strip()]
    if not written:
        return None
    counts = Counter(written)
    return max(written, key=lambda text: (counts[text], -written.index(text)))


def image_fields(item: Item, database: str | Path) -> dict[str, Any]:
    if item.image_sha256 is not None:
        return {"image": {"bytes": base64.b64encode(read_image(database, item.image_sha256)).decode("ascii")}}
    return {"image": {"path": item.image_path}, "image_path": item.image_path}


def export(options: ExportOptions) -> dict[str, Any]:
    """Write the pairs and the report; the report."""
    if not 0.0 <= options.min_agreement <= 1.0:
        raise ValueError(f"--min_agreement {options.min_agreement}: a share, 0 to 1")
    output = Path(options.output)
    if not output.parent.is_dir():
        raise ValueError(f"--output {output}: the folder {output.parent} does not exist")
    items = read_items(options.db)
    everything = read_answers(options.db, "--db", include_undone=True)
    answers = [answer for answer in everything if not answer.undone]
    labels, unused = record_labels(items, answers)
    left_out: dict[str, list[str]] = {reason: [] for reason in LEFT_OUT}
    answered = {answer.record_id for answer in answers}
    pairs, corrected = [], 0
    for item in items:
        given = labels[item.record_id]
        majority = majority_of(list(given.values()))
        share = Counter(given.values())[majority] / len(given) if majority else 0.0
        reason = ("unanswered" if item.record_id not in answered else "only_skipped" if not given
                  else "no_majority" if majority is None else majority if majority in ("tie", "both_bad")
                  else "below_min_agreement" if share < options.min_agreement else None)
        if reason is not None:
            left_out[reason].append(item.record_id)
            continue
        better, worse = (item.first_text, item.second_text) if majority == "A" else (item.second_text, item.first_text)
        candidates = (item.first_candidate, item.second_candidate) if majority == "A" else (item.second_candidate, item.first_candidate)
        correction = chosen_correction(item, majority, [a for a in answers if a.record_id == item.record_id])
        if correction is not None and correction.strip().casefold() == worse.strip().casefold():
            correction = None  # a "correction" into the rejected text would pair a text with itself
        corrected += correction is not None
        text = {"question": item.question, "chosen": correction or better, "rejected": worse}
        pairs.append({
            "ds_name": DS_NAME, "idx": item.record_idx, **image_fields(item, options.db),
            "text": json.dumps(text, ensure_ascii=False),
            "provenance": {
                "source": "annotation", "record": item.record_id, "votes": dict(Counter(given.values())),
                "annotators": len(given), "agreement": share,
                "chosen": {"candidate": candidates[0], **({"corrected_from": better} if correction else {})},
                "rejected": {"candidate": candidates[1]},
            },
        })
    write_text_atomically(output, pairs_json(pairs))
    report = {
        "database": str(options.db), "output": str(output), "image_folder": read_setting(options.db, "image_folder"),
        "min_agreement": options.min_agreement, "records": len(items), "answers": len(answers),
        "undone_answers": len(everything) - len(answers), "skips": unused["skips"], "stale_answers": unused["stale_answers"],
        "answers_without_record": unused["answers_without_record"], "pairs": len(pairs), "pairs_with_correction": corrected,
        "left_out": {reason: {"count": len(ids), "records": ids} for reason, ids in left_out.items()},
        "agreement": agreement_report({record: given for record, given in labels.items() if given}),
    }
    write_text_atomically(output.with_name(REPORT_FILE), json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    return report


def summary(report: dict[str, Any]) -> str:
    overall = report["agreement"]["overall"]
    left = ", ".join(f"{reason} {group['count']}" for reason, group in report["left_out"].items() if group["count"])
    measure = (f"{overall['measure']} {overall['value']:.3f}" if overall.get("value") is not None
               else f"{overall.get('measure') or 'agreement'}: {overall.get('note', 'undefined')}")
    return (f"{report['pairs']} pairs of {report['records']} records ({report['pairs_with_correction']} with a correction) "
            f"from {report['answers']} answers; left out: {left or 'none'}; {measure} over {overall['annotators']} annotators")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = ExportOptions(db=args.db, output=args.output, min_agreement=args.min_agreement)
    try:
        report = export(options)
    except (AnnotationError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary(report))
    print(f"pairs: {options.output}; report: {Path(options.output).with_name(REPORT_FILE)}")
    if not report["pairs"]:
        print("error: no pair to train on (see the report's left_out)", file=sys.stderr)
        return 1
    return 0
