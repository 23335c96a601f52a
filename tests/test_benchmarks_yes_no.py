"""POPE and HallusionBench from fixtures in their released layouts: inference end to end (both
POPE layouts, HallusionBench's questions without a figure), metrics against hand computations,
resume, and bad input reported before any model loads."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO_ROOT
from mcmdpo.eval import score_cli
from mcmdpo.eval.benchmarks import BENCHMARKS, find_benchmark, hallusionbench, pope
from mcmdpo.eval.benchmarks.answers import BinaryCounts, pope_yes_no, strict_yes_no
from mcmdpo.eval.benchmarks.base import ScoreOptions
from mcmdpo.eval.inference import main as infer_main
from mcmdpo.data.records import RecordLocation

COLOURS = ((200, 30, 30), (30, 160, 60), (40, 60, 200))


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 32)) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path.read_bytes()


def jpeg_bytes(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (36, 28), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def pope_release(tmp_path):
    """``coco_pope_{split}.json`` (JSON Lines, as released: question_id / image / text / label)
    and a COCO val2014-style image folder."""
    images = tmp_path / "val2014"
    names = [f"COCO_val2014_{n:012d}.jpg" for n in (42, 73, 310196)]
    for name, colour in zip(names, COLOURS):
        images.mkdir(exist_ok=True)
        Image.new("RGB", (48, 40), colour).save(images / name)
    questions = tmp_path / "pope"
    questions.mkdir()
    for split_number, split in enumerate(pope.SPLITS):
        lines = [
            {"question_id": 1, "image": names[split_number], "text": "Is there a dog in the image?", "label": "yes"},
            {"question_id": 2, "image": names[split_number], "text": "Is there a snowboard in the image?", "label": "no"},
        ]
        (questions / f"coco_pope_{split}.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return questions, images


def run_inference(checkpoint, benchmark: str, benchmark_dir: Path, output: Path, *extra: str) -> int:
    return infer_main(["--model_name", str(checkpoint), "--test_datasets", benchmark, "--benchmark_dir", str(benchmark_dir),
                       "--eval_output", str(output), "--max_new_tokens", "6", "--num_beams", "1", "--quiet", *extra])


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_benchmark_is_found_by_its_names():
    assert set(BENCHMARKS) == {"pope", "object_halbench", "mmhal_bench", "amber", "hallusionbench"}
    for name in ("lmms-lab/POPE", "obj_halbench_300", "mmhal_bench", "amber", "HallusionBench", "POPE"):
        assert find_benchmark(name) is not None, name
    assert find_benchmark("test.jsonl") is None


@pytest.mark.slow
def test_pope_question_files_end_to_end_through_both_commands(tiny_checkpoint, pope_release, tmp_path):
    questions, images = pope_release
    output = tmp_path / "out" / "pope.jsonl"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "mcmdpo_inference.py"), "--model_name", str(tiny_checkpoint), "--test_datasets", "pope",
         "--benchmark_dir", str(questions), "--image_folder", str(images), "--eval_output", str(output),
         "--batch_size", "4", "--max_new_tokens", "6", "--num_beams", "1"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "answering pope" in result.stderr  # the progress bar
    written = read_lines(output)
    released = [(split, json.loads(line)) for split in pope.SPLITS
                for line in (questions / f"coco_pope_{split}.json").read_text().splitlines()]
    assert len(written) == 6
    for (split, record), row in zip(released, written):
        assert {k: v for k, v in row.items() if k != "response"} == {**record, "category": split}
        assert isinstance(row["response"], str)

    summary, plot = tmp_path / "pope_summary.json", tmp_path / "pope.png"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "get_score.py"), "--benchmark", "pope", "--file", str(output),
         "--summary_json", str(summary), "--plot", str(plot)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    (scored,) = json.loads(summary.read_text())
    predictions = [pope_yes_no(row["response"]) for row in written]
    expected = BinaryCounts.of(zip(predictions, [row["label"] for row in written])).metrics()
    assert scored["scores"] == pytest.approx(expected)
    assert set(scored["scores"]) == {"accuracy", "precision", "recall", "f1", "yes_ratio"}
    assert set(scored["groups"]) == set(pope.SPLITS)
    assert plot.stat().st_size > 0
    per_record = read_lines(output.with_name("pope.pope.scores.jsonl"))
    assert [row["prediction"] for row in per_record] == predictions
    assert "yes_ratio" in result.stdout and "[random]" in result.stdout


def test_pope_metrics_equal_a_hand_computation():
    """TP 2, FP 2, TN 1, FN 1 over two splits; the official extraction reads only the first
    sentence, drops commas, and takes "No", "no" or "not" as no."""
    answers = [
        ("adversarial", "yes", "Yes, there is a dog."),                 # TP
        ("adversarial", "yes", "No, there is none."),                   # FN
        ("adversarial", "no", "There is not a cat in the image."),      # TN
        ("random", "no", "Yes"),                                        # FP
        ("random", "no", "I think so. No cat is visible."),             # FP: the "No" is in the second sentence
        ("random", "yes", "A snowboard leans on the wall."),            # TP
    ]
    records = [(RecordLocation("out.jsonl", "line", i + 1), {"question_id": i, "category": split, "label": label, "response": text})
               for i, (split, label, text) in enumerate(answers)]
    result = pope.score(records, ScoreOptions())
    assert result.counts == {"questions": 6, "tp": 2, "fp": 2, "tn": 1, "fn": 1}
    precision, recall = 50.0, 200 / 3
    assert result.scores == pytest.approx({"accuracy": 50.0, "precision": precision, "recall": recall,
                                           "f1": 2 * precision * recall / (precision + recall), "yes_ratio": 200 / 3})
    # adversarial: TP 1, FN 1, TN 1; random: TP 1, FP 2
    assert result.groups["adversarial"] == pytest.approx({"accuracy": 200 / 3, "precision": 100.0, "recall": 50.0,
                                                          "f1": 200 / 3, "yes_ratio": 100 / 3})
    assert result.groups["random"] == pytest.approx({"accuracy": 100 / 3, "precision": 100 / 3, "recall": 100.0,
                                                     "f1": 50.0, "yes_ratio": 100.0})


def test_pope_lmms_lab_parquet_export(tiny_checkpoint, tmp_path):
    """The hub export the original script loads: data/test-*.parquet with the image bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"id": str(i), "question_id": str(i + 1), "question": f"Is there a {obj} in the image?", "answer": label,
         "image_source": f"COCO_val2014_{i:012d}", "image": {"bytes": jpeg_bytes(COLOURS[i % 3]), "path": None}, "category": split}
        for i, (obj, label, split) in enumerate([("dog", "yes", "adversarial"), ("cat", "no", "popular"), ("car", "no", "random"),
                                                  ("bus", "yes", "random")])
    ]
    folder = tmp_path / "POPE" / "data"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "test-00000-of-00001.parquet")
    # The hub repository holds the same questions again under Full/: read once, from data/.
    (tmp_path / "POPE" / "Full").mkdir()
    pq.write_table(pa.Table.from_pylist(rows[2:]), tmp_path / "POPE" / "Full" / "random-00000-of-00001.parquet")
    output = tmp_path / "pope.jsonl"
    assert run_inference(tiny_checkpoint, "lmms-lab/POPE", tmp_path / "POPE", output, "--benchmark_parts", "random") == 0
    written = read_lines(output)
    assert [row["question_id"] for row in written] == ["3", "4"]  # only the random split, as asked
    assert all("image" not in row and row["image_source"] and row["answer"] in ("yes", "no") for row in written)
    summary = tmp_path / "summary.json"
    assert score_cli.main(["--benchmark", "pope", "--file", str(output), "--summary_json", str(summary), "--quiet"]) == 0
    assert set(json.loads(summary.read_text())[0]["groups"]) == {"random"}
    # Two copies in one folder: each question would be asked twice, so it is an error.
    pq.write_table(pa.Table.from_pylist(rows[3:]), folder / "test-00001-of-00001.parquet")
    data = pope.read(tmp_path / "POPE", None, ())
    assert [e.idx for e in data.examples] == ["1", "2", "3", "4"]  # the repeat is left out (--skip_bad_records)
    problems = data.problems
    assert [str(p) for p in problems] == [f"{folder / 'test-00001-of-00001.parquet'}, row 0 (idx='4'), field 'question_id': the random "
                                          f"question '4' again (first: {folder / 'test-00000-of-00001.parquet'}, row 3); "
                                          "point --benchmark_dir at one copy"]


def hallusion_records() -> list[dict]:
    """Released fields (all strings, filename null without a figure): a VD set with an original
    and an edited figure, two VS sets asked without and with their figure."""
    def entry(category, subcategory, visual, set_id, figure, question_id, answer, filename):
        return {"category": category, "subcategory": subcategory, "visual_input": visual, "set_id": set_id, "figure_id": figure,
                "sample_note": "note", "question_id": question_id, "question": f"Is statement {set_id}.{question_id} true?",
                "gt_answer_details": "details", "gt_answer": answer, "filename": filename}

    return [
        entry("VD", "illusion", "1", "0", "0", "0", "1", "./VD/illusion/0_0.png"),
        entry("VD", "illusion", "2", "0", "1", "0", "0", "./VD/illusion/0_1.png"),
        entry("VD", "illusion", "1", "0", "0", "1", "0", "./VD/illusion/0_0.png"),
        entry("VD", "illusion", "2", "0", "1", "1", "1", "./VD/illusion/0_1.png"),
        entry("VS", "chart", "0", "0", "0", "0", "0", None),
        entry("VS", "chart", "1", "0", "1", "0", "0", "./VS/chart/0_1.png"),
        entry("VS", "chart", "0", "1", "0", "0", "1", None),
        entry("VS", "chart", "1", "1", "1", "0", "1", "./VS/chart/1_1.png"),
    ]


@pytest.fixture
def hallusion_release(tmp_path):
    folder = tmp_path / "HallusionBench"
    records = hallusion_records()
    for record, colour in zip(records, COLOURS * 3):
        if record["filename"]:
            write_image(folder / "hallusion_bench" / record["filename"][2:], colour)
    folder.mkdir(exist_ok=True)
    (folder / "HallusionBench.json").write_text(json.dumps(records, indent=2))
    return folder


def test_hallusionbench_end_to_end_with_questions_without_a_figure(tiny_checkpoint, hallusion_release, tmp_path):
    output = tmp_path / "hallusion.jsonl"
    # batch 3: batches mix questions with and without a figure
    assert run_inference(tiny_checkpoint, "HallusionBench", hallusion_release, output, "--batch_size", "3") == 0
    written = read_lines(output)
    assert [{k: v for k, v in row.items() if k != "response"} for row in written] == [
        {**record, "idx": i} for i, record in enumerate(hallusion_records())]
    summary = tmp_path / "summary.json"
    assert score_cli.main(["--benchmark", "hallusionbench", "--file", str(output), "--summary_json", str(summary), "--quiet"]) == 0
    (scored,) = json.loads(summary.read_text())
    assert set(scored["scores"]) == {"qAcc", "fAcc", "easy_qAcc", "hard_qAcc", "aAcc", "uncertain", "unparsed"}
    assert scored["counts"]["questions"] == 8 and scored["counts"]["question_groups"] == 4 and scored["counts"]["figures"] == 4


def test_hallusionbench_prompt_is_the_originals_and_a_figureless_question_is_text_only(hallusion_release):
    data = hallusionbench.read(hallusion_release, None, ())
    assert not data.problems
    assert data.examples[0].question == "Is statement 0.0 true?\nAnswer the question using a single word: Yes or No.\n"
    assert data.examples[4].image is None and data.examples[0].image.path == "VD/illusion/0_0.png"
    assert data.image_folder == hallusion_release / "hallusion_bench"


def test_hallusionbench_metrics_equal_a_hand_computation():
    responses = ["Yes", "yes, it is.", "No.", "Yes", "I cannot tell.", "No", "Yes and no.", "Maybe."]
    records = [(RecordLocation("out.jsonl", "line", i + 1), {**record, "idx": i, "response": response})
               for i, (record, response) in enumerate(zip(hallusion_records(), responses))]
    result = hallusionbench.score(records, ScoreOptions())
    # correct: 1 yes, 2 no (answered yes), 3 yes, 4 yes, 5 yes (declined: right for a VS question
    # without its figure), 6 yes, 7 no (both yes and no: unparsed), 8 no (unparsed)
    assert [row["correct"] for row in result.per_record] == [True, False, True, True, True, True, False, False]
    assert result.scores == pytest.approx({
        "aAcc": 62.5,
        "qAcc": 50.0,        # (VD,0,q0) wrong, (VD,0,q1) right, (VS,0,q0) right, (VS,1,q0) wrong
        "fAcc": 50.0,        # (VD,0,f0) right, (VD,0,f1) wrong, (VS,0,f1) right, (VS,1,f1) wrong; VS f0 left out
        "easy_qAcc": 75.0,   # without the edited figures: only (VS,1,q0) wrong
        "hard_qAcc": 50.0,   # edited figures only: (VD,0,q0) wrong, (VD,0,q1) right
        "uncertain": 12.5,
        "unparsed": 25.0,
    })
    assert result.counts["unparsed"] == 2 and result.counts["uncertain"] == 1
    # An empty answer earns nothing, even where declining would be right; metrics without any
    # question of their kind are left out, not reported as 0.
    alone = hallusionbench.score([(RecordLocation("o.jsonl", "line", 1), {**hallusion_records()[4], "idx": 4, "response": ""})],
                                 ScoreOptions())
    assert alone.scores == {"qAcc": 0.0, "easy_qAcc": 0.0, "aAcc": 0.0, "uncertain": 0.0, "unparsed": 100.0}
    assert "fAcc, hard_qAcc left out" in alone.notes[-1]


def test_yes_no_extraction_rules():
    assert [pope_yes_no(t) for t in ("No", "no.", "Not sure", "I do not see one", "NO", "", "Yes, no doubt")] == [
        "no", "no", "yes", "no", "yes", "yes", "no"]
    assert [strict_yes_no(t) for t in ("Yes.", "no", "Yes and no", "The eyes are open", "NO!")] == ["yes", "no", None, None, "no"]
    # a refusal that says "no" declines; it does not answer no
    judged = [hallusionbench._judgement(text, "no") for text in (
        "There is no chart provided, so I cannot tell.", "I can’t determine that.", "Not enough information.", "No.", "")]
    assert judged == [2, 2, 2, 1, hallusionbench.UNPARSED]


def test_resume_after_an_interruption(tiny_checkpoint, pope_release, tmp_path):
    questions, images = pope_release
    complete, resumed = tmp_path / "complete.jsonl", tmp_path / "resumed.jsonl"
    args = ("--image_folder", str(images), "--batch_size", "2")
    assert run_inference(tiny_checkpoint, "pope", questions, complete, *args) == 0
    lines = complete.read_text().splitlines(keepends=True)
    resumed.write_text("".join(lines[:3]) + lines[3][:25])  # three whole lines and a cut one
    assert run_inference(tiny_checkpoint, "pope", questions, resumed, *args) == 2  # exists: needs --resume
    assert run_inference(tiny_checkpoint, "pope", questions, resumed, *args, "--resume") == 0
    assert read_lines(resumed) == read_lines(complete)


def test_bad_input_is_reported_before_any_model_loads(pope_release, hallusion_release, tmp_path, capsys):
    """The model path does not exist: every error below must come from the data, first."""
    questions, images = pope_release
    missing_model = str(tmp_path / "no-model")

    def infer(*argv: str) -> str:
        assert infer_main(["--model_name", missing_model, "--eval_output", str(tmp_path / "o.jsonl"), "--quiet", *argv]) == 2
        return capsys.readouterr().err

    assert "pass --benchmark_dir" in infer("--test_datasets", "pope")
    assert "no POPE files" in infer("--test_datasets", "pope", "--benchmark_dir", str(tmp_path))
    assert "has no part typo" in infer("--test_datasets", "pope", "--benchmark_dir", str(questions), "--benchmark_parts", "typo")
    assert "pass --image_folder" in infer("--test_datasets", "pope", "--benchmark_dir", str(questions))
    with (questions / "coco_pope_random.json").open("a") as handle:
        handle.write(json.dumps({"question_id": 3, "image": "COCO_val2014_000000000042.jpg", "label": "maybe"}) + "\n")
        handle.write(json.dumps({"question_id": 4, "image": "missing.jpg", "text": "Is there a cat?", "label": "no"}) + "\n")
    error = infer("--test_datasets", "pope", "--benchmark_dir", str(questions), "--image_folder", str(images))
    assert "coco_pope_random.json, line 3 (idx=3), field 'text': missing" in error
    assert "coco_pope_random.json, line 3 (idx=3), field 'label': must be yes or no" in error
    assert "line 4 (idx=4), field 'image': image file not found" in error
    assert "no-model" not in error

    records = json.loads((hallusion_release / "HallusionBench.json").read_text())
    records[2]["gt_answer"] = "yes"
    records[4]["filename"] = "./VS/chart/0_0.png"
    records[5]["figure_id"] = "1a"
    (hallusion_release / "HallusionBench.json").write_text(json.dumps(records))
    error = infer("--test_datasets", "hallusionbench", "--benchmark_dir", str(hallusion_release))
    assert "HallusionBench.json, record 2 (idx='1'), field 'gt_answer'" in error
    assert "record 4 (idx='0'), field 'filename': must be null exactly when visual_input" in error
    assert "record 5 (idx='0'), field 'figure_id': must be a number" in error
    assert "a test file" in infer("--test_datasets", str(tmp_path / "t.jsonl"), "--benchmark_dir", str(questions))


def test_scoring_a_file_of_another_kind_is_a_clear_error(tmp_path, capsys):
    output = tmp_path / "alt.jsonl"
    output.write_text(json.dumps({"idx": 0, "question": "q", "response": "A dog."}) + "\n")
    assert score_cli.main(["--benchmark", "pope", "--file", str(output)]) == 2
    assert "alt.jsonl, line 1, field 'label': must be yes or no, found None" in capsys.readouterr().err
    assert score_cli.main(["--benchmark", "nope", "--file", str(output)]) == 2
    assert "unknown" in capsys.readouterr().err


def test_flags_a_benchmark_does_not_read_are_refused(tmp_path, capsys):
    output = tmp_path / "pope.jsonl"
    output.write_text("".join(json.dumps({"question_id": i, "label": "yes", "category": "random", "response": "Yes"}) + "\n"
                              for i in range(2)))
    for flags, message in [
        (["--benchmark", "pope", "--coco_annotations", str(tmp_path)], "--coco_annotations: pope scoring does not read it"),
        (["--benchmark", "pope", "--judge_url", "http://127.0.0.1:9"], "--judge_url: pope scoring does not read it"),
        (["--benchmark", "mmhal_bench", "--judge_model", "gpt-4o"], "--judge_model needs --judge_url"),
        (["--benchmark_dir", str(tmp_path)], "--benchmark_dir: only with --benchmark"),
        (["--benchmark", "pope", "--protocol", "paper"], "--protocol is for alt-text outputs"),
    ]:
        assert score_cli.main(["--file", str(output), *flags]) == 2, flags
        assert message in capsys.readouterr().err, flags
    assert infer_main(["--model_name", str(tmp_path / "none"), "--test_datasets", "obj_halbench_300", "--benchmark_dir",
                       str(tmp_path), "--image_folder", str(tmp_path), "--eval_output", str(tmp_path / "o.jsonl")]) == 2
    assert "images are inside its question file" in capsys.readouterr().err
    # every record of another benchmark's output fails the same way: one line says so
    output.write_text("".join(json.dumps({"id": i, "response": "Yes"}) + "\n" for i in range(3)))
    assert score_cli.main(["--benchmark", "pope", "--file", str(output)]) == 2
    assert "no record has a valid 'label' (" in (err := capsys.readouterr().err)
    assert "pope.jsonl, line 1: must be yes or no, found None): is this an output of pope?" in (
        err)


def test_atomic_writes_keep_a_plain_files_permissions(tmp_path):
    import os

    from mcmdpo.files import write_text_atomically

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = write_text_atomically(tmp_path / "new.txt", "y")
    assert written.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not the temporary file's 0600
    os.chmod(plain, 0o640)
    write_text_atomically(plain, "z")
    assert plain.read_text() == "z" and plain.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.txt", "plain.txt"]  # no temporary left behind
