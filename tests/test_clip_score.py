"""CLIPScore (mcmdpo/eval/clip_score.py) on a tiny random CLIP (mcmdpo/tiny/clip.py): the scorer
equals Hessel et al.'s definition computed here from the model's raw embeddings, the clamp at 0
and the 77-token truncation are real, batching changes nothing, and ``get_score.py --clip_model``
writes both metrics for real records and stops on a missing image before scoring anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoProcessor, CLIPModel, CLIPProcessor

from mcmdpo.data.synthetic import INSTRUCTION, write_dataset
from mcmdpo.eval.caption_metrics import COCO_METRICS
from mcmdpo.eval.clip_score import ClipScorer, clip_s, post_of
from mcmdpo.eval.score_cli import main as get_score
from mcmdpo.tiny.clip import tiny_clip_model, write_tiny_clip

LONG_TEXT = " ".join(["a wooden red circle beside a knitted blue square on a plain background"] * 10)  # over 77 tokens


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture(scope="module")
def scorer(tiny_clip) -> ClipScorer:
    return ClipScorer(str(tiny_clip), device="cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), seed=0, num_sft=0, num_pref_train=0, num_pref_test=0, num_test=8)


@pytest.fixture(scope="module")
def records(data) -> list[dict]:
    return [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def images(data, records):
    from PIL import Image

    return [Image.open(data / "image" / record["image_path"]).convert("RGB") for record in records]


@pytest.fixture(scope="module")
def raw(tiny_clip):
    """The definition's ingredients, one input at a time (no padding, no batching): E_v and E_c
    straight from get_image_features / get_text_features, unit length."""
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    processor = CLIPProcessor.from_pretrained(tiny_clip)

    def image(picture) -> torch.Tensor:
        with torch.no_grad():
            features = model.get_image_features(pixel_values=processor(images=[picture], return_tensors="pt")["pixel_values"])
        return torch.nn.functional.normalize(features.pooler_output[0].double(), dim=0)

    def text(words: str) -> torch.Tensor:
        ids = processor.tokenizer([words], truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            features = model.get_text_features(**ids)
        return torch.nn.functional.normalize(features.pooler_output[0].double(), dim=0)

    return image, text


def definition(first: torch.Tensor, second: torch.Tensor) -> float:
    """CLIP-S = 2.5 * max(cos, 0), written out here rather than taken from the module."""
    return 2.5 * max(float(first @ second), 0.0)


def test_clip_s_by_hand():
    assert clip_s(0.4) == pytest.approx(1.0)
    assert clip_s(1.0) == 2.5
    assert clip_s(0.0) == 0.0 and clip_s(-0.3) == 0.0 and clip_s(-1.0) == 0.0
    assert clip_s(0.5, weight=100) == pytest.approx(50)  # torchmetrics' scale


def test_tiny_clip_loads_as_a_published_clip(tiny_clip):
    processor = AutoProcessor.from_pretrained(tiny_clip)
    model = AutoModel.from_pretrained(tiny_clip)
    assert type(processor).__name__ == "CLIPProcessor" and isinstance(model, CLIPModel)
    # CLIP's real vocabulary: ids as openai/clip-vit-base-patch32 gives them.
    assert processor.tokenizer(["a photo of a cat", "a photo of a dog"]).input_ids == [
        [49406, 320, 1125, 539, 320, 2368, 49407], [49406, 320, 1125, 539, 320, 1929, 49407]]
    assert processor.tokenizer.model_max_length == 77 == model.config.text_config.max_position_embeddings
    image_processor = processor.image_processor
    assert image_processor.crop_size == {"height": 224, "width": 224} and image_processor.size == {"shortest_edge": 224}
    assert list(image_processor.image_mean) == [0.48145466, 0.4578275, 0.40821073]
    assert list(image_processor.image_std) == [0.26862954, 0.26130258, 0.27577711]
    # Random weights follow the seed.
    same, other = tiny_clip_model(0).state_dict(), tiny_clip_model(1).state_dict()
    name = "text_projection.weight"
    assert torch.equal(model.state_dict()[name], same[name]) and not torch.equal(same[name], other[name])


def test_image_text_is_the_definition_clamped_at_zero(scorer, raw, images, records):
    embed_image, embed_text = raw
    texts = [record["chosen"] for record in records] + ["a photo of a cat", "Thoughts?", LONG_TEXT]
    assert len(scorer.tokenizer(LONG_TEXT).input_ids) > 77  # so truncation is exercised
    pairs = [(i, t) for i in range(len(images)) for t in range(len(texts))]
    got = scorer.image_text([images[i] for i, _ in pairs], [texts[t] for _, t in pairs])
    image_rows = [embed_image(picture) for picture in images]
    text_rows = [embed_text(words) for words in texts]
    cosines = [float(image_rows[i] @ text_rows[t]) for i, t in pairs]
    expected = [definition(image_rows[i], text_rows[t]) for i, t in pairs]
    assert got == pytest.approx(expected, abs=1e-5)
    # The clamp matters: the most negative pair scores exactly 0, not 2.5 * cos.
    lowest = min(range(len(pairs)), key=cosines.__getitem__)
    assert cosines[lowest] < -0.05 and got[lowest] == 0.0
    assert max(got) > 0.1 and all(0.0 <= value <= 2.5 for value in got)


def test_batch_size_changes_nothing_and_batches_are_real(tiny_clip, scorer, images, records):
    texts = [record["chosen"] for record in records]
    reference = scorer.image_text(images, texts)
    small = ClipScorer(str(tiny_clip), device="cpu", batch_size=3)
    calls = {"text": 0, "image": 0}
    for kind, name in (("text", "get_text_features"), ("image", "get_image_features")):
        original = getattr(small.model, name)

        def counted(*args, _original=original, _kind=kind, **kwargs):
            calls[_kind] += 1
            return _original(*args, **kwargs)

        setattr(small.model, name, counted)
    assert small.image_text(images, texts) == pytest.approx(reference, abs=1e-6)
    assert calls == {"text": 3, "image": 3}  # 8 of each, in batches of 3
    single = ClipScorer(str(tiny_clip), device="cpu", batch_size=1)
    assert single.image_text(images, texts) == pytest.approx(reference, abs=1e-6)
    assert single.text_text(texts, texts[::-1]) == pytest.approx(scorer.text_text(texts, texts[::-1]), abs=1e-6)


def test_text_text_is_the_definition_and_symmetric(scorer, raw, records):
    _, embed_text = raw
    alt_texts = [record["chosen"] for record in records]
    posts = [post_of(record["question"]) for record in records]
    forward, backward = scorer.text_text(alt_texts, posts), scorer.text_text(posts, alt_texts)
    assert forward == pytest.approx(backward, abs=1e-6)
    assert forward == pytest.approx([definition(embed_text(a), embed_text(p)) for a, p in zip(alt_texts, posts)], abs=1e-5)
    assert scorer.text_text(alt_texts[:2], alt_texts[:2]) == pytest.approx([2.5, 2.5], abs=1e-5)  # cos 1 with itself
    pairs = [(a, b) for a in alt_texts + posts for b in posts]
    scores = scorer.text_text([a for a, _ in pairs], [b for _, b in pairs])
    assert 0.0 in scores  # some pairs of texts point apart, clamped to 0
    assert scorer.text_text([], []) == [] and scorer.image_text([], []) == []
    with pytest.raises(ValueError, match="pairs"):
        scorer.text_text(["one"], [])


def test_post_of_takes_the_post_from_the_question():
    assert post_of(INSTRUCTION + "Look at the clay one on the left.") == "Look at the clay one on the left."
    assert post_of("No marker here") == "No marker here"


def write_outputs(path: Path, records: list[dict], responses: list[str]) -> Path:
    path.write_text("".join(json.dumps({**record, "response": response}) + "\n" for record, response in zip(records, responses)))
    return path


@pytest.mark.slow
def test_get_score_with_clip_model_writes_both_metrics(tmp_path, tiny_clip, scorer, data, records, images, capsys):
    responses = [record["chosen"] if i % 2 else "A photo of a cat." for i, record in enumerate(records)]
    responses[-1] = ""  # an empty response scores 0, as on every other metric
    outputs = write_outputs(tmp_path / "out.jsonl", records, responses)
    summary_file = tmp_path / "summary.json"
    assert get_score(["--file", str(outputs), "--clip_model", str(tiny_clip), "--image_folder", str(data / "image"),
                      "--summary_json", str(summary_file), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "clip_score in CLIP-S 0-2.5 (not x 100)" in printed and "clip_context_score" in printed
    [summary] = json.loads(summary_file.read_text())
    rows = [json.loads(line) for line in (tmp_path / "out.coco.scores.jsonl").read_text().splitlines()]
    # Each record's scores are the scorer's on its image and response, and on its response and post.
    expected_image = scorer.image_text(images[:-1], responses[:-1]) + [0.0]
    expected_context = scorer.text_text(responses[:-1], [post_of(record["question"]) for record in records[:-1]]) + [0.0]
    assert [row["clip_score"] for row in rows] == pytest.approx(expected_image, abs=1e-6)
    assert [row["clip_context_score"] for row in rows] == pytest.approx(expected_context, abs=1e-6)
    # The post, not the whole question with its instruction.
    with_instruction = scorer.text_text(responses[:-1], [record["question"] for record in records[:-1]])
    assert with_instruction != pytest.approx(expected_context[:-1], abs=1e-3)
    assert summary["scores"]["clip_score"] == pytest.approx(sum(expected_image) / len(rows))
    assert summary["scores"]["clip_context_score"] == pytest.approx(sum(expected_context) / len(rows))
    assert summary["units"] == {"clip_score": "CLIP-S 0-2.5", "clip_context_score": "CLIP-S 0-2.5"}
    # Beside the protocol's metrics, which keep their names (tests/test_scoring.py checks their
    # values, and that scoring without --clip_model has no CLIP metric).
    protocol_metrics = [name for name in COCO_METRICS if name in summary["scores"]]
    assert list(summary["scores"]) == [*protocol_metrics, *(["spice"] if "spice" in summary["scores"] else []),
                                       "clip_score", "clip_context_score"]
    assert protocol_metrics == list(COCO_METRICS) and all(name in rows[0] for name in COCO_METRICS)


def test_get_score_stops_on_a_missing_image_before_scoring(tmp_path, tiny_clip, data, records, capsys):
    first = write_outputs(tmp_path / "first.jsonl", records, [record["chosen"] for record in records])
    broken = [dict(record) for record in records]
    broken[2]["image_path"] = "nowhere.png"
    del broken[4]["image_path"]
    second = write_outputs(tmp_path / "second.jsonl", broken, [record["chosen"] for record in records])
    code = get_score(["--file", str(first), str(second), "--clip_model", str(tiny_clip), "--image_folder", str(data / "image"), "--quiet"])
    error = capsys.readouterr().err
    assert code == 2 and "Traceback" not in error
    assert f"{second}, line 3 (idx=2), field 'image_path': image file not found: {data / 'image' / 'nowhere.png'}" in error
    assert f"{second}, line 5 (idx=4), field 'image_path': missing" in error
    assert not list(tmp_path.glob("*.scores.jsonl"))  # not even the sound first file was scored
    # The flags belong together, and to alt-text.
    assert get_score(["--file", str(first), "--image_folder", str(data / "image")]) == 2
    assert "--image_folder: only with --clip_model" in capsys.readouterr().err
    assert get_score(["--benchmark", "pope", "--file", str(first), "--clip_model", str(tiny_clip)]) == 2
    assert "--clip_model and --image_folder are for alt-text outputs" in capsys.readouterr().err
