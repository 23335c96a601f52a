"""Reading the user's alt-text in any of the formats collect takes, into one shape
(:class:`SourceRecord`): image, question, post and alt-text, with the record's id and position.

- **SFT** files (:mod:`mcmdpo.data.parsing`): LLaVA conversations of one exchange (the question
  with ``<image>``, the alt-text), or records with ``question`` and ``chosen``;
- **upstream preference** files: ``question`` and ``chosen`` from the JSON-encoded ``text`` (or the
  top level); ``rejected`` is not read;
- **tables** named by ``--columns image=COL,context=COL,alt_text=COL[,id=COL]``: JSON, JSON Lines,
  CSV, parquet, or a ``datasets`` folder (``save_to_disk``); the question is the project's SFT
  question about the post.

A record broken in its structure (not an object, a field of the wrong type, a question missing)
is a :class:`~mcmdpo.data.records.Problem` naming file, record and field, and stops the build
before any work. What collect drops with a reason instead is content: an alt-text that is empty
(or null), an image that is not given or cannot be read."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcmdpo.build.records import context_of, question_for
from mcmdpo.data.parsing import IMAGE_PLACEHOLDER, MISSING, RecordChecker, _qa_fields, check_record, parse_image
from mcmdpo.data.reading import read_raw_records
from mcmdpo.data.records import ImageRef, Problem, RecordLocation

TABLE_COLUMNS = ("image", "context", "alt_text")
OPTIONAL_COLUMNS = ("id",)
IMAGE_KEYS = ("image", "image_path")


@dataclass(frozen=True)
class SourceRecord:
    """One input record as collect reads it. ``image`` None: no image given; ``alt_text`` None: the
    alt-text is null or missing (both are dropped with their reason, not errors)."""

    location: RecordLocation
    position: int
    id: Any
    id_field: str | None
    image: ImageRef | None
    question: str
    context: str
    alt_text: str | None

    @property
    def key(self) -> str:
        """The record's id as text: its own id, else ``#position``."""
        return f"#{self.position}" if self.id is None else str(self.id)

    @property
    def shown_id(self) -> Any:
        """The id the report and the pairs name: its own, else its position."""
        return self.position if self.id is None else self.id


def parse_columns(spec: str) -> dict[str, str]:
    """``image=COL,context=COL,alt_text=COL[,id=COL]`` as {role: column}; a ValueError otherwise."""
    columns: dict[str, str] = {}
    for part in spec.split(","):
        role, sep, column = part.partition("=")
        role, column = role.strip(), column.strip()
        if not sep or not column:
            raise ValueError(f"--columns {spec!r}: each part must be ROLE=COLUMN, got {part!r}")
        if role not in (*TABLE_COLUMNS, *OPTIONAL_COLUMNS):
            raise ValueError(f"--columns: unknown role {role!r}; the roles are {', '.join((*TABLE_COLUMNS, *OPTIONAL_COLUMNS))}")
        if role in columns:
            raise ValueError(f"--columns names {role} twice")
        columns[role] = column
    missing = [role for role in TABLE_COLUMNS if role not in columns]
    if missing:
        raise ValueError(f"--columns must name {', '.join(missing)} (image=COL,context=COL,alt_text=COL[,id=COL])")
    return columns


def read_source(data_path: str | Path, columns: dict[str, str] | None) -> tuple[str, list[SourceRecord], list[Problem]]:
    """(format, records, problems) of the user's data: "sft", "preference" or "table"."""
    path = Path(data_path)
    if columns is not None:
        located, problems = _read_table(path)
        records = [record for number, (location, raw) in enumerate(located)
                   if (record := _table_record(location, number, raw, columns, problems))]
        return "table", records, problems
    if path.is_dir():
        return "table", [], [Problem(str(path), "a folder is read as a `datasets` table: name its columns with --columns "
                                                "image=COL,context=COL,alt_text=COL")]
    located, problems, file_format = read_raw_records(path)
    if not located:
        return "sft", [], problems or [Problem(str(path), "the file holds no records")]
    kind = _guess_kind(located[0][1])
    if kind is None:
        return "table", [], [Problem(str(path), "records are neither SFT (conversations, or question and chosen) nor "
                                                "preference records (text, or rejected): name the columns of a table with "
                                                "--columns image=COL,context=COL,alt_text=COL")]
    reader = _conversation_record if kind == "sft_conversation" else _qa_record
    records = [record for number, (location, raw) in enumerate(located) if (record := reader(location, number, raw, problems))]
    return ("sft" if kind != "preference" else "preference"), records, problems


def _guess_kind(first: Any) -> str | None:
    if not isinstance(first, dict):
        return "sft_qa"  # reported record by record
    if "conversations" in first:
        return "sft_conversation"
    if "rejected" in first or "text" in first:
        return "preference"
    if "question" in first and "chosen" in first:
        return "sft_qa"
    return None


def _image(check: RecordChecker) -> ImageRef | None:
    """The record's image; None when none is given (a drop); a problem when it is malformed."""
    record = check.record
    image = record.get("image")
    if isinstance(image, dict):
        given = bool(image.get("bytes") or image.get("path"))
    else:
        given = image not in (None, "")
    if not given and record.get("image_path") in (None, ""):
        return None
    return parse_image(check)


def _alt_text(check: RecordChecker, field: str, value: Any) -> str | None:
    if value is MISSING:
        check.report(field, "missing")
        return None
    if value is None:
        return None
    if not isinstance(value, str):
        check.report(field, f"must be a string, found {type(value).__name__}")
        return None
    return value


def _question(check: RecordChecker, field: str, value: Any) -> str | None:
    if isinstance(value, str) and value.strip() and IMAGE_PLACEHOLDER in value:
        value = value.replace(IMAGE_PLACEHOLDER + "\n", "", 1).replace("\n" + IMAGE_PLACEHOLDER, "", 1)
        value = value.replace(IMAGE_PLACEHOLDER, "", 1).strip()
    return check.text(field, value)


def _record(check: RecordChecker, position: int, image: ImageRef | None, question: str | None, alt_text: str | None,
            context: str | None = None, id_field: str | None = None) -> SourceRecord | None:
    if not check.ok or question is None:
        return None
    if check.idx is None:
        id_field = None
    elif id_field is None:
        id_field = next((key for key in ("idx", "id") if check.record.get(key) is not None), None)
    return SourceRecord(check.location, position, check.idx, id_field, image, question,
                        context_of(question) if context is None else context, alt_text)


def _conversation_record(location: RecordLocation, position: int, raw: Any, problems: list[Problem]) -> SourceRecord | None:
    check = check_record(location, raw, problems)
    if check is None:
        return None
    image = _image(check)
    turns = raw.get("conversations")
    if not isinstance(turns, list) or len(turns) != 2:
        check.report("conversations", "must be one exchange: a human turn (the question) and a gpt turn (the alt-text)")
        return None
    for position_in, (turn, expected) in enumerate(zip(turns, ("human", "gpt"))):
        if not isinstance(turn, dict):
            check.report(f"conversations[{position_in}]", f"must be an object with 'from' and 'value', found {type(turn).__name__}")
        elif turn.get("from") != expected:
            check.report(f"conversations[{position_in}].from", f"expected {expected!r}, found {turn.get('from')!r}")
    if not check.ok:
        return None
    question = _question(check, "conversations[0].value", turns[0].get("value", MISSING))
    alt_text = _alt_text(check, "conversations[1].value", turns[1].get("value", MISSING))
    return _record(check, position, image, question, alt_text)


def _qa_record(location: RecordLocation, position: int, raw: Any, problems: list[Problem]) -> SourceRecord | None:
    check = check_record(location, raw, problems)
    if check is None:
        return None
    image = _image(check)
    found = _qa_fields(check, ("question", "chosen"))
    if found is None:
        return None
    question = _question(check, *found["question"])
    alt_text = _alt_text(check, *found["chosen"])
    return _record(check, position, image, question, alt_text)


# ---------------------------------------------------------------- tables

def _read_table(path: Path) -> tuple[list[tuple[RecordLocation, Any]], list[Problem]]:
    if path.is_dir():
        return _read_datasets_folder(path)
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    located, problems, _ = read_raw_records(path)
    return located, problems


def _read_csv(path: Path) -> tuple[list[tuple[RecordLocation, Any]], list[Problem]]:
    if not path.is_file():
        return [], [Problem(str(path), "file not found")]
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = []
            for row in reader:
                rows.append((RecordLocation(str(path), "line", reader.line_num), row))
    except UnicodeDecodeError as error:
        return [], [Problem(str(path), f"not UTF-8 text: {error}; save the file as UTF-8")]
    except csv.Error as error:
        return [], [Problem(str(path), f"not a CSV file: {error}")]
    return rows, []


def _read_datasets_folder(path: Path) -> tuple[list[tuple[RecordLocation, Any]], list[Problem]]:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as error:
        return [], [Problem(str(path), f"not a `datasets` folder (save_to_disk): {error}")]
    if isinstance(dataset, datasets.DatasetDict):
        if len(dataset) != 1:
            return [], [Problem(str(path), f"holds the splits {', '.join(dataset)}: pass one split's folder")]
        dataset = next(iter(dataset.values()))
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(name, datasets.Image(decode=False))  # bytes and path, not decoded here
    return [(RecordLocation(str(path), "row", number), row) for number, row in enumerate(dataset)], []


def _table_image(check: RecordChecker, column: str, value: Any) -> ImageRef | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return ImageRef(path=value)
    if isinstance(value, (bytes, bytearray)):
        return ImageRef(data=bytes(value))
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        if value.get("bytes") is None and not value.get("path"):
            return None
        probe = RecordChecker(check.location, {"image": value}, check.problems)
        image = parse_image(probe)
        check.ok = check.ok and probe.ok
        return image
    check.report(column, f"must be an image path, image bytes or {{'bytes', 'path'}}, found {type(value).__name__}")
    return None


def _table_record(location: RecordLocation, position: int, raw: Any, columns: dict[str, str],
                  problems: list[Problem]) -> SourceRecord | None:
    check = check_record(location, raw, problems)
    if check is None:
        return None
    absent = [column for column in columns.values() if column not in raw]
    if absent:
        check.report(None, f"no column {', '.join(repr(c) for c in absent)} (it has {', '.join(map(repr, raw))})")
        return None
    check.idx = raw[columns["id"]] if "id" in columns else None
    image = _table_image(check, columns["image"], raw[columns["image"]])
    context = raw[columns["context"]]
    if context is None:
        context = ""
    if not isinstance(context, str):
        check.report(columns["context"], f"must be a string, found {type(context).__name__}")
    alt_text = _alt_text(check, columns["alt_text"], raw[columns["alt_text"]])
    if check.idx is not None and not isinstance(check.idx, (str, int)):
        check.report(columns["id"], f"must be a string or an integer, found {type(check.idx).__name__}")
    if not check.ok:
        return None
    return _record(check, position, image, question_for(context.strip()), alt_text, context.strip(), columns.get("id"))


def duplicate_id_problems(records: list[SourceRecord]) -> list[Problem]:
    """Records sharing a key but not their image and alt-text: which one a later stage means
    would be ambiguous. (Records that share everything are dropped as duplicates by collect.)"""
    first: dict[str, SourceRecord] = {}
    problems = []
    for record in records:
        seen = first.setdefault(record.key, record)
        if seen is record:
            continue
        if (seen.image, seen.alt_text) != (record.image, record.alt_text):
            problems.append(Problem(record.location.file, f"id {record.key!r} is also the id of {seen.location.unit} "
                                                          f"{seen.location.number}, another record: ids must be unique",
                                    record.location, record.id, record.id_field))
    return problems
