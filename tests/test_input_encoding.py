"""The text encoding of input files: a UTF-8 byte-order mark is read past, a UTF-16 file is named
as such, and a byte that is not UTF-8 is traced to its record and field (the other records still
read)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mcmdpo.data import load_examples
from mcmdpo.data.loading import find_problems
from mcmdpo.data.reading import read_raw_records

BOM = b"\xef\xbb\xbf"


@pytest.fixture
def image_folder(synthetic_dir, tmp_path) -> Path:
    folder = tmp_path / "image"
    shutil.copytree(synthetic_dir / "image", folder)
    return folder


@pytest.fixture
def pref_records(synthetic_dir) -> list[dict]:
    """Preference records whose question, chosen and rejected are in their JSON-encoded 'text'."""
    return json.loads((synthetic_dir / "pref_train.json").read_text())[:5]


@pytest.fixture
def test_records(synthetic_dir) -> list[dict]:
    """Test records with top-level question and chosen."""
    return [json.loads(line) for line in (synthetic_dir / "test.jsonl").read_text().splitlines()[:5]]


def flat_preference(test_records: list[dict]) -> list[dict]:
    """Preference records with question, chosen and rejected at the top level."""
    return [{**record, "rejected": "A wrong description."} for record in test_records]


def write_bytes(path: Path, text: str, prefix: bytes = b"", marker: str | None = None, byte: bytes = b"\xe9") -> Path:
    """Write ``text`` as UTF-8 after ``prefix``, with each ``marker`` replaced by ``byte``
    (by default Latin-1 'é', which is not UTF-8 on its own)."""
    data = text.encode("utf-8")
    if marker is not None:
        data = data.replace(marker.encode(), byte)
    path.write_bytes(prefix + data)
    return path


def messages(path: Path, kind: str, image_folder: Path | None) -> list[str]:
    _, problems = find_problems(path, kind, image_folder, show_progress=False)
    return [str(p) for p in problems]


# A UTF-8 byte-order mark (Windows editors, PowerShell's Out-File, Excel's "CSV UTF-8" habits).


def test_json_array_with_bom(tmp_path, pref_records, image_folder):
    path = write_bytes(tmp_path / "pref.json", json.dumps(pref_records, indent=1), BOM)
    loaded = load_examples(path, "preference", image_folder, show_progress=False)
    assert [e.idx for e in loaded.examples] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("name", ["test.jsonl", "test.ndjson", "test.json"])
def test_json_lines_with_bom(tmp_path, test_records, image_folder, name):
    """The first line is read too, and a ``.json`` file of JSON Lines is still seen as one."""
    path = write_bytes(tmp_path / name, "".join(json.dumps(r) + "\n" for r in test_records), BOM)
    raw, problems, file_format = read_raw_records(path)
    assert problems == [] and file_format == "jsonl"
    assert [location.number for location, _ in raw] == [1, 2, 3, 4, 5]
    loaded = load_examples(path, "test", image_folder, show_progress=False)
    assert loaded.examples[0].record == test_records[0]


def test_one_record_json_with_bom(tmp_path, test_records, image_folder):
    path = write_bytes(tmp_path / "one.json", json.dumps(test_records[0]), BOM)
    raw, problems, file_format = read_raw_records(path)
    assert problems == [] and file_format == "jsonl" and raw[0][1] == test_records[0]


def test_bom_does_not_hide_bad_json(tmp_path):
    path = write_bytes(tmp_path / "bad.json", '[{"idx": 1,\n "text": }]', BOM)
    [message] = messages(path, "preference", None)
    assert "invalid JSON at line 2" in message


def test_utf16_file_is_named_as_such(tmp_path, test_records):
    path = tmp_path / "test.jsonl"
    path.write_bytes(json.dumps(test_records[0]).encode("utf-16"))  # with its byte-order mark
    [message] = messages(path, "test", None)
    assert message == f"{path}: UTF-16 text (it starts with a UTF-16 byte-order mark); save the file as UTF-8"


# A byte that is not UTF-8: the record and field it is in, the other records still read.


def test_latin1_byte_in_a_json_array_names_record_and_field(tmp_path, test_records, image_folder):
    records = flat_preference(test_records)
    records[3]["question"] = "Un caf@@ au lait, please."
    path = write_bytes(tmp_path / "pref.json", json.dumps(records, indent=1, ensure_ascii=False), marker="@@")
    loaded, problems = find_problems(path, "preference", image_folder, show_progress=False)
    [message] = [str(p) for p in problems]
    assert message.startswith(f"{path}, record 3 (idx=3), field 'question': not UTF-8 text: byte 0xe9 after 'Un caf'")
    assert "save the file as UTF-8" in message
    assert [e.idx for e in loaded.examples] == [0, 1, 2, 4]


def test_latin1_bytes_in_several_records_and_fields(tmp_path, test_records, image_folder):
    records = flat_preference(test_records)
    records[0]["chosen"] = "@@t@@"
    records[0]["rejected"] = "na@@ve"
    records[4]["question"] = "@@"
    path = write_bytes(tmp_path / "pref.json", json.dumps(records, ensure_ascii=False), marker="@@")
    found = messages(path, "preference", image_folder)
    assert [m.split(": not UTF-8")[0] for m in found] == [
        f"{path}, record 0 (idx=0), field 'chosen'",
        f"{path}, record 0 (idx=0), field 'rejected'",
        f"{path}, record 4 (idx=4), field 'question'",
    ]
    assert "byte 0xe9 at its start" in found[0] and "after 'na'" in found[1]


def test_latin1_byte_inside_the_json_encoded_text_field(tmp_path, pref_records, image_folder):
    text = json.loads(pref_records[2]["text"])
    text["rejected"] = "A knitted @@ square."
    pref_records[2]["text"] = json.dumps(text, ensure_ascii=False)
    path = write_bytes(tmp_path / "pref.json", json.dumps(pref_records, ensure_ascii=False), marker="@@", byte=b"\xfc")
    [message] = messages(path, "preference", image_folder)
    assert message.startswith(f"{path}, record 2 (idx=2), field 'text.rejected': not UTF-8 text: byte 0xfc after 'A knitted '")


def test_latin1_byte_in_a_nested_sft_turn(tmp_path, synthetic_dir, image_folder):
    records = json.loads((synthetic_dir / "sft_train.json").read_text())[:3]
    records[1]["conversations"][1]["value"] = "A caf@@."
    path = write_bytes(tmp_path / "sft.json", json.dumps(records, ensure_ascii=False), marker="@@")
    [message] = messages(path, "sft", image_folder)
    assert message.startswith(f"{path}, record 1 (idx='sft_1'), field 'conversations[1].value': not UTF-8 text: byte 0xe9")


@pytest.mark.parametrize("name", ["test.jsonl", "test.json"])
def test_latin1_byte_in_a_json_lines_line(tmp_path, test_records, image_folder, name):
    test_records[1]["question"] = "Gr@@n square?"
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in test_records)
    path = write_bytes(tmp_path / name, lines, marker="@@", byte=b"\xfc")
    loaded, problems = find_problems(path, "test", image_folder, show_progress=False)
    [message] = [str(p) for p in problems]
    assert message.startswith(f"{path}, line 2 (idx=1), field 'question': not UTF-8 text: byte 0xfc after 'Gr'")
    assert [e.location.number for e in loaded.examples] == [1, 3, 4, 5]


def test_latin1_byte_outside_any_string(tmp_path):
    """Where the JSON itself breaks, the byte is placed by line and column."""
    path = write_bytes(tmp_path / "pref.json", '[\n  {"idx": 0}, @@\n]', marker="@@")
    [message] = messages(path, "preference", None)
    expected = "not UTF-8 text: byte 0xe9 at line 2, column 15 (invalid JSON at line 2, column 15: Expecting value)"
    assert message.startswith(f"{path}: {expected}")


def test_not_utf8_in_the_validator_has_no_traceback(tmp_path, test_records, image_folder):
    records = flat_preference(test_records)
    records[3]["question"] = "caf@@"
    path = write_bytes(tmp_path / "pref.json", json.dumps(records, ensure_ascii=False), BOM, marker="@@")
    result = subprocess.run(
        [sys.executable, "-m", "mcmdpo.data.validate", str(path), "--image_folder", str(image_folder), "--quiet"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{path}, record 3 (idx=3), field 'question': not UTF-8 text" in result.stdout
    assert "4 valid preference record(s), 1 problem(s)" in result.stdout
