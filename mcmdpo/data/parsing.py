"""Turning raw records into typed examples, collecting every problem of every record."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Callable

from mcmdpo.data.records import (
    ImageRef,
    PreferenceExample,
    Problem,
    RecordLocation,
    SFTExample,
    TestExample,
    UnpairedExample,
)

IMAGE_PLACEHOLDER = "<image>"
KINDS = ("preference", "sft", "test", "unpaired")
MISSING = object()


class RecordChecker:
    """Collects the problems of one record, each tagged with file, position, idx and field."""

    def __init__(self, location: RecordLocation, record: Any, problems: list[Problem]):
        self.location = location
        self.record = record
        self.problems = problems
        self.idx = record.get("idx", record.get("id")) if isinstance(record, dict) else None
        self.ok = True

    def report(self, field: str | None, message: str) -> None:
        self.ok = False
        self.problems.append(Problem(self.location.file, message, self.location, self.idx, field))

    def text(self, field: str, value: Any, allow_placeholder: bool = False) -> str | None:
        if value is MISSING or value is None:
            self.report(field, "missing")
            return None
        if not isinstance(value, str):
            self.report(field, f"must be a string, found {type(value).__name__}")
            return None
        if not value.strip():
            self.report(field, "is empty")
            return None
        if not allow_placeholder and IMAGE_PLACEHOLDER in value:
            self.report(field, f"contains the image placeholder {IMAGE_PLACEHOLDER!r}; the prompt template places the image")
            return None
        return value


def check_record(location: RecordLocation, record: Any, problems: list[Problem]) -> RecordChecker | None:
    """A checker for ``record``, or None (with the problem reported) when it is not an object."""
    check = RecordChecker(location, record if isinstance(record, dict) else {}, problems)
    if not isinstance(record, dict):
        check.report(None, f"a record must be a JSON object, found {type(record).__name__}")
        return None
    return check


def parse_image(check: RecordChecker) -> ImageRef | None:
    record = check.record
    image = record.get("image")
    path = record.get("image_path")
    data: bytes | None = None
    if isinstance(image, dict):
        raw = image.get("bytes")
        if isinstance(raw, (bytes, bytearray)):
            data = bytes(raw)
        elif isinstance(raw, str):
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                check.report("image.bytes", "is a string but not valid base64")
                return None
        elif raw is not None:
            check.report("image.bytes", f"must be bytes or a base64 string, found {type(raw).__name__}")
            return None
        if path is None:
            path = image.get("path")
    elif isinstance(image, str):
        path = path if path is not None else image
    elif image is not None:
        check.report("image", f"must be an object with 'path' or 'bytes', or a path string, found {type(image).__name__}")
        return None
    if data is not None:
        return ImageRef(path=path if isinstance(path, str) else None, data=data)
    if path is None:
        check.report("image_path", "missing (no 'image_path', 'image.path' or 'image.bytes')")
        return None
    if not isinstance(path, str) or not path.strip():
        check.report("image_path", "must be a non-empty string")
        return None
    return ImageRef(path=path)


def _qa_fields(check: RecordChecker, names: tuple[str, ...]) -> dict[str, Any] | None:
    """Read ``names`` from the JSON-encoded ``text`` field when present, else from the top level.
    Some upstream files (Pinterest) carry both; they must agree. None when ``text`` is broken
    (already reported: its fields are then unknown, not missing)."""
    record = check.record
    inner: dict | None = None
    if record.get("text") is not None:
        text = record["text"]
        if not isinstance(text, str):
            check.report("text", f"must be a JSON-encoded string, found {type(text).__name__}")
        else:
            try:
                inner = json.loads(text)
            except json.JSONDecodeError as error:
                check.report("text", f"is not valid JSON ({error.msg} at column {error.colno})")
            else:
                if not isinstance(inner, dict):
                    check.report("text", f"must encode a JSON object, found {type(inner).__name__}")
                    inner = None
        if inner is None:
            return None
    values: dict[str, Any] = {}
    for name in names:
        top = record.get(name, MISSING)
        if inner is not None and name in inner:
            if top is not MISSING and top != inner[name]:
                check.report(name, "differs between the top level and the 'text' field")
            values[name] = (f"text.{name}", inner[name])
        else:
            values[name] = (f"text.{name}" if inner is not None and top is MISSING else name, top)
    return values


def parse_preference(location: RecordLocation, record: Any, problems: list[Problem]) -> PreferenceExample | None:
    check = check_record(location, record, problems)
    if check is None:
        return None
    image = parse_image(check)
    found = _qa_fields(check, ("question", "chosen", "rejected"))
    fields = {name: check.text(*where) for name, where in (found or {}).items()}
    if not check.ok:
        return None
    return PreferenceExample(check.idx, image, fields["question"], fields["chosen"], fields["rejected"], location)


def parse_unpaired(location: RecordLocation, record: Any, problems: list[Problem]) -> UnpairedExample | None:
    """An unpaired record (KTO): ``question``, ``completion`` (the alt-text) and ``label`` (true:
    desirable, false: undesirable), at the top level or in ``text`` as the preference format."""
    check = check_record(location, record, problems)
    if check is None:
        return None
    image = parse_image(check)
    found = _qa_fields(check, ("question", "completion", "label"))
    fields = {name: check.text(*found[name]) for name in ("question", "completion")} if found else {}
    if found:
        where, label = found["label"]
        if label is MISSING or label is None:
            check.report(where, "missing (true: a desirable alt-text, false: an undesirable one)")
        elif not isinstance(label, bool):
            check.report(where, f"must be true (desirable) or false (undesirable), found {label!r}")
    if not check.ok:
        return None
    return UnpairedExample(check.idx, image, fields["question"], fields["completion"], found["label"][1], location)


def _parse_conversation(check: RecordChecker) -> tuple[tuple[str, str], ...] | None:
    conversation = check.record["conversations"]
    if not isinstance(conversation, list) or not conversation:
        check.report("conversations", "must be a non-empty list of turns")
        return None
    if len(conversation) % 2:
        check.report("conversations", f"must alternate human/gpt turns in pairs, found {len(conversation)} turns")
        return None
    values: list[str] = []
    for position, turn in enumerate(conversation):
        field = f"conversations[{position}]"
        expected = "human" if position % 2 == 0 else "gpt"
        if not isinstance(turn, dict):
            check.report(field, f"must be an object with 'from' and 'value', found {type(turn).__name__}")
            continue
        if turn.get("from") != expected:
            check.report(f"{field}.from", f"expected {expected!r}, found {turn.get('from')!r}")
        value = turn.get("value", MISSING)
        # LLaVA puts "<image>\n" in the first human turn; we place the image through the template.
        if position == 0 and isinstance(value, str):
            value = value.replace(IMAGE_PLACEHOLDER + "\n", "", 1).replace("\n" + IMAGE_PLACEHOLDER, "", 1)
            value = value.replace(IMAGE_PLACEHOLDER, "", 1).strip()
        values.append(check.text(f"{field}.value", value))
    if not check.ok:
        return None
    return tuple(zip(values[0::2], values[1::2]))


def parse_sft(location: RecordLocation, record: Any, problems: list[Problem]) -> SFTExample | None:
    """SFT takes LLaVA conversation records (with or without an image: text-only ones are
    accepted, as upstream accepts them), and preference/test records with ``chosen`` as target."""
    check = check_record(location, record, problems)
    if check is None:
        return None
    text_only = "conversations" in record and not any(key in record for key in ("image", "image_path"))
    image = None if text_only else parse_image(check)
    if "conversations" in record:
        turns = _parse_conversation(check)
    else:
        found = _qa_fields(check, ("question", "chosen"))
        fields = {name: check.text(*where) for name, where in (found or {}).items()}
        turns = ((fields.get("question"), fields.get("chosen")),)
    if not check.ok:
        return None
    return SFTExample(check.idx, image, turns, location)


def parse_test(location: RecordLocation, record: Any, problems: list[Problem]) -> TestExample | None:
    check = check_record(location, record, problems)
    if check is None:
        return None
    image = parse_image(check)
    question = check.text("question", record.get("question", MISSING))
    chosen = record.get("chosen")
    references: tuple[str, ...] = ()
    if isinstance(chosen, str):
        references = (chosen,)
    elif isinstance(chosen, list) and all(isinstance(ref, str) for ref in chosen):
        references = tuple(chosen)
    elif chosen is not None:
        check.report("chosen", f"must be a string or a list of strings, found {type(chosen).__name__}")
    if not check.ok:
        return None
    return TestExample(check.idx, image, question, references, record, location)


PARSERS: dict[str, Callable[[RecordLocation, Any, list[Problem]], Any]] = {
    "preference": parse_preference,
    "sft": parse_sft,
    "test": parse_test,
    "unpaired": parse_unpaired,
}


def guess_kind(first_record: Any, json_lines: bool) -> str:
    """The kind a file most likely holds, from its format and first record."""
    if json_lines:
        return "test"
    if isinstance(first_record, dict):
        if "conversations" in first_record:
            return "sft"
        if "completion" in first_record and "label" in first_record:
            return "unpaired"
        if "rejected" in first_record or "text" in first_record:
            return "preference"
    return "sft"
