"""mcmdpo_inference.py as users run it: one line per record, fields kept, batched = one at a
time, resumable after a cut anywhere, bad records reported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from mcmdpo.eval.inference import main


@pytest.fixture
def test_file(synthetic_dir, tmp_path):
    """The synthetic test split with extra fields of several types, which must come back untouched."""
    lines = (synthetic_dir / "test.jsonl").read_text().splitlines()
    records = [json.loads(line) | {"extra": {"nested": [i, None, "x"]}, "ds_name": "synthetic"} for i, line in enumerate(lines)]
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def infer(checkpoint, test_file, output, image_folder, *extra) -> int:
    return main([
        "--model_name", str(checkpoint), "--test_datasets", str(test_file), "--eval_output", str(output),
        "--image_folder", str(image_folder), "--max_new_tokens", "12", "--quiet", *extra,
    ])


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_cli_writes_every_record_with_its_fields_and_a_response(tiny_checkpoint, synthetic_dir, test_file, tmp_path):
    output = tmp_path / "out" / "predictions.jsonl"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "mcmdpo_inference.py"), "--model_name", str(tiny_checkpoint),
         "--test_datasets", str(test_file), "--eval_output", str(output), "--image_folder", str(synthetic_dir / "image"),
         "--batch_size", "4", "--max_new_tokens", "8"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "16 records written" in result.stdout
    assert "generating alt-text" in result.stderr  # the progress bar
    inputs, outputs = read_lines(test_file), read_lines(output)
    assert len(outputs) == len(inputs) == 16
    for record, written in zip(inputs, outputs):
        assert {k: v for k, v in written.items() if k != "response"} == record
        assert isinstance(written["response"], str)


@pytest.mark.parametrize("num_beams", ["1", "3"])
def test_batched_and_one_at_a_time_generation_agree(tiny_checkpoint, synthetic_dir, test_file, tmp_path, num_beams):
    """Left padding must not change what a row generates, greedy or with beams (the original
    decodes one record at a time; fp32, random weights: any leak of padding into attention or
    positions would show)."""
    one, eight = tmp_path / "one.jsonl", tmp_path / "eight.jsonl"
    settings = ("--num_beams", num_beams, "--dtype", "fp32")
    assert infer(tiny_checkpoint, test_file, one, synthetic_dir / "image", "--batch_size", "1", *settings) == 0
    assert infer(tiny_checkpoint, test_file, eight, synthetic_dir / "image", "--batch_size", "8", *settings) == 0
    responses = [r["response"] for r in read_lines(one)]
    assert responses == [r["response"] for r in read_lines(eight)]
    assert len(set(responses)) > 1


@pytest.mark.parametrize("cut", ["mid_line", "line_end"])
def test_resume_after_an_interruption(tiny_checkpoint, synthetic_dir, test_file, tmp_path, cut):
    full = tmp_path / "full.jsonl"
    assert infer(tiny_checkpoint, test_file, full, synthetic_dir / "image", "--batch_size", "4") == 0
    data = full.read_bytes()
    line_ends = [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    keep = line_ends[6] + (25 if cut == "mid_line" else 0)  # 7 whole lines, then maybe part of the 8th
    partial = tmp_path / "partial.jsonl"
    partial.write_bytes(data[:keep])
    assert infer(tiny_checkpoint, test_file, partial, synthetic_dir / "image", "--batch_size", "4") == 2  # no silent overwrite
    assert infer(tiny_checkpoint, test_file, partial, synthetic_dir / "image", "--batch_size", "4", "--resume") == 0
    resumed = partial.read_bytes()
    assert resumed[: line_ends[6]] == data[: line_ends[6]]  # finished lines are never rewritten
    assert resumed == data  # every record exactly once, in order, as an uninterrupted run writes it
    # Resuming a finished file does nothing.
    assert infer(tiny_checkpoint, test_file, partial, synthetic_dir / "image", "--resume") == 0
    assert partial.read_bytes() == data


def test_bad_records_stop_the_run_or_are_skipped(tiny_checkpoint, synthetic_dir, test_file, tmp_path, capsys):
    records = read_lines(test_file)
    records[2]["image_path"] = "missing.png"
    del records[5]["question"]
    test_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    output = tmp_path / "out.jsonl"
    assert infer(tiny_checkpoint, test_file, output, synthetic_dir / "image") == 2
    err = capsys.readouterr().err
    assert f"{test_file}, line 3 (idx=2), field 'image_path': image file not found" in err
    assert f"{test_file}, line 6 (idx=5), field 'question': missing" in err
    assert not output.exists()
    assert infer(tiny_checkpoint, test_file, output, synthetic_dir / "image", "--skip_bad_records") == 0
    assert "14 records written, 2 bad records skipped" in capsys.readouterr().out
    assert [r["idx"] for r in read_lines(output)] == [r["idx"] for i, r in enumerate(records) if i not in (2, 5)]


def test_output_must_not_be_the_input(tiny_checkpoint, synthetic_dir, test_file, capsys):
    before = test_file.read_bytes()
    assert infer(tiny_checkpoint, test_file, test_file, synthetic_dir / "image", "--overwrite") == 2
    assert "must not be the input file" in capsys.readouterr().err and test_file.read_bytes() == before
