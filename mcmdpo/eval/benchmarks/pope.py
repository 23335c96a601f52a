"""POPE (Li et al., 2023): yes/no questions about objects of COCO val2014 images, in three
splits that draw the absent objects at random, among frequent objects, or among co-occurring ones.

Two released layouts are read from ``--benchmark_dir``:
- the authors' question files ``coco_pope_{adversarial,popular,random}.json`` (JSON Lines:
  ``question_id``, ``image`` (a COCO val2014 file name, under ``--image_folder``), ``text``,
  ``label``), the split added to each output record as ``category``;
- the lmms-lab parquet export (``**/*.parquet``: ``question_id``, ``question``, ``answer``,
  ``category``, ``image`` with the image bytes), which the original script loads from the hub.
The question is asked as it is written, as the original script asks it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from mcmdpo.data.reading import read_raw_records
from mcmdpo.data.records import ImageRef, Problem, RecordLocation, TestExample
from mcmdpo.eval.benchmarks.answers import BinaryCounts, pope_yes_no
from mcmdpo.eval.benchmarks.base import (
    Benchmark,
    BenchmarkData,
    BenchmarkScores,
    RecordFields,
    ScoreOptions,
    released_records,
    without,
)

SPLITS = ("adversarial", "popular", "random")
QUESTION_FILE = "coco_pope_{}.json"
LABELS = ("yes", "no")


def read(benchmark_dir: Path, image_folder: Path | None, parts: tuple[str, ...]) -> BenchmarkData:
    splits = parts or SPLITS
    question_files = [benchmark_dir / QUESTION_FILE.format(split) for split in splits]
    if any(path.is_file() for path in question_files):
        return _report_repeats(_read_question_files(question_files, splits, image_folder))
    # The hub repository holds the 9,000 questions twice: data/test-*.parquet (what the original
    # script loads, the default configuration) and Full/<split>-*.parquet; its parquet-converted
    # branch has them under default/test/. The default configuration is read where it is found.
    parquet_files = (sorted(benchmark_dir.glob("data/test-*.parquet")) or sorted(benchmark_dir.glob("default/test/*.parquet"))
                     or sorted(benchmark_dir.rglob("*.parquet")))
    if parquet_files:
        data = _report_repeats(_read_parquet_export(parquet_files, splits))
        if image_folder is not None:
            data.problems.insert(0, Problem(str(benchmark_dir), "--image_folder: the parquet export holds its images"))
        return data
    expected = ", ".join(path.name for path in question_files)
    return BenchmarkData(str(benchmark_dir), problems=[Problem(
        str(benchmark_dir), f"no POPE files: expected the question files {expected} or the lmms-lab/POPE parquet export")])


def _read_question_files(paths: list[Path], splits: tuple[str, ...], image_folder: Path | None) -> BenchmarkData:
    data = BenchmarkData(", ".join(path.name for path in paths))
    if image_folder is None:
        data.problems.append(Problem(str(paths[0]), "POPE's question files name COCO val2014 images: pass --image_folder"))
    for path, split in zip(paths, splits):
        for location, record in released_records(path, data.problems):
            fields = RecordFields(location, record, data.problems, "question_id")
            question_id = fields.get("question_id", (int, str))
            image = fields.get("image", str)
            question = fields.get("text", str)
            label = _label(fields, "label")
            if fields.ok and question_id is not None and image and question and label:
                data.examples.append(TestExample(question_id, ImageRef(path=image, source_field="image"), question, (label,),
                                                 {**record, "category": split}, location))
    return data


def _read_parquet_export(paths: list[Path], splits: tuple[str, ...]) -> BenchmarkData:
    data = BenchmarkData(", ".join(path.name for path in paths))
    for path in paths:
        records, problems, _ = read_raw_records(path)
        data.problems += problems
        for location, record in records:
            fields = RecordFields(location, record, data.problems, "question_id")
            category = fields.get("category", str)
            if category is not None and category not in SPLITS:
                fields.report("category", f"must be one of {', '.join(SPLITS)}, found {category!r}")
            if not fields.ok or category not in splits:
                continue
            question_id = fields.get("question_id", (int, str))
            question = fields.get("question", str)
            label = _label(fields, "answer")
            image = fields.image_bytes("image")
            if fields.ok:
                data.examples.append(TestExample(question_id, image, question, (label,), without(record, "image"), location))
    return data


def _report_repeats(data: BenchmarkData) -> BenchmarkData:
    """A question twice in one split (two copies of the export in one folder) would be answered
    and scored twice: each repeat is a problem, and left out (``--skip_bad_records``)."""
    first: dict[tuple[str, Any], RecordLocation] = {}
    kept = []
    for example in data.examples:
        key = (example.record["category"], example.idx)
        if key in first:
            data.problems.append(Problem(example.location.file, f"the {key[0]} question {key[1]!r} again (first: {first[key]}); "
                                         "point --benchmark_dir at one copy", example.location, example.idx, "question_id"))
            continue
        first[key] = example.location
        kept.append(example)
    data.examples = kept
    return data


def _label(fields: RecordFields, name: str) -> str | None:
    label = fields.get(name, str)
    if label is not None and label.strip().lower() not in LABELS:
        fields.report(name, f"must be yes or no, found {label!r}")
        return None
    return label.strip().lower() if label else None


def score(records: list[tuple[RecordLocation, dict[str, Any]]], options: ScoreOptions) -> BenchmarkScores:
    """Accuracy, precision, recall, F1 and yes-ratio ("yes" is the positive class), overall and
    per split, with POPE's official yes/no extraction."""
    overall: list[tuple[str, str]] = []
    by_split: dict[str, list[tuple[str, str]]] = defaultdict(list)
    rows = []
    for location, record in records:
        label = record[_label_field(record)].strip().lower()
        prediction = pope_yes_no(record["response"])
        split = record.get("category", "all")
        overall.append((prediction, label))
        by_split[split].append((prediction, label))
        rows.append({"line": location.number, "question_id": record.get("question_id"), "category": split,
                     "label": label, "prediction": prediction, "correct": prediction == label})
    counts = BinaryCounts.of(overall)
    groups = {split: BinaryCounts.of(by_split[split]).metrics() for split in sorted(by_split)}
    return BenchmarkScores(counts.metrics(), rows, {"questions": counts.total, "tp": counts.tp, "fp": counts.fp,
                                                    "tn": counts.tn, "fn": counts.fn}, groups=groups)


def check_labels(records: list[tuple[RecordLocation, dict[str, Any]]], options: ScoreOptions) -> list[Problem]:
    """Every output record needs its yes/no label (``label``, or ``answer`` in the lmms-lab export)."""
    problems = []
    for location, record in records:
        name = _label_field(record)
        label = record.get(name)
        if not isinstance(label, str) or label.strip().lower() not in LABELS:
            problems.append(Problem(location.file, f"must be yes or no, found {label!r}", location, record.get("question_id"), name))
    return problems


def _label_field(record: dict[str, Any]) -> str:
    """Where an output record's label is: ``label`` (the question files) or ``answer`` (lmms-lab)."""
    return "answer" if "label" not in record and "answer" in record else "label"


BENCHMARK = Benchmark(
    name="pope",
    aliases=("lmms-lab/POPE", "POPE"),
    summary="POPE: yes/no object questions on COCO val2014; accuracy, precision, recall, F1, yes-ratio",
    parts=SPLITS,
    read=read,
    score=score,
    check=check_labels,
)
