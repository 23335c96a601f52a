"""Each class of bad input is rejected, naming the file, the record position and the field, and
every problem of a file is listed, not only the first."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mcmdpo.data import DataValidationError, load_examples
from mcmdpo.data.loading import find_problems


@pytest.fixture
def pref_records(synthetic_dir) -> list[dict]:
    return json.loads((synthetic_dir / "pref_train.json").read_text())[:4]


@pytest.fixture
def image_folder(synthetic_dir, tmp_path) -> Path:
    folder = tmp_path / "image"
    shutil.copytree(synthetic_dir / "image", folder)
    return folder


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def problems_of(path: Path, kind: str, image_folder: Path | None = None) -> list[str]:
    _, problems = find_problems(path, kind, image_folder, show_progress=False)
    return [str(p) for p in problems]


def test_bad_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"idx": 1,\n "text": }]')
    [message] = problems_of(path, "preference")
    assert str(path) in message and "invalid JSON at line 2" in message


def test_top_level_not_a_list(tmp_path):
    path = tmp_path / "dict.json"
    path.write_text(json.dumps({"records": []}, indent=1))
    [message] = problems_of(path, "preference")
    assert "top level must be a JSON array" in message and "dict" in message


def test_missing_field(tmp_path, pref_records, image_folder):
    text = json.loads(pref_records[2]["text"])
    del text["rejected"]
    pref_records[2]["text"] = json.dumps(text)
    path = write_json(tmp_path / "pref.json", pref_records)
    [message] = problems_of(path, "preference", image_folder)
    assert message == f"{path}, record 2 (idx=2), field 'text.rejected': missing"


def test_text_not_json(tmp_path, pref_records, image_folder):
    pref_records[1]["text"] = "{question: oops"
    path = write_json(tmp_path / "pref.json", pref_records)
    [message] = problems_of(path, "preference", image_folder)
    assert message.startswith(f"{path}, record 1 (idx=1), field 'text': is not valid JSON")


@pytest.mark.parametrize(
    "text, field, expected",
    [
        ("", "text", "is not valid JSON"),
        (17, "text", "must be a JSON-encoded string, found int"),
        (json.dumps(["a", "b"]), "text", "must encode a JSON object, found list"),
        (json.dumps({"question": "q", "chosen": "   ", "rejected": "r"}), "text.chosen", "is empty"),
        (json.dumps({"question": "q", "chosen": ["a"], "rejected": "r"}), "text.chosen", "must be a string, found list"),
    ],
)
def test_empty_or_wrong_typed_text(tmp_path, pref_records, image_folder, text, field, expected):
    pref_records[0]["text"] = text
    path = write_json(tmp_path / "pref.json", pref_records)
    messages = problems_of(path, "preference", image_folder)
    assert any(m.startswith(f"{path}, record 0 (idx=0), field '{field}': {expected}") for m in messages), messages


def test_missing_image(tmp_path, pref_records, image_folder):
    (image_folder / pref_records[3]["image_path"]).unlink()
    path = write_json(tmp_path / "pref.json", pref_records)
    [message] = problems_of(path, "preference", image_folder)
    assert message.startswith(f"{path}, record 3 (idx=3), field 'image_path': image file not found")
    assert pref_records[3]["image_path"] in message


def test_corrupt_image(tmp_path, pref_records, image_folder):
    (image_folder / pref_records[0]["image_path"]).write_bytes(b"definitely not a png" * 10)
    path = write_json(tmp_path / "pref.json", pref_records)
    [message] = problems_of(path, "preference", image_folder)
    assert "record 0 (idx=0), field 'image_path': not a readable image" in message


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_image(tmp_path, pref_records, image_folder, keep):
    image = image_folder / pref_records[1]["image_path"]
    data = image.read_bytes()
    image.write_bytes(data[: int(len(data) * keep)])
    path = write_json(tmp_path / "pref.json", pref_records)
    [message] = problems_of(path, "preference", image_folder)
    assert "record 1 (idx=1), field 'image_path': image cannot be fully decoded (truncated or damaged" in message


def test_broken_json_lines_line(tmp_path, synthetic_dir):
    lines = (synthetic_dir / "test.jsonl").read_text().splitlines()[:5]
    lines[3] = lines[3][:40]  # a line cut mid-record
    path = tmp_path / "test.jsonl"
    path.write_text("\n".join(lines) + "\n")
    loaded, problems = find_problems(path, "test", synthetic_dir / "image", show_progress=False)
    [message] = [str(p) for p in problems]
    assert message.startswith(f"{path}, line 4: invalid JSON at column")
    assert [e.location.number for e in loaded.examples] == [1, 2, 3, 5]


def test_every_problem_is_listed(tmp_path, pref_records, image_folder):
    pref_records[0]["text"] = 5
    del pref_records[1]["image_path"], pref_records[1]["image"]
    pref_records[2] = "not an object"
    (image_folder / pref_records[3]["image_path"]).unlink()
    path = write_json(tmp_path / "pref.json", pref_records)
    with pytest.raises(DataValidationError) as raised:
        load_examples(path, "preference", image_folder, show_progress=False)
    fields = [(p.location.number, p.field) for p in raised.value.problems]
    assert fields == [(0, "text"), (1, "image_path"), (2, None), (3, "image_path")]
    assert str(raised.value).startswith("4 problem(s) in the input data:")


def test_top_level_and_text_disagree(tmp_path, pref_records, image_folder):
    pref_records[0]["chosen"] = "something else"
    path = write_json(tmp_path / "pref.json", pref_records)
    [message] = problems_of(path, "preference", image_folder)
    assert "record 0 (idx=0), field 'chosen': differs between the top level and the 'text' field" in message


def test_validate_cli_exit_codes(tmp_path, pref_records, image_folder):
    good = write_json(tmp_path / "good.json", pref_records)
    pref_records[0]["text"] = "{"
    pref_records[2]["text"] = json.dumps({"question": "q", "chosen": "c"})
    bad = write_json(tmp_path / "bad.json", pref_records)
    run = lambda path: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "mcmdpo.data.validate", str(path), "--image_folder", str(image_folder), "--quiet"],
        capture_output=True, text=True,
    )
    ok = run(good)
    assert ok.returncode == 0 and "4 valid preference record(s), OK" in ok.stdout
    failed = run(bad)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert f"{bad}, record 0 (idx=0), field 'text'" in failed.stdout
    assert f"{bad}, record 2 (idx=2), field 'text.rejected': missing" in failed.stdout
    assert "2 valid preference record(s), 2 problem(s)" in failed.stdout


@pytest.mark.slow
def test_training_validates_before_loading_the_model(tmp_path, pref_records, image_folder):
    """A bad file stops training with the problem list, before any model is touched (the model
    path here does not even exist), and without a traceback."""
    pref_records[1]["text"] = json.dumps({"question": "", "chosen": "c"})
    bad = write_json(tmp_path / "bad.json", pref_records)
    result = subprocess.run(
        [sys.executable, "-m", "mcmdpo.train", "--model_name_or_path", str(tmp_path / "no-such-model"),
         "--data_path", str(bad), "--image_folder", str(image_folder), "--output_dir", str(tmp_path / "out"),
         "--report_to", "none", "--use_cpu", "true"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}, record 1 (idx=1), field 'text.question': is empty" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_training_with_a_missing_checkpoint_is_a_clear_error(tmp_path, synthetic_dir):
    result = subprocess.run(
        [sys.executable, "-m", "mcmdpo.train", "--model_name_or_path", str(tmp_path / "no-such-model"),
         "--data_path", str(synthetic_dir / "sft_train.json"), "--image_folder", str(synthetic_dir / "image"),
         "--output_dir", str(tmp_path / "out"), "--report_to", "none", "--use_cpu", "true"],
        capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot read the checkpoint" in result.stderr and "no-such-model" in result.stderr
