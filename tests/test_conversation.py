"""Prompting and labels: Vicuna v1 prompts, labels on answer tokens only, truncation reported."""

from __future__ import annotations

from PIL import Image

from mcmdpo.data import load_examples
from mcmdpo.data.collate import PaddingCollator
from mcmdpo.data.conversation import IGNORE_INDEX, encode_conversation, plan_sequence, render_prompt
from mcmdpo.data.image_inputs import ImageInputs
from mcmdpo.data.lengths import check_lengths
from mcmdpo.data.sft_dataset import SFTDataset

IMAGE = Image.new("RGB", (64, 64), (30, 30, 200))
LLAVA = ImageInputs()  # what the tiny LLaVA-1.5 processor gives for an image
SIXTEEN_IMAGE_TOKENS = "<image>" * 16  # (32 / 8)^2 patches; the CLS token is dropped


def answer_text(processor, features) -> str:
    return processor.tokenizer.decode([t for t in features["labels"] if t != IGNORE_INDEX])


def test_labels_cover_the_answer_only(processor):
    features = encode_conversation(processor, IMAGE, [("Given an image and context.\nContext:\nhi", "A blue circle.")], LLAVA)
    ids, labels = features["input_ids"], features["labels"]
    assert len(ids) == len(labels) == len(features["attention_mask"])
    assert answer_text(processor, features) == " A blue circle.</s>"
    image_tokens = [i for i, t in enumerate(ids) if t == processor.image_token_id]
    assert len(image_tokens) == 16  # (32 / 8)^2 patches; the CLS token is dropped
    assert all(labels[i] == IGNORE_INDEX for i in image_tokens)
    # Everything up to the generation prompt is masked; the answer continues it token for token.
    first = next(i for i, t in enumerate(labels) if t != IGNORE_INDEX)
    assert processor.tokenizer.decode([t for t in ids[:first] if t != processor.image_token_id]).endswith("hi ASSISTANT:")
    assert labels[first:] == ids[first:]
    assert features["pixel_values"].shape == (1, 3, 32, 32)


def test_prompt_matches_template(processor):
    assert render_prompt(processor, "Q") == "USER: <image>\nQ ASSISTANT:"


def test_multi_turn_labels_every_answer(processor):
    features = encode_conversation(processor, IMAGE, [("First?", "One."), ("Second?", "Two.")], LLAVA)
    assert answer_text(processor, features) == " One.</s> Two.</s>"
    text = processor.tokenizer.decode([t for t in features["input_ids"] if t != processor.image_token_id])
    assert text == "<s>USER: \nFirst? ASSISTANT: One.</s>USER: Second? ASSISTANT: Two.</s>"


def test_plan_matches_encoding(processor):
    turns = [("Given an image.\nContext:\nsome post", "A red square on the left.")]
    features = encode_conversation(processor, IMAGE, turns, LLAVA)
    plan = plan_sequence(processor, turns, SIXTEEN_IMAGE_TOKENS)
    assert plan.length == len(features["input_ids"])
    assert plan.first_answer == next(i for i, t in enumerate(features["labels"]) if t != IGNORE_INDEX)


def test_truncation_drops_and_counts(processor, synthetic_dir):
    loaded = load_examples(synthetic_dir / "sft_train.json", "sft", synthetic_dir / "image", show_progress=False)
    plans = [plan_sequence(processor, e.turns, SIXTEEN_IMAGE_TOKENS) for e in loaded.examples]
    max_length = sorted(p.first_answer for p in plans)[len(plans) // 2]  # half the prompts reach it
    report = check_lengths(SFTDataset(loaded.examples, processor, None, max_length, LLAVA), loaded.image_sizes, show_progress=False)
    kept = [loaded.examples[position] for position in report.kept]
    expected_dropped = [e.idx for e, p in zip(loaded.examples, plans) if p.first_answer >= max_length]
    assert report.dropped == expected_dropped and 0 < len(report.dropped) < len(plans)
    assert len(kept) + len(report.dropped) == report.records == len(plans)
    assert len(report.truncated) == sum(1 for p in plans if p.first_answer < max_length < p.length)
    assert f"{len(report.dropped)} dropped" in report.summary()
    assert report.as_dict()["image_tokens"] == {"min": 16, "median": 16, "max": 16}
    # What is kept still trains on at least one answer token, cut to max_length.
    dataset = SFTDataset(kept, processor, synthetic_dir / "image", max_length, LLAVA)
    for item in dataset:
        assert len(item["input_ids"]) <= max_length
        assert any(t != IGNORE_INDEX for t in item["labels"])


def test_collator_pads_right_and_masks(processor):
    short = encode_conversation(processor, IMAGE, [("Q", "A.")], LLAVA)
    long = encode_conversation(processor, IMAGE, [("A much longer question here", "A longer answer.")], LLAVA)
    batch = PaddingCollator(processor.tokenizer.pad_token_id)([short, long])
    n = len(short["input_ids"])
    assert batch["input_ids"].shape == (2, len(long["input_ids"]))
    assert batch["attention_mask"][0, n:].sum() == 0 and batch["attention_mask"][0, :n].all()
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][0, n:] == processor.tokenizer.pad_token_id).all()
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    left = PaddingCollator(processor.tokenizer.pad_token_id, padding_side="left")([short, long])
    assert left["attention_mask"][0, : len(long["input_ids"]) - n].sum() == 0


def test_encoding_equals_the_processors_own_expansion(tmp_path):
    """Our expansion of the image placeholder and our image tensors are exactly what the
    processor produces from text + image, for LLaVA-1.5 and LLaVA-NeXT (whose token count depends
    on the image's size)."""
    import torch

    from mcmdpo.data.conversation import render_conversation
    from mcmdpo.model.loading import load_processor
    from mcmdpo.tiny import TinyModelSpec, write_tiny_checkpoint

    turns = [("Given an image.\nContext:\nA post", "A red square.")]
    for architecture in ("llava", "llava_next"):
        path = write_tiny_checkpoint(tmp_path / architecture, TinyModelSpec(architecture=architecture))
        processor = load_processor(str(path), image_aspect_ratio="anyres")
        for size in ((64, 64), (80, 30), (20, 90)):
            image = Image.new("RGB", size, (10, 200, 10))
            inputs = ImageInputs(("pixel_values", "image_sizes")) if architecture == "llava_next" else LLAVA
            ours = encode_conversation(processor, image, turns, inputs)
            text, _ = render_conversation(processor, turns)
            theirs = processor(text=[text], images=[image], return_tensors="pt")
            assert ours["input_ids"] == theirs["input_ids"][0].tolist(), (architecture, size)
            for key in theirs:
                if key not in ("input_ids", "attention_mask"):
                    torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)
