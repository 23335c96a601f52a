"""Every input format (JSON arrays, JSON Lines, parquet; SFT, preference and test records) parses into the same typed examples."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import UPSTREAM_SAMPLES
from mcmdpo.data import PreferenceExample, SFTExample, TestExample, load_examples

UPSTREAM_FILES = [
    ("twitter/twitter_train.json", "twitter/image/twitter_train", "preference", 10),
    ("pinterest/pinterest_train.json", "pinterest/image/pinterest_train", "preference", 10),
    ("twitter/twitter_test.json", "twitter/image/twitter_test", "test", 10),
]


@pytest.mark.skipif(not UPSTREAM_SAMPLES.is_dir(), reason="../shared/upstream-samples is absent")
@pytest.mark.parametrize("relative, images, kind, count", UPSTREAM_FILES)
def test_upstream_samples_validate_and_load(relative, images, kind, count):
    path, folder = UPSTREAM_SAMPLES / relative, UPSTREAM_SAMPLES / images
    result = subprocess.run(
        [sys.executable, "-m", "mcmdpo.data.validate", str(path), "--image_folder", str(folder), "--quiet"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{count} valid {kind} record(s), OK" in result.stdout

    loaded = load_examples(path, kind, folder, show_progress=False)
    assert len(loaded.examples) == count
    assert all(size is not None and min(size) > 0 for size in loaded.image_sizes)
    first = loaded.examples[0]
    raw = json.loads(path.read_text().splitlines()[0]) if kind == "test" else json.loads(path.read_text())[0]
    if kind == "preference":
        text = json.loads(raw["text"])
        assert (first.question, first.chosen, first.rejected) == (text["question"], text["chosen"], text["rejected"])
        assert first.question.lower().startswith("given an image and context")
    else:
        assert first.references == (raw["chosen"],) and first.record == raw
    assert first.image.path == raw["image_path"] and first.idx == raw["idx"]


@pytest.mark.skipif(not UPSTREAM_SAMPLES.is_dir(), reason="../shared/upstream-samples is absent")
def test_upstream_preference_records_are_valid_sft_examples():
    path = UPSTREAM_SAMPLES / "pinterest/pinterest_train.json"
    loaded = load_examples(path, "sft", check_images=False)
    raw = json.loads(path.read_text())
    assert all(isinstance(e, SFTExample) for e in loaded.examples)
    assert [e.turns for e in loaded.examples] == [((r["question"], r["chosen"]),) for r in raw]


def test_synthetic_files_load_as_their_kinds(synthetic_dir):
    folder = synthetic_dir / "image"
    sft = load_examples(synthetic_dir / "sft_train.json", "sft", folder, show_progress=False)
    pref = load_examples(synthetic_dir / "pref_train.json", "preference", folder, show_progress=False)
    test = load_examples(synthetic_dir / "test.jsonl", "test", folder, show_progress=False)
    assert len(sft.examples) == 256 and isinstance(sft.examples[0], SFTExample)
    # LLaVA conversations: the "<image>" placeholder is removed, the template places the image.
    assert "<image>" not in sft.examples[0].turns[0][0]
    assert len(pref.examples) == 200 and isinstance(pref.examples[0], PreferenceExample)
    assert len(test.examples) == 16 and isinstance(test.examples[0], TestExample)
    assert set(test.examples[0].record) == {"image_path", "question", "chosen", "idx"}


def test_parquet_with_embedded_image_bytes_matches_json(synthetic_dir, tmp_path):
    records = json.loads((synthetic_dir / "pref_train.json").read_text())
    rows = []
    for record in records:
        data = (synthetic_dir / "image" / record["image_path"]).read_bytes()
        rows.append({**record, "image": {"bytes": data, "path": record["image_path"]}})
    parquet = tmp_path / "pref.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    from_parquet = load_examples(parquet, "preference", image_folder=None, show_progress=False)
    from_json = load_examples(synthetic_dir / "pref_train.json", "preference", synthetic_dir / "image", show_progress=False)
    assert [(e.question, e.chosen, e.rejected, e.idx) for e in from_parquet.examples] == [
        (e.question, e.chosen, e.rejected, e.idx) for e in from_json.examples
    ]
    assert from_parquet.examples[0].image.data is not None
    assert from_parquet.image_sizes == from_json.image_sizes
    assert from_parquet.examples[0].location.unit == "row"


def test_json_image_bytes_as_base64(synthetic_dir, tmp_path):
    record = json.loads((synthetic_dir / "pref_train.json").read_text())[0]
    encoded = base64.b64encode((synthetic_dir / "image" / record["image_path"]).read_bytes()).decode()
    record = {key: value for key, value in record.items() if key != "image_path"} | {"image": {"bytes": encoded}}
    path = tmp_path / "pref.json"
    path.write_text(json.dumps([record]))
    loaded = load_examples(path, "preference", image_folder=tmp_path / "nowhere", show_progress=False)
    assert loaded.image_sizes == [(64, 64)]


def test_top_level_fields_without_text(tmp_path, synthetic_dir):
    record = json.loads((synthetic_dir / "pref_train.json").read_text())[0]
    record |= json.loads(record.pop("text"))
    path = tmp_path / "pref.json"
    path.write_text(json.dumps([record]))
    example = load_examples(path, "preference", synthetic_dir / "image", show_progress=False).examples[0]
    assert (example.question, example.chosen, example.rejected) == (record["question"], record["chosen"], record["rejected"])


def test_multi_turn_conversation(tmp_path, synthetic_dir):
    record = {
        "id": "x",
        "image": "sft_000000.png",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is on the left?"},
            {"from": "gpt", "value": "A shape."},
            {"from": "human", "value": "And its colour?"},
            {"from": "gpt", "value": "Red."},
        ],
    }
    path = tmp_path / "sft.json"
    path.write_text(json.dumps([record]))
    example = load_examples(path, "sft", synthetic_dir / "image", show_progress=False).examples[0]
    assert example.turns == (("What is on the left?", "A shape."), ("And its colour?", "Red."))
    assert example.idx == "x" and example.image.path == "sft_000000.png"
