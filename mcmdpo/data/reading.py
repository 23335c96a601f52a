"""Reading the raw records of JSON arrays, JSON Lines and parquet files, with their positions."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mcmdpo.data.records import Problem, RecordLocation

RawRecord = tuple[RecordLocation, Any]

JSON_LINES_SUFFIXES = {".jsonl", ".ndjson"}
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# A byte that is not UTF-8, as "surrogateescape" decoding keeps it: U+DC80..U+DCFF for 0x80..0xFF.
ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
NOT_UTF8_HINT = "save the file as UTF-8 (was it written as Latin-1 or Windows-1252?)"
UTF16_MESSAGE = "UTF-16 text (it starts with a UTF-16 byte-order mark); save the file as UTF-8"


def read_raw_records(path: str | Path) -> tuple[list[RawRecord], list[Problem], str]:
    """Return every record of ``path`` with its location, the problems that stopped records from
    being read at all (unreadable file, bad JSON, a broken JSON Lines line, bytes that are not
    UTF-8 inside a record), and the format found: "json" (an array), "jsonl" or "parquet".

    Upstream test files are JSON Lines even when named ``.json``, so a ``.json`` file that is not
    one JSON value but starts with an object is read as JSON Lines. A UTF-8 byte-order mark at the
    start of a file is skipped."""
    path = Path(path)
    name = str(path)
    if not path.is_file():
        return [], [Problem(name, "file not found")], "json"
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return (*_read_parquet(path), "parquet")
    if suffix in JSON_LINES_SUFFIXES:
        return (*_read_json_lines(path), "jsonl")
    raw = path.read_bytes()
    if raw.startswith(UTF16_BOMS):
        return [], [Problem(name, UTF16_MESSAGE)], "json"
    text, clean = _decode(raw.removeprefix(UTF8_BOM))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        if text.lstrip().startswith("{"):
            return (*_read_json_lines(path), "jsonl")
        if not clean:
            return [], [Problem(name, _bad_byte_in_json(text, error, lines=True))], "json"
        return [], [Problem(name, f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}")], "json"
    if isinstance(data, dict) and len(text.strip().splitlines()) == 1:
        located, file_format = [(RecordLocation(name, "line", 1), data)], "jsonl"  # JSON Lines with one record
    elif isinstance(data, list):
        located, file_format = [(RecordLocation(name, "record", i), record) for i, record in enumerate(data)], "json"
    else:
        return [], [Problem(name, f"the top level must be a JSON array of records, found {type(data).__name__}")], "json"
    if clean:
        return located, [], file_format
    problems: list[Problem] = []
    return [(loc, record) for loc, record in located if not _report_bad_bytes(loc, record, problems)], problems, file_format


def _decode(raw: bytes) -> tuple[str, bool]:
    """The text of ``raw`` and whether it is all UTF-8. Bytes that are not are kept as lone
    surrogates (``surrogateescape``), so that the JSON still parses and each one can be traced to
    its record and field."""
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="surrogateescape"), False


def _describe_bad_byte(text: str) -> str:
    """What the first non-UTF-8 byte of ``text`` is and what precedes it."""
    match = ESCAPED_BYTE.search(text)
    assert match is not None
    byte = ord(match.group()) - 0xDC00
    before = ESCAPED_BYTE.sub("?", text[max(0, match.start() - 20) : match.start()])
    where = f" after {before!r}" if before else " at its start"
    return f"not UTF-8 text: byte 0x{byte:02x}{where}; {NOT_UTF8_HINT}"


def _bad_byte_in_json(text: str, error: json.JSONDecodeError, lines: bool) -> str:
    """JSON that does not parse and holds non-UTF-8 bytes (one may stand outside any string):
    where the first such byte is, and why the JSON breaks. ``lines``: name lines (a whole file)."""
    match = ESCAPED_BYTE.search(text)
    assert match is not None
    byte = ord(match.group()) - 0xDC00
    line = text.count("\n", 0, match.start()) + 1
    column = match.start() - (text.rfind("\n", 0, match.start()) + 1) + 1
    at = f"line {line}, column {column}" if lines else f"column {column}"
    broken = f"line {error.lineno}, column {error.colno}" if lines else f"column {error.colno}"
    return f"not UTF-8 text: byte 0x{byte:02x} at {at} (invalid JSON at {broken}: {error.msg}); {NOT_UTF8_HINT}"


def _strings_with_bad_bytes(value: Any, field: str | None = None) -> Iterator[tuple[str | None, str]]:
    """(field, string) for each string inside ``value`` that holds a non-UTF-8 byte, the field
    named as the parsers name it: ``question``, ``conversations[0].value``, ``text.chosen`` (a
    JSON-encoded string is looked into)."""
    if isinstance(value, str):
        if not ESCAPED_BYTE.search(value):
            return
        try:
            inner = json.loads(value)
        except json.JSONDecodeError:
            inner = None
        if isinstance(inner, (dict, list)):
            found = list(_strings_with_bad_bytes(inner, field))
            if found:
                yield from found
                return
        yield field, value
    elif isinstance(value, dict):
        for key, item in value.items():
            name = key if field is None else f"{field}.{key}"
            if ESCAPED_BYTE.search(key):
                yield name, key
            yield from _strings_with_bad_bytes(item, name)
    elif isinstance(value, list):
        for position, item in enumerate(value):
            yield from _strings_with_bad_bytes(item, f"{field or ''}[{position}]")


def _report_bad_bytes(location: RecordLocation, record: Any, problems: list[Problem]) -> bool:
    """Add a problem for each field of ``record`` that holds non-UTF-8 bytes; whether any does."""
    idx = record.get("idx", record.get("id")) if isinstance(record, dict) else None
    found = False
    for field, text in _strings_with_bad_bytes(record):
        problems.append(Problem(location.file, _describe_bad_byte(text), location, idx, field))
        found = True
    return found


def _read_json_lines(path: Path) -> tuple[list[RawRecord], list[Problem]]:
    name = str(path)
    records: list[RawRecord] = []
    problems: list[Problem] = []
    with path.open("rb") as handle:
        for number, raw_line in enumerate(handle, start=1):
            location = RecordLocation(name, "line", number)
            if number == 1:
                if raw_line.startswith(UTF16_BOMS):
                    return [], [Problem(name, UTF16_MESSAGE)]
                raw_line = raw_line.removeprefix(UTF8_BOM)
            if not raw_line.strip():
                continue
            line, clean = _decode(raw_line)
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                if clean:
                    problems.append(Problem(name, f"invalid JSON at column {error.colno}: {error.msg}", location))
                else:
                    problems.append(Problem(name, _bad_byte_in_json(line, error, lines=False), location))
                continue
            if clean or not _report_bad_bytes(location, record, problems):
                records.append((location, record))
    return records, problems


def _read_parquet(path: Path) -> tuple[list[RawRecord], list[Problem]]:
    import pyarrow.parquet as pq

    name = str(path)
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as error:  # pyarrow raises several types for damaged files
        return [], [Problem(name, f"cannot read parquet file: {error}")]
    return [(RecordLocation(name, "row", i), row) for i, row in enumerate(rows)], []
