"""What every hallucination benchmark shares: reading its released files into test examples with
every problem named (file, record, field), and reading inference outputs back for scoring."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mcmdpo.data.reading import read_raw_records
from mcmdpo.data.records import DataValidationError, ImageRef, Problem, RecordLocation, TestExample

# The original inference script appends this to the yes/no questions of AMBER and HallusionBench.
YES_NO_SUFFIX = "\nAnswer the question using a single word: Yes or No.\n"


@dataclass
class BenchmarkData:
    """The examples read from a benchmark's files and every problem found on the way."""

    source: str  # what was read, for messages and progress bars
    examples: list[TestExample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    image_folder: Path | None = None  # where image paths are relative to when --image_folder is not given (default: the benchmark dir)


@dataclass
class ScoreOptions:
    """What scoring may need beyond the output file: the benchmark's own annotation files,
    COCO annotations (Object HalBench) and an LLM judge (MMHal-Bench)."""

    benchmark_dir: Path | None = None
    coco_annotations: Path | None = None
    judge_url: str | None = None
    judge_model: str = "gpt-4-0314"
    judge_api_key_env: str = "OPENAI_API_KEY"
    judge_timeout: float = 60.0
    judge_retries: int = 5
    show_progress: bool = True


@dataclass
class BenchmarkScores:
    """One output file's scores: ``scores`` named as the benchmark names them (percentages unless
    ``units`` says otherwise), per-record rows for ``NAME.<benchmark>.scores.jsonl``, counts and notes."""

    scores: dict[str, float]
    per_record: list[dict[str, Any]]
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)
    groups: dict[str, dict[str, float]] = field(default_factory=dict)  # the same metrics per split / type / dimension


@dataclass(frozen=True)
class Benchmark:
    """A benchmark by name: how to read its released files and how to score an output file."""

    name: str
    aliases: tuple[str, ...]
    summary: str
    parts: tuple[str, ...]  # subsets that --benchmark_parts can select (POPE's splits, AMBER's query types)
    read: Callable[[Path, Path | None, tuple[str, ...]], BenchmarkData]  # (benchmark_dir, image_folder, parts)
    score: Callable[[list[tuple[RecordLocation, dict[str, Any]]], ScoreOptions], BenchmarkScores]
    # Problems of an output file's records (missing labels, ids...) and of the options, found before any scoring.
    check: Callable[[list[tuple[RecordLocation, dict[str, Any]]], ScoreOptions], list[Problem]] = lambda records, options: []
    # What scoring reads beyond the output: any of "benchmark_dir", "coco_annotations", "judge"
    # (a flag for anything else would do nothing, so it is refused).
    score_inputs: tuple[str, ...] = ()
    embedded_images: bool = False  # the images travel inside the question file: no --image_folder


class RecordFields:
    """Typed access to one released record's fields, reporting each problem with file, record
    and field (the benchmark files have no ``idx``: the record's own id is shown instead)."""

    def __init__(self, location: RecordLocation, record: Any, problems: list[Problem], id_field: str | None = None):
        self.location = location
        self.record = record if isinstance(record, dict) else {}
        self.problems = problems
        self.idx = self.record.get(id_field) if id_field else None
        self.ok = isinstance(record, dict)
        if not self.ok:
            self.report(None, f"a record must be a JSON object, found {type(record).__name__}")

    def report(self, name: str | None, message: str) -> None:
        self.ok = False
        self.problems.append(Problem(self.location.file, message, self.location, self.idx, name))

    def get(self, name: str, types: type | tuple[type, ...], optional: bool = False, non_empty: bool = True) -> Any:
        """The field's value, or None with a problem reported when it is missing or mistyped."""
        value = self.record.get(name)
        if value is None:
            if not optional:
                self.report(name, "missing")
            return None
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            self.report(name, f"must be {names}, found {type(value).__name__}")
            return None
        if non_empty and isinstance(value, str) and not value.strip():
            self.report(name, "is empty")
            return None
        return value

    def base64_image(self, name: str) -> ImageRef | None:
        """An image embedded as a base64 string (RLAIF-V's evaluation files)."""
        encoded = self.get(name, str)
        if encoded is None:
            return None
        try:
            return ImageRef(data=base64.b64decode(encoded, validate=True), source_field=name)
        except (binascii.Error, ValueError):
            self.report(name, "is not valid base64")
            return None

    def image_bytes(self, name: str) -> ImageRef | None:
        """An image as datasets' parquet export stores it: ``{"bytes": ..., "path": ...}``."""
        value = self.get(name, dict)
        if value is None:
            return None
        data = value.get("bytes")
        if not isinstance(data, (bytes, bytearray)) or not data:
            self.report(f"{name}.bytes", "missing or not bytes")
            return None
        return ImageRef(data=bytes(data), source_field=f"{name}.bytes")


def require_files(directory: Path, names: list[str], what: str) -> list[Problem]:
    """A problem for each of ``names`` missing from ``directory``."""
    return [Problem(str(directory / name), f"file not found ({what})") for name in names if not (directory / name).is_file()]


def open_release(benchmark_dir: Path, file_name: str, what: str) -> tuple[BenchmarkData, list[tuple[RecordLocation, Any]]]:
    """A benchmark's question file: the data to fill (a problem if the file is missing, naming
    ``what`` it is) and its raw records with their positions."""
    path = benchmark_dir / file_name
    data = BenchmarkData(str(path))
    data.problems += require_files(benchmark_dir, [file_name], what)
    return data, ([] if data.problems else released_records(path, data.problems))


def read_json_value(path: Path, problems: list[Problem]) -> Any:
    """A whole JSON file (a released array or object); None with a problem when unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        problems.append(Problem(str(path), "file not found"))
    except UnicodeDecodeError as error:
        problems.append(Problem(str(path), f"not UTF-8 text ({error})"))
    except json.JSONDecodeError as error:
        problems.append(Problem(str(path), f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"))
    return None


def json_array_records(path: Path, problems: list[Problem]) -> list[tuple[RecordLocation, Any]]:
    """The records of a released JSON array, with their positions."""
    data = read_json_value(path, problems)
    if data is None:
        return []
    if not isinstance(data, list):
        problems.append(Problem(str(path), f"the top level must be a JSON array, found {type(data).__name__}"))
        return []
    return [(RecordLocation(str(path), "record", i), record) for i, record in enumerate(data)]


def released_records(path: Path, problems: list[Problem]) -> list[tuple[RecordLocation, Any]]:
    """The records of a released JSON Lines (or JSON array, or parquet) file, with their positions."""
    records, found, _ = read_raw_records(path)
    problems += found
    return records


def without(record: dict[str, Any], *names: str) -> dict[str, Any]:
    """``record`` without the fields ``names`` (an embedded image is not written back out)."""
    return {key: value for key, value in record.items() if key not in names}


def read_outputs(path: Path) -> list[tuple[RecordLocation, dict[str, Any]]]:
    """An inference output file's records; each must hold ``response`` (a string), else a
    :class:`DataValidationError` naming every line at fault."""
    raw, problems, _ = read_raw_records(path)
    records = []
    for location, record in raw:
        if not isinstance(record, dict):
            problems.append(Problem(str(path), "a record must be a JSON object", location))
            continue
        if not isinstance(record.get("response"), str):
            problems.append(Problem(str(path), "missing or not a string (is this an inference output?)", location, None, "response"))
            continue
        records.append((location, record))
    if not raw and not problems:
        problems.append(Problem(str(path), "the file holds no records"))
    if problems:
        raise DataValidationError(problems)
    return records


def percentage(numerator: float, denominator: float) -> float:
    """100 x numerator / denominator, 0 for an empty denominator (as the released scripts do)."""
    return 100.0 * numerator / denominator if denominator else 0.0
