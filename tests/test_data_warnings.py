"""What is allowed in input data but likely a mistake (the same idx on several records, an image
path that leaves --image_folder): warned about, never an error, by the loader, the validator and
training."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mcmdpo.data import load_examples
from mcmdpo.data.loading import find_warnings


@pytest.fixture
def image_folder(synthetic_dir, tmp_path) -> Path:
    folder = tmp_path / "image"
    shutil.copytree(synthetic_dir / "image", folder)
    return folder


@pytest.fixture
def test_records(synthetic_dir) -> list[dict]:
    """Test records with top-level question and chosen."""
    return [json.loads(line) for line in (synthetic_dir / "test.jsonl").read_text().splitlines()[:5]]


def flat_preference(test_records: list[dict]) -> list[dict]:
    """Preference records with question, chosen and rejected at the top level."""
    return [{**record, "rejected": "A wrong description."} for record in test_records]


def test_duplicate_idx_is_a_warning_listing_the_records(tmp_path, test_records, image_folder):
    records = flat_preference(test_records) * 3  # idx 0..4, three times each
    records.append({**records[0], "idx": "0"})  # a string: another idx
    path = tmp_path / "pref.json"
    path.write_text(json.dumps(records))
    loaded = load_examples(path, "preference", image_folder, show_progress=False)
    assert len(loaded.examples) == 16
    found = [str(w) for w in loaded.warnings]
    assert len(found) == 5
    assert found[0] == f"{path}, record 0 (idx=0): duplicate idx, also used by record 5, record 10"
    assert found[4] == f"{path}, record 4 (idx=4): duplicate idx, also used by record 9, record 14"
    assert find_warnings(loaded, image_folder, max_listed=1)[0].message == "duplicate idx, also used by record 5 and 1 more"


def test_records_without_idx_are_not_duplicates(tmp_path, test_records, image_folder):
    for record in test_records:
        del record["idx"]
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in test_records))
    assert load_examples(path, "test", image_folder, show_progress=False).warnings == []


def test_image_paths_leaving_the_folder_are_warnings(tmp_path, test_records, image_folder):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    records = flat_preference(test_records)
    shutil.copy(image_folder / records[1]["image_path"], outside / "one.png")
    shutil.copy(image_folder / records[2]["image_path"], outside / "two.png")
    (image_folder / "sub").mkdir()
    records[1]["image_path"] = str(outside / "one.png")  # absolute
    records[2]["image_path"] = "../elsewhere/two.png"  # escapes through ..
    records[3]["image_path"] = f"sub/../{records[3]['image_path']}"  # .. that stays inside
    path = tmp_path / "pref.json"
    path.write_text(json.dumps(records))
    loaded = load_examples(path, "preference", image_folder, show_progress=False)
    assert len(loaded.examples) == 5
    assert [str(w) for w in loaded.warnings] == [
        (f"{path}, record 1 (idx=1), field 'image_path': "
         f"absolute image path, read from there and not from --image_folder: {outside / 'one.png'}"),
        f"{path}, record 2 (idx=2), field 'image_path': image path leaves --image_folder through '..': ../elsewhere/two.png",
    ]
    # Without an image folder, paths are relative to the working directory: nothing to leave.
    assert find_warnings(loaded, None) == []


def test_embedded_images_are_not_checked_for_their_path(tmp_path, test_records, image_folder):
    records = flat_preference(test_records)
    data = (image_folder / records[0]["image_path"]).read_bytes()
    records[0] = {**records[0], "image": {"bytes": base64.b64encode(data).decode(), "path": "/abs/ignored.png"}}
    del records[0]["image_path"]
    path = tmp_path / "pref.json"
    path.write_text(json.dumps(records))
    assert load_examples(path, "preference", image_folder, show_progress=False).warnings == []


def test_validator_lists_warnings_and_still_passes(tmp_path, test_records, image_folder):
    records = flat_preference(test_records)
    records[4]["idx"] = 1
    (tmp_path / "image2").mkdir()
    shutil.copy(image_folder / records[2]["image_path"], tmp_path / "image2")
    records[2]["image_path"] = "../image2/" + records[2]["image_path"]  # a sibling folder
    records[3]["image_path"] = "../image/" + records[3]["image_path"]  # out and back in: not warned
    path = tmp_path / "pref.json"
    path.write_text(json.dumps(records))
    result = subprocess.run(
        [sys.executable, "-m", "mcmdpo.data.validate", str(path), "--image_folder", str(image_folder), "--quiet"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert f"warning: {path}, record 1 (idx=1): duplicate idx, also used by record 4" in lines
    assert any(line.startswith(f"warning: {path}, record 2 (idx=2), field 'image_path': image path leaves") for line in lines)
    assert lines[-1] == f"{path}: 5 valid preference record(s), OK, 2 warning(s)"


def test_training_warns_about_duplicate_idx_values_and_images_outside_the_folder(tiny_checkpoint, synthetic_dir, tmp_path, caplog):
    import logging
    import shutil

    from mcmdpo.train.cli import main

    records = json.loads((synthetic_dir / "sft_train.json").read_text())[:8]
    records[3]["id"] = records[1]["id"]
    outside = tmp_path / "outside.png"
    shutil.copy(synthetic_dir / "image" / records[5]["image"], outside)
    records[5]["image"] = str(outside)
    data = tmp_path / "sft.json"
    data.write_text(json.dumps(records))
    with caplog.at_level(logging.WARNING, logger="mcmdpo.train"):
        assert main(["--stage", "sft", "--model_name_or_path", str(tiny_checkpoint), "--data_path", str(data),
                     "--image_folder", str(synthetic_dir / "image"), "--output_dir", str(tmp_path / "run"), "--max_steps", "1",
                     "--per_device_train_batch_size", "2", "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true",
                     "--plot", "false", "--dataloader_num_workers", "0"]) == 0
    warned = [record.getMessage() for record in caplog.records if record.getMessage().startswith("data: ")]
    assert any("duplicate idx" in message and "record 3" in message for message in warned), warned
    assert any("record 5" in message and "absolute image path" in message for message in warned), warned
