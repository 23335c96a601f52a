"""get_score.py: COCO scores equal pycocoevalcap called directly, the paper protocol matches a
hand-checked example, and files, folders, summaries, plots and odd records behave."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from mcmdpo.eval.alt_text_scores import score_file

RECORDS = [
    ("A wooden red circle on the left, beside a blue square.", "A wooden red circle on the left, beside a blue square."),
    ("A knitted green square on the right, beside a red triangle.", "A knitted green square on the right."),
    ("A paper blue triangle on the left, beside a yellow circle.", "A blue triangle, beside a yellow circle on the left."),
    ("A clay purple circle on the right, beside an orange square.", ""),  # empty response
    (["Two dogs playing in the snow.", "Dogs play in snow."], "Two dogs play in the snow."),  # several references
    ("A glass orange square on the left, beside a green circle.", "An image with some colourful shapes on a plain background."),
    ("A felt yellow triangle on the right, beside a purple square.", "A felt yellow triangle on the right, beside a purple square!"),
]


@pytest.fixture
def predictions(tmp_path):
    path = tmp_path / "predictions.jsonl"
    rows = [{"idx": i, "image_path": f"{i}.png", "question": "q", "chosen": ref, "response": hyp} for i, (ref, hyp) in enumerate(RECORDS)]
    rows.append({"idx": 99, "image_path": "x.png", "question": "q", "response": "no reference here"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_coco_scores_equal_pycocoevalcap_called_directly(predictions):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    digest = hashlib.sha256(predictions.read_bytes()).hexdigest()
    summary = score_file(predictions, "coco")
    gts = {i: [{"caption": r} for r in ([ref] if isinstance(ref, str) else ref)] for i, (ref, _) in enumerate(RECORDS)}
    res = {i: [{"caption": hyp}] for i, (_, hyp) in enumerate(RECORDS)}
    tokenizer = PTBTokenizer()
    gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    bleu, _ = Bleu(4).compute_score(gts, res)
    direct = {f"bleu{n + 1}": bleu[n] for n in range(4)}
    direct["meteor"], _ = Meteor().compute_score(gts, res)
    direct["rougel"], _ = Rouge().compute_score(gts, res)
    direct["cider"], _ = Cider().compute_score(gts, res)
    assert set(summary["scores"]) == set(direct)
    for name, value in direct.items():
        assert summary["scores"][name] == pytest.approx(100 * value, abs=1e-9), name
    assert summary["num_scored"] == 7 and summary["num_without_reference"] == 1
    # Per-record scores go beside the input; the input is untouched.
    assert hashlib.sha256(predictions.read_bytes()).hexdigest() == digest
    rows = [json.loads(line) for line in (predictions.parent / "predictions.coco.scores.jsonl").read_text().splitlines()]
    assert [row["idx"] for row in rows] == list(range(7))
    empty = rows[3]
    assert empty["response"] == ""
    assert all(empty[name] == pytest.approx(0, abs=1e-9) for name in ("bleu1", "bleu4", "meteor", "rougel", "cider"))
    assert rows[0]["rougel"] == pytest.approx(100)


def test_paper_protocol_matches_a_hand_checked_example(tmp_path):
    """The original get_score.py's arithmetic, record by record and averaged, by hand."""
    path = tmp_path / "one.jsonl"
    records = [
        {"idx": 0, "chosen": "A red circle on the left.", "response": "Assistant: A red circle."},
        {"idx": 1, "chosen": "A blue square.", "response": "A blue square."},
        {"idx": 2, "chosen": "A green dot.", "response": "."},
        {"idx": 3, "chosen": "A cat.", "response": "assistant: A cat."},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = score_file(path, "paper")
    first, second, dot, lower = [json.loads(line) for line in (tmp_path / "one.paper.scores.jsonl").read_text().splitlines()]
    # "Assistant:" is stripped. Tokens: hyp [A, red, circle, .] (4), ref [A, red, circle, on, the, left, .] (7).
    assert first["response"] == "Assistant: A red circle."
    # BLEU-1: all 4 hypothesis unigrams are in the reference; brevity penalty exp(1 - 7/4).
    assert first["bleu_1"] == pytest.approx(100 * math.exp(1 - 7 / 4), abs=1e-6)
    # The only hypothesis 4-gram (A red circle .) is not in the reference: unsmoothed, 0 (nltk
    # returns the smallest float rather than an exact 0).
    assert first["bleu_4"] == pytest.approx(0, abs=1e-9) and first["cumulative_bleu_4"] == pytest.approx(0, abs=1e-9)
    # The rouge package: tokens "A red circle" vs "A red circle on the left" (split on '.'),
    # LCS 3: precision 1, recall 1/2, F 2/3.
    assert first["rouge_l"] == pytest.approx(100 * 2 / 3, abs=1e-4)
    # Three insertions (on, the, left): the edit distance is a raw token count, not x 100.
    assert first["edit_distance"] == 3
    # An exact match scores 100 on the n-gram metrics and 0 edits.
    assert second["bleu_1"] == pytest.approx(100) and second["bleu_4"] == pytest.approx(100) and second["rouge_l"] == pytest.approx(100, abs=1e-4)
    assert second["edit_distance"] == 0
    # A response that is only "." has no sentence for the rouge package, which raises: the
    # original counts the record with ROUGE 0. BLEU-1: "." is in the reference, brevity exp(1 - 4).
    assert dot["rouge_l"] == 0 and dot["edit_distance"] == 3
    assert dot["bleu_1"] == pytest.approx(100 * math.exp(1 - 4), abs=1e-6)
    # The original strips "Assistant:" only, case-sensitively: "assistant:" stays, 2 more tokens.
    assert lower["edit_distance"] == 2
    # ROUGE-L of "assistant: A cat" vs "A cat": LCS 2 of 3 and 2 unique tokens, F = 0.8.
    assert lower["rouge_l"] == pytest.approx(80, abs=1e-4)
    # Averages as the original reports them: round(mean, 5) * 100; edit distance round(mean, 3).
    scores = summary["scores"]
    assert scores["edit_distance"] == round((3 + 0 + 3 + 2) / 4, 3) == 2.0
    assert scores["rouge_l"] == round((2 / 3 + 1 + 0 + 0.8) / 4, 5) * 100
    mean_bleu_1 = sum(r["bleu_1"] / 100 for r in (first, second, dot, lower)) / 4
    assert scores["bleu_1"] == pytest.approx(round(mean_bleu_1, 5) * 100, abs=1e-9)
    assert summary["protocol"] == "paper"
    # The edit distance is a token count, and the summary says so.
    assert summary["units"] == {"edit_distance": "tokens"}
    if "meteor" in scores:  # WordNet present (Debian's wordnet-base in CI)
        assert 0 < first["meteor"] < second["meteor"] <= 100


@pytest.mark.slow
def test_cli_files_and_folders_table_summary_and_plot(predictions, tmp_path):
    other = tmp_path / "runs"
    other.mkdir()
    (other / "model_b.jsonl").write_text(
        "".join(json.dumps({"idx": i, "chosen": ref, "response": ref if isinstance(ref, str) else ref[0]}) + "\n" for i, (ref, _) in enumerate(RECORDS))
    )
    summary, plot = tmp_path / "summary.json", tmp_path / "scores.png"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "get_score.py"), "--file", str(predictions), str(other),
         "--summary_json", str(summary), "--plot", str(plot)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "coco protocol" in result.stdout and "predictions.jsonl" in result.stdout and "model_b.jsonl" in result.stdout
    assert "1 record(s) without a reference were not scored" in result.stdout
    data = json.loads(summary.read_text())
    assert [Path(d["file"]).name for d in data] == ["predictions.jsonl", "model_b.jsonl"]
    assert data[1]["scores"]["cider"] > data[0]["scores"]["cider"]
    assert plot.stat().st_size > 5000
    # A folder never re-reads our own score files.
    again = subprocess.run([sys.executable, str(REPO_ROOT / "get_score.py"), "--file", str(other)], capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.count("model_b") == 1


@pytest.mark.slow
def test_each_protocol_keeps_its_own_record_scores_and_labels_its_units(tmp_path):
    """--protocol paper and coco on the same output write two per-record files, never one over
    the other; the paper protocol's edit distance is labelled as tokens in the table and summary."""
    path = tmp_path / "one.jsonl"
    records = [{"idx": 0, "chosen": "A red circle on the left.", "response": "A red circle."},
               {"idx": 1, "chosen": "A blue square.", "response": "A blue square."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    summary_file = tmp_path / "paper.json"
    paper = subprocess.run([sys.executable, str(REPO_ROOT / "get_score.py"), "--file", str(path), "--protocol", "paper",
                            "--summary_json", str(summary_file)], capture_output=True, text=True)
    assert paper.returncode == 0, paper.stderr
    assert score_file(path, "coco")["units"] == {}
    paper_rows = [json.loads(line) for line in (tmp_path / "one.paper.scores.jsonl").read_text().splitlines()]
    coco_rows = [json.loads(line) for line in (tmp_path / "one.coco.scores.jsonl").read_text().splitlines()]
    assert "edit_distance" in paper_rows[0] and "bleu_1" in paper_rows[0] and "bleu1" not in paper_rows[0]
    assert "bleu1" in coco_rows[0] and "edit_distance" not in coco_rows[0]
    assert not (tmp_path / "one.scores.jsonl").exists()
    # The summary and the printed table name the unit.
    [summary] = json.loads(summary_file.read_text())
    assert summary["units"] == {"edit_distance": "tokens"} and summary["scores"]["edit_distance"] == 1.5
    assert "edit_distance in tokens (not x 100)" in paper.stdout
    header, units = paper.stdout.splitlines()[1:3]
    assert header.split()[-2:] == ["edit_distance", "records"]
    assert units.split()[-1] == "tokens" and units.split().count("x") == len(header.split()) - 3  # "file", edit, "records"
    # A folder holding both score files still stands for the output alone.
    again = subprocess.run([sys.executable, str(REPO_ROOT / "get_score.py"), "--file", str(tmp_path), "--protocol", "paper"],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("one.jsonl") == 1 and "scores.jsonl" not in again.stdout


def test_a_file_without_responses_is_a_clear_error(tmp_path, synthetic_dir):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "get_score.py"), "--file", str(synthetic_dir / "test.jsonl")], capture_output=True, text=True
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "line 1 (idx=0), field 'response': missing" in result.stderr
