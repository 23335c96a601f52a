"""Reading the raw records of JSON arrays, JSON Lines and parquet files, with their positions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mcmdpo.data.records import Problem, RecordLocation

RawRecord = tuple[RecordLocation, Any]

JSON_LINES_SUFFIXES = {".jsonl", ".ndjson"}


def read_raw_records(path: str | Path) -> tuple[list[RawRecord], list[Problem], str]:
    """Return every record of ``path`` with its location, the problems that stopped records from
    being read at all (unreadable file, bad JSON, a broken JSON Lines line), and the format found:
    "json" (an array), "jsonl" or "parquet".

    Upstream test files are JSON Lines even when named ``.json``, so a ``.json`` file that is not
    one JSON value but starts with an object is read as JSON Lines."""
    path = Path(path)
    name = str(path)
    if not path.is_file():
        return [], [Problem(name, "file not found")], "json"
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return (*_read_parquet(path), "parquet")
    if suffix in JSON_LINES_SUFFIXES:
        return (*_read_json_lines(path), "jsonl")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        return [], [Problem(name, f"not UTF-8 text ({error})")], "json"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        if text.lstrip().startswith("{"):
            return (*_read_json_lines(path), "jsonl")
        return [], [Problem(name, f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}")], "json"
    if isinstance(data, dict) and len(text.strip().splitlines()) == 1:
        return [(RecordLocation(name, "line", 1), data)], [], "jsonl"  # JSON Lines with one record
    if not isinstance(data, list):
        return [], [Problem(name, f"the top level must be a JSON array of records, found {type(data).__name__}")], "json"
    return [(RecordLocation(name, "record", i), record) for i, record in enumerate(data)], [], "json"


def _read_json_lines(path: Path) -> tuple[list[RawRecord], list[Problem]]:
    name = str(path)
    records: list[RawRecord] = []
    problems: list[Problem] = []
    with path.open("rb") as handle:
        for number, raw_line in enumerate(handle, start=1):
            location = RecordLocation(name, "line", number)
            if not raw_line.strip():
                continue
            try:
                records.append((location, json.loads(raw_line.decode("utf-8"))))
            except UnicodeDecodeError as error:
                problems.append(Problem(name, f"not UTF-8 text ({error})", location))
            except json.JSONDecodeError as error:
                problems.append(Problem(name, f"invalid JSON at column {error.colno}: {error.msg}", location))
    return records, problems


def _read_parquet(path: Path) -> tuple[list[RawRecord], list[Problem]]:
    import pyarrow.parquet as pq

    name = str(path)
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as error:  # pyarrow raises several types for damaged files
        return [], [Problem(name, f"cannot read parquet file: {error}")]
    return [(RecordLocation(name, "row", i), row) for i, row in enumerate(rows)], []
