"""The browser app (``python -m mcmdpo.app``): its model side against the preference evaluation,
its messages for bad input, and the whole page in a real headless Chromium (Debian's ``chromium``
driven by pip's playwright, nothing downloaded): two tiny checkpoints answer side by side, a
typed alt-text is scored, bad uploads get a clear message and the server keeps answering."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from PIL import Image

from mcmdpo.app.engine import ScoringError, build_question, generate, load_checkpoint, score
from mcmdpo.app.examples import split_question, synthetic_examples, unrelated_post
from mcmdpo.app.uploads import InputError, read_image, require_text
from mcmdpo.data.synthetic import INSTRUCTION
from mcmdpo.eval.generation import GenerationSettings


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint, "tiny")


@pytest.fixture(scope="module")
def second_checkpoint(tmp_path_factory) -> Path:
    from mcmdpo.tiny import TinyModelSpec, write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_b") / "model", TinyModelSpec(seed=1))


@pytest.fixture(scope="module")
def two_records(synthetic_dir, tmp_path_factory) -> Path:
    """A preference file of the first two held-out records of the synthetic data."""
    path = tmp_path_factory.mktemp("pref") / "pref_two.json"
    path.write_text(json.dumps(json.loads((synthetic_dir / "pref_test.json").read_text())[:2]))
    return path


# ---------------------------------------------------------------- the model side

def test_margins_equal_the_preference_evaluation(tiny_checkpoint, checkpoint, synthetic_dir, two_records):
    """The app's log-prob and margins of a record's chosen alt-text are the evaluation's for that
    record: its own scoring of the file's record 0 (all eight MCM-DPO sequences), and
    evaluate_preferences' context margin, the mean over the file's two records."""
    from mcmdpo.data.loading import load_examples
    from mcmdpo.preference.dataset import PreferenceDataset
    from mcmdpo.eval.preferences import evaluate_preferences, sequence_logps_of, summarize
    from mcmdpo.preference.layout import ANCHOR, MCMDPO_LAYOUT
    from mcmdpo.model.loading import load_family, load_model, load_processor
    from mcmdpo.preference.packing import sequence_packing

    images = synthetic_dir / "image"
    records = load_examples(two_records, "preference", images, show_progress=False).examples
    app = [score(checkpoint, record.image.open(images), record.question, record.chosen, other.question)
           for record, other in ((records[0], records[1]), (records[1], records[0]))]

    processor = load_processor(str(tiny_checkpoint))
    dataset = PreferenceDataset(records, processor, images, 2048, load_family(str(tiny_checkpoint)).inputs)
    packing = sequence_packing("tree", processor, MCMDPO_LAYOUT, load_family(str(tiny_checkpoint)))
    logps = sequence_logps_of(load_model(str(tiny_checkpoint)), dataset, packing, show_progress=False)
    record_0 = summarize(logps[:1])
    assert app[0].logp == pytest.approx(logps[0, MCMDPO_LAYOUT.column(ANCHOR)].item(), abs=1e-4)
    assert app[0].image_margin == pytest.approx(record_0["image_margin"], abs=1e-4)
    assert app[0].context_margin == pytest.approx(record_0["context_margin"], abs=1e-4)
    assert app[0].image_margin != 0 and app[0].context_margin != 0

    evaluated = evaluate_preferences(tiny_checkpoint, two_records, images, show_progress=False)
    assert (app[0].context_margin + app[1].context_margin) / 2 == pytest.approx(evaluated["context_margin"], abs=1e-4)
    # Record 1's diffused image is drawn with record 1's seed there, with record 0's in the app:
    # the image margin is the evaluation's for a record at position 0, which is what record 0 checks.


def test_alt_text_is_what_inference_writes(tiny_checkpoint, checkpoint, synthetic_dir, tmp_path):
    """The app's answer to a test record is mcmdpo_inference.py's response, at the same settings."""
    from mcmdpo.data.loading import load_examples
    from mcmdpo.eval import inference

    test_file = tmp_path / "two.jsonl"
    test_file.write_text("".join((synthetic_dir / "test.jsonl").read_text().splitlines(keepends=True)[:2]))
    output = tmp_path / "out.jsonl"
    assert inference.main(["--model_name", str(tiny_checkpoint), "--test_datasets", str(test_file), "--eval_output", str(output),
                           "--image_folder", str(synthetic_dir / "image"), "--num_beams", "2", "--max_new_tokens", "8", "--quiet"]) == 0
    expected = [json.loads(line)["response"] for line in output.read_text().splitlines()]
    examples = load_examples(test_file, "test", synthetic_dir / "image", show_progress=False).examples
    settings = GenerationSettings(num_beams=2, max_new_tokens=8)
    got = [generate(checkpoint, e.image.open(synthetic_dir / "image"), e.question, settings) for e in examples]
    assert got == expected and all(got)


# ---------------------------------------------------------------- bad input

def image_file(path: Path, size: tuple[int, int], mode: str = "RGB") -> Path:
    Image.new(mode, size).save(path)
    return path


def test_bad_uploads_and_texts_get_clear_messages(tmp_path):
    good = image_file(tmp_path / "good.png", (40, 30))
    assert read_image(good).size == (40, 30) and read_image(good).mode == "RGB"
    cases = {
        None: "No image: drop an image",
        tmp_path / "missing.png": "cannot be read",
        tmp_path / "empty.png": r"is empty \(0 bytes\)",
        tmp_path / "text.png": "is not an image this page can read",
        tmp_path / "cut.png": "cannot be fully decoded",
    }
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello, I am a text file")
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    for path, expected in cases.items():
        with pytest.raises(InputError, match=expected):
            read_image(path)
    with pytest.raises(InputError, match=r"big.png is 100 x 60 = 6,000 pixels, more than the limit of 5,000 pixels \(--max_pixels\)"):
        read_image(image_file(tmp_path / "big.png", (100, 60)), max_pixels=5_000)
    # Past PIL's own hard limit (2 x 89,478,485 pixels): refused from the header, never decoded.
    with pytest.raises(InputError, match=r"bomb.png is too large \(Image size \(400000000 pixels\) exceeds limit"):
        read_image(image_file(tmp_path / "bomb.png", (20_000, 20_000), mode="1"))
    with pytest.raises(InputError, match=r"is 2\.1 MB, more than the limit of 1\.0 MB"):
        big = tmp_path / "big_file.png"
        big.write_bytes(b"\0" * 2_100_000)
        read_image(big, max_bytes=1_000_000)

    assert require_text("  a post \n", "post") == "a post"
    with pytest.raises(InputError, match="The post is empty"):
        require_text(" \n ", "post")
    with pytest.raises(InputError, match="The post is 12 characters long, more than the limit of 10"):
        require_text("x" * 12, "post", max_chars=10)


def test_requests_answer_with_a_message_never_an_exception(checkpoint, synthetic_dir, tmp_path):
    from mcmdpo.app.page import SAMPLING, GREEDY, Handlers, PageSettings

    handlers = Handlers([checkpoint], PageSettings(max_new_tokens=4))
    image = str(synthetic_dir / "image" / "test_000000.png")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    decoding = (GREEDY, 4, 1, 0.7, 1.0, 0)

    def describe(*request):
        return list(handlers.describe(*request))[-1]

    assert describe(str(bad), INSTRUCTION, "A post", "Another post", *decoding)[:3] == [
        f"⚠️ Cannot write alt-text: The upload bad.png ({bad.stat().st_size} bytes) is not an image this page can read: not a PNG, "
        "JPEG, WebP, GIF, BMP or other format PIL decodes, whatever its name says.", "", ""]
    assert "The post (the context) is empty" in describe(image, INSTRUCTION, "   ", "Another post", *decoding)[0]
    assert "Sampling needs a temperature above 0" in describe(image, INSTRUCTION, "A post", "Another", SAMPLING, 4, 1, 0, 1.0, 0)[0]
    assert "The unrelated post is the post itself" in describe(image, INSTRUCTION, "Same", "Same", *decoding)[2]
    message, alt_text, margins = describe(image, INSTRUCTION, "A post", "Another post", *decoding)
    assert message.startswith("1 of 1 models answered") and alt_text and "image margin" in margins
    assert handlers.preview(str(bad))[1].startswith("⚠️ The upload bad.png")
    assert handlers.preview(image)[1] == "Image 64 x 64: ready."
    assert "alt-text to score is empty" in handlers.score_typed(image, INSTRUCTION, "A post", "Another", "  ")[0]
    with pytest.raises(ScoringError, match="no room for the alt-text within 20 tokens"):
        score(checkpoint, read_image(image), "A post", "An alt-text", "Another post", max_length=20)


def test_examples_labels_and_questions(synthetic_dir, tmp_path):
    from mcmdpo.app.__main__ import parse_model, unique_labels
    from mcmdpo.app.examples import examples_from_file

    examples = synthetic_examples(tmp_path / "examples", 3)
    assert len(examples) == 3 and all(e.image_path.is_file() and e.instruction == INSTRUCTION and e.post and e.alt_text for e in examples)
    preference = json.loads((synthetic_dir / "pref_test.json").read_text())[1]
    from_file = examples_from_file(synthetic_dir / "pref_test.json", synthetic_dir / "image", 2, tmp_path)
    assert len(from_file) == 2 and from_file[1].image_path == (synthetic_dir / "image" / preference["image_path"]).resolve()
    assert build_question(from_file[1].instruction, from_file[1].post) == json.loads(preference["text"])["question"]
    assert from_file[1].alt_text == json.loads(preference["text"])["chosen"]
    assert unrelated_post(examples, 0) == examples[1].post and unrelated_post(examples, 2) == examples[0].post
    for question in ("Given an image and context, generate alt-text for the image.Context:\nHi there", INSTRUCTION + "Hi there"):
        instruction, post = split_question(question)
        assert post == "Hi there" and build_question(instruction, post) == question
    assert split_question("No marker") == (INSTRUCTION, "No marker")
    assert unique_labels(["runs/a/seed0/sft", "runs/a/seed0/mcmdpo"]) == ["sft", "mcmdpo"]
    assert unique_labels(["runs/seed0/mcmdpo", "runs/seed1/mcmdpo"]) == ["seed0/mcmdpo", "seed1/mcmdpo"]
    assert parse_model("MCM-DPO=runs/x") == ("MCM-DPO", "runs/x") and parse_model("runs/x") == (None, "runs/x")


# ---------------------------------------------------------------- the page in a real browser

def chromium_or_skip() -> str:
    """Debian's chromium and pip's playwright; skipped where either is absent, except in CI."""
    from mcmdpo.app.browser import find_chromium

    chromium = find_chromium()
    try:
        import playwright  # noqa: F401
    except ImportError:
        playwright_found = False
    else:
        playwright_found = True
    missing = [name for name, found in (("chromium (apt-get install chromium)", chromium), ("playwright (pip, the dev extra)", playwright_found)) if not found]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{' and '.join(missing)} missing in CI")
        pytest.skip(f"{' and '.join(missing)} not installed")
    return chromium


@pytest.mark.slow
def test_the_page_in_a_real_browser(tiny_checkpoint, second_checkpoint, checkpoint, synthetic_dir, tmp_path):
    from mcmdpo.app import browser

    chromium = chromium_or_skip()
    image = synthetic_dir / "image" / "test_000000.png"
    post = "Look at the paper shape on the left of this picture."
    bad = tmp_path / "notes.png"
    bad.write_text("shopping list: eggs, milk")
    huge = image_file(tmp_path / "huge.png", (200, 200))
    with browser.serve([tiny_checkpoint, second_checkpoint], extra_args=["--max_new_tokens", "12", "--max_pixels", "20000"]) as server:
        assert "[1/2] loading model" in server.output and "[2/2] loading model" in server.output
        with browser.open_page(server.url, chromium) as (page, blocked):
            assert browser.upload_and_wait(page, image) == "Image 64 x 64: ready."
            assert browser.write_alt_text(page, post).startswith("2 of 2 models answered")
            answers = browser.answers(page, 2)
            assert all(alt_text.strip() for alt_text, _ in answers), answers
            shown = [browser.margins_of(line) for _, line in answers]
            assert all(set(numbers) == {"image_margin", "context_margin", "logp"} and all(map(math.isfinite, numbers.values()))
                       for numbers in shown), answers

            # The first column is what the project's own code says for the same request.
            page.click("text=Prompt and the unrelated post")  # the accordion renders its fields once opened
            unrelated = page.input_value("#unrelated textarea")
            question, unrelated_question = build_question(INSTRUCTION, post), build_question(INSTRUCTION, unrelated)
            expected_text = generate(checkpoint, read_image(image), question, GenerationSettings(num_beams=3, max_new_tokens=12))
            assert answers[0][0] == expected_text
            expected = score(checkpoint, read_image(image), question, expected_text, unrelated_question)
            assert shown[0] == pytest.approx({"image_margin": expected.image_margin, "context_margin": expected.context_margin,
                                              "logp": expected.logp}, abs=6e-3)

            typed = "A paper red circle on the left."
            message, table = browser.score_typed(page, typed)
            assert message.startswith("Scored under 2 models"), message
            rows = [line.split("\t") for line in table.splitlines()]
            assert rows[0] == ["model", "log p", "image margin", "context margin"] and len(rows) == 3
            typed_score = score(checkpoint, read_image(image), question, typed, unrelated_question)
            assert [float(v) for v in rows[1][1:]] == pytest.approx([typed_score.logp, typed_score.image_margin, typed_score.context_margin], abs=6e-3)

            browser.fill(page, "post", "   ")
            assert "The post (the context) is empty" in browser.write_alt_text(page)
            assert "not an image this page can read" in browser.upload_and_wait(page, bad)
            assert "huge.png is 200 x 200 = 40,000 pixels, more than the limit of 20,000 pixels" in browser.upload_and_wait(page, huge)
            assert browser.write_alt_text(page, post).startswith("⚠️ Cannot write alt-text: The image huge.png is 200 x 200")

            assert server.alive() and server.answers()
            browser.upload_and_wait(page, image)
            assert browser.write_alt_text(page, post).startswith("2 of 2 models answered")
            assert [alt_text for alt_text, _ in browser.answers(page, 2)] == [alt_text for alt_text, _ in answers]
            assert blocked == [], blocked  # the page asked nothing of any other address
        assert server.alive()
