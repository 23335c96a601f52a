"""The builder's pair stage and the whole build: pairing rules by hand (worst and best with their
tie-breaks, margins, length balance, what may never be rejected), the pairs in the upstream
preference format with their provenance, and a whole build through the command line whose
pairs.json validates, is byte-identical in another folder, and trains two MCM-DPO steps; flags
that would do nothing and missing inputs stop it before any work."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from build_support import once, quick_options, sft_records, train_two_mcmdpo_steps, write_json
from mcmdpo.build import BuildError, OptionsError, build
from mcmdpo.build.cli import main as build_main
from mcmdpo.build.pair import LENGTH, NO_REJECTED, TIE, UNRANKED, Pick, pick, preference_record
from mcmdpo.data.parsing import parse_preference
from mcmdpo.data.records import RecordLocation
from mcmdpo.data.validate import main as validate_main


def ranked(candidates, scores, alt_text="A knitted blue circle on the left.", reference_score=None):
    return {"key": "r1", "id": 1, "image": {"path": "x.png"}, "question": "Given an image and context, generate alt-text for the "
            "image.\nContext:\nLook!", "context": "Look!", "alt_text": alt_text, "alt_text_original": alt_text.lower(),
            "candidates": candidates, "scores": scores, "reference_score": reference_score}


FOUR = ["A red square.", "Blue circle on the left.", "Shapes.", "A blue circle."]


@pytest.mark.parametrize("scores, pairing, settings, expected", [
    ([3.0, 1.0, 2.0, 4.0], "reference_vs_worst", {}, (Pick(None, 1, 3.0), None)),
    ([2.0, 1.0, 1.0, 2.0], "reference_vs_worst", {}, (Pick(None, 1, 1.0), None)),  # worst tie: the lower index
    ([1.0, 3.0, 2.0, 0.5], "best_vs_worst", {}, (Pick(1, 3, 2.5), None)),
    ([3.0, 3.0, 1.0, 2.0], "best_vs_worst", {}, (Pick(0, 2, 2.0), None)),  # best tie: the lower index
    ([1.0, 1.2, 1.1, 1.05], "reference_vs_worst", {"min_margin": 0.2}, (None, (TIE, "margin 0.2"))),
    ([1.0, 1.2, 1.1, 1.05], "reference_vs_worst", {"min_margin": 0.1}, (Pick(None, 0, 0.2), None)),
    ([2.0, 2.0, 2.0, 2.0], "best_vs_worst", {}, (None, (TIE, "margin 0"))),
    ([None, 1.0, None, None], "reference_vs_worst", {}, (None, (UNRANKED, "1 of 4 candidates ranked"))),
])
def test_pairing_rules(scores, pairing, settings, expected):
    assert pick(ranked(FOUR, scores), pairing, **settings) == expected


def test_what_may_never_be_rejected_and_length_balance():
    # An empty candidate, one holding the image placeholder, and repeats of the chosen text are never rejected.
    record = ranked(["", "A <image> circle.", "a knitted blue  circle on the LEFT.", "A circle.", "Blue."], [0, 0, 0, 1, 3])
    assert pick(record, "reference_vs_worst") == (Pick(None, 3, 2.0), None)
    record = ranked(["A knitted blue circle on the left.", "a knitted blue circle on the left."], [0.0, 1.0])
    assert pick(record, "reference_vs_worst") == (None, (NO_REJECTED, None))
    # Lengths 1, 4, 12 and 5 words against the chosen's 7: only 4 and 5 are within 1.5x.
    record = ranked(["Circle.", "A blue knitted circle.", " ".join(["word"] * 12), "A circle on the left."], [0.0, 2.0, 0.5, 1.0])
    assert pick(record, "reference_vs_worst") == (Pick(None, 0, 2.0), None)
    assert pick(record, "reference_vs_worst", length_balance=1.5) == (Pick(None, 3, 1.0), None)
    assert pick(record, "reference_vs_worst", length_balance=1.05) == (None, (LENGTH, "--length_balance 1.05"))


def test_a_pair_is_an_upstream_preference_record_with_its_provenance(tmp_path):
    record = ranked(FOUR, [3.0, 1.0, 2.0, 4.0], reference_score=5.0)
    pair = preference_record(record, Pick(None, 1, 3.0), {"pairing": "reference_vs_worst", "ranker": {"name": "clip"}})
    problems = []
    example = parse_preference(RecordLocation("pairs.json", "record", 0), pair, problems)
    assert not problems
    assert (example.idx, example.image.path, example.question, example.chosen, example.rejected) == (
        1, "x.png", record["question"], record["alt_text"], FOUR[1])
    assert json.loads(pair["text"]) == {"question": record["question"], "chosen": record["alt_text"], "rejected": FOUR[1]}
    assert pair["provenance"] == {"pairing": "reference_vs_worst", "ranker": {"name": "clip"},
                                  "alt_text_original": record["alt_text_original"], "chosen": {"candidate": None, "score": 5.0},
                                  "rejected": {"candidate": 1, "score": 1.0}, "margin": 3.0, "candidate_scores": record["scores"]}
    embedded = preference_record({**record, "image": {"stored": "images/abc.png", "path": None}}, Pick(3, 1, 3.0), {}, b"\x89PNG")
    example = parse_preference(RecordLocation("pairs.json", "record", 0), embedded, problems)
    assert example.image.data == b"\x89PNG" and "image_path" not in embedded and example.chosen == FOUR[3]
    assert base64.b64decode(embedded["image"]["bytes"]) == b"\x89PNG"


# ---------------------------------------------------------------- a whole build

def command(data: Path, image_folder: Path, output: Path, checkpoint: Path) -> list[str]:
    return ["--data_path", str(data), "--image_folder", str(image_folder), "--output_dir", str(output),
            "--sampler_model", str(checkpoint), "--num_candidates", "4", "--max_new_tokens", "6", "--quiet"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_checkpoint, synthetic_dir):
    """Every stage through the command line, on 12 SFT records."""
    def make(folder: Path) -> tuple[Path, Path]:
        data = write_json(folder / "sft.json", sft_records(synthetic_dir, 12, start=20))
        assert build_main(command(data, synthetic_dir / "image", folder / "out", tiny_checkpoint)) == 0
        return data, folder / "out"

    return once(tmp_path_factory, "built_12", make)


def test_the_pairs_validate_and_are_the_same_bytes_in_another_folder(built, tiny_checkpoint, synthetic_dir, tmp_path, capsys):
    data, output = built
    report = json.loads((output / "build_report.json").read_text())
    assert list(report) == ["collect", "correct", "sample", "rank", "pair"]
    assert all(section["status"] == "complete" for section in report.values())
    pairs = json.loads((output / "pairs.json").read_text())
    assert len(pairs) == report["pair"]["pairs"] >= 2
    assert report["pair"]["pairs"] + sum(group["count"] for group in report["pair"]["skipped"].values()) == 12
    provenance = pairs[0]["provenance"]
    assert provenance["sampler"] == {"checkpoint": str(tiny_checkpoint), "num_candidates": 4, "temperature": 1.0, "top_p": 0.9,
                                     "max_new_tokens": 6, "seed": 0}
    assert provenance["ranker"] == {"name": "reference"} and provenance["corrector"] == "none"
    assert str(output) not in (output / "pairs.json").read_text()
    capsys.readouterr()
    assert validate_main([str(output / "pairs.json"), "--image_folder", str(synthetic_dir / "image"), "--quiet"]) == 0
    assert f"{len(pairs)} valid preference record(s), OK" in capsys.readouterr().out

    again = tmp_path / "elsewhere"
    assert build_main(command(data, synthetic_dir / "image", again, tiny_checkpoint)) == 0
    assert (again / "pairs.json").read_bytes() == (output / "pairs.json").read_bytes()
    # A rerun finds every stage up to date and writes the same bytes.
    assert build_main(command(data, synthetic_dir / "image", again, tiny_checkpoint)) == 0
    assert capsys.readouterr().out.count("(up to date)") == 5
    assert (again / "pairs.json").read_bytes() == (output / "pairs.json").read_bytes()


def test_the_pairs_train_two_mcmdpo_steps(built, tiny_checkpoint, synthetic_dir, tmp_path):
    _, output = built
    steps = train_two_mcmdpo_steps(tiny_checkpoint, output / "pairs.json", synthetic_dir / "image", tmp_path)
    assert [entry["step"] for entry in steps] == [1, 2] and all(entry["loss"] > 0 for entry in steps)
    assert "margins/image" in steps[0] and "margins/context" in steps[0]


# ---------------------------------------------------------------- refused before any work

@pytest.mark.parametrize("extra, message", [
    (["--clip_model", "x"], "--clip_model (read only with --ranker clip) would do nothing here"),
    (["--max_edit_ratio", "0.5"], "--max_edit_ratio (read only with a corrector"),
    (["--stages", "rank", "pair", "--num_candidates", "8"], "--num_candidates (read only with the sample stage)"),
    (["--judge_model_name", "m", "--ranker", "judge", "--judge", "model:/x"], "--judge_model_name (read only with a judge endpoint"),
    (["--stages", "collect", "--api_key_env", "KEY"], "--api_key_env (read only with an endpoint"),
    (["--corrector", "gpt-4"], "--corrector must be none, model:PATH or endpoint:URL, got 'gpt-4'"),
    (["--corrector", "endpoint:localhost:8000"], "the endpoint must be an http:// or https:// URL"),
    (["--ranker", "judge"], "--judge is required by --ranker judge"),
    (["--corrector", "endpoint:http://127.0.0.1:9/v1"], "--corrector_model_name is required with --corrector endpoint:URL"),
    (["--num_candidates", "1"], "--num_candidates must be 2 or more"),
    (["--length_balance", "0.5"], "--length_balance must be 1 or more"),
])
def test_flags_that_would_do_nothing_or_cannot_work_are_errors(extra, message, synthetic_dir, tiny_checkpoint, tmp_path, capsys):
    data = write_json(tmp_path / "sft.json", sft_records(synthetic_dir, 2))
    assert build_main(command(data, synthetic_dir / "image", tmp_path / "out", tiny_checkpoint) + extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "collect.jsonl").exists()


def test_missing_inputs_are_named_before_any_work(synthetic_dir, tiny_checkpoint, tmp_path):
    data = write_json(tmp_path / "sft.json", sft_records(synthetic_dir, 2))
    with pytest.raises(OptionsError, match="--sampler_model is required by the sample stage"):
        build(quick_options(data, synthetic_dir / "image", tmp_path / "a"), echo=None)
    with pytest.raises(BuildError, match="--sampler_model .*nowhere: no such folder"):
        build(quick_options(data, synthetic_dir / "image", tmp_path / "b", tmp_path / "nowhere"), echo=None)
    with pytest.raises(BuildError, match="collect.jsonl: not found; run the collect stage first"):
        build(quick_options(None, None, tmp_path / "c", stages=["pair"]), echo=None)
    bad_prompt = tmp_path / "prompt.txt"
    bad_prompt.write_text("Correct this.")
    with pytest.raises(OptionsError, match=r"--correction_prompt .*prompt.txt: the prompt must hold \{alt_text\}"):
        build(quick_options(data, synthetic_dir / "image", tmp_path / "d", tiny_checkpoint, corrector=f"model:{tiny_checkpoint}",
                            correction_prompt=str(bad_prompt)), echo=None)
    for folder in "abcd":
        assert not (tmp_path / folder / "collect.jsonl").exists()
