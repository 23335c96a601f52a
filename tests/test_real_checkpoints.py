"""The paper's recipe as a real checkpoint sees it: the LLaMA-2 tokenizer from its registry
package, the published llava-hf processor settings and chat templates, the real upstream sample
images, and the original's image protocol, prompt and negatives."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from conftest import UPSTREAM_SAMPLES
from mcmdpo.data import load_examples
from mcmdpo.data.conversation import IGNORE_INDEX, encode_conversation
from mcmdpo.data.image_inputs import ImageInputs, encode_image
from mcmdpo.data.lengths import check_lengths
from mcmdpo.data.negatives import crop_size, negative_image_seed
from mcmdpo.preference.dataset import NegativeConfig, PreferenceDataset
from mcmdpo.data.templates import VICUNA_V1_SYSTEM
from mcmdpo.model.loading import load_processor
from mcmdpo.tiny.published import IMAGE_TOKEN_ID, LLAVA_HF_CHAT_TEMPLATE, PAD_TOKEN_ID, PUBLISHED
from mcmdpo.tiny.real_tokenizers import llama2_backend
from mcmdpo.tiny import TinyModelSpec, write_tiny_checkpoint

LIKE = ("llava-1.5-7b", "llava-v1.6-vicuna-7b")

LLAVA, LLAVA_NEXT = ImageInputs(), ImageInputs(("pixel_values", "image_sizes"))


def pixels(processor, image):
    return encode_image(processor, image, LLAVA).tensors["pixel_values"]


def upstream(*parts: str):
    """A path under ../shared/upstream-samples; skipped where that folder is absent, except in CI."""
    if not UPSTREAM_SAMPLES.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{UPSTREAM_SAMPLES} is missing in CI")
        pytest.skip(f"{UPSTREAM_SAMPLES} is absent")
    return UPSTREAM_SAMPLES.joinpath(*parts)


@pytest.fixture(scope="session")
def like_checkpoints(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("like")
    return {name: write_tiny_checkpoint(root / name, TinyModelSpec(like=name)) for name in LIKE}


@pytest.fixture(scope="module")
def twitter_train():
    """The real Twitter preference sample and its image folder."""
    folder = upstream("twitter")
    images = folder / "image" / "twitter_train"
    return load_examples(folder / "twitter_train.json", "preference", images, show_progress=False), images


def test_the_tokenizer_is_llama2s():
    backend = llama2_backend()
    # Ids LLaMA-2's sentencepiece tokenizer gives (llama-tokenizer-js's own tests, and Meta's).
    assert backend.encode("Hello world!").ids == [1, 15043, 3186, 29991]
    assert backend.encode("grabbed").ids == [1, 2646, 1327, 287]
    assert backend.encode("           grabbed").ids == [1, 9651, 2646, 1327, 287]
    assert backend.encode("ax\n####\nboo").ids == [1, 4853, 13, 4136, 13, 833, 29877]
    assert backend.encode("🦙Ꙋ").ids == [1, 29871, 243, 162, 169, 156, 237, 156, 141]
    assert backend.get_vocab_size() == 32000


@pytest.mark.parametrize("name", LIKE)
def test_like_checkpoints_load_through_the_auto_classes(like_checkpoints, name):
    path = like_checkpoints[name]
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    expected = "LlavaNextForConditionalGeneration" if PUBLISHED[name].architecture == "llava_next" else "LlavaForConditionalGeneration"
    assert type(model).__name__ == expected
    assert model.config.image_token_id == IMAGE_TOKEN_ID and model.config.text_config.vocab_size == 32064
    tokenizer = processor.tokenizer
    assert tokenizer.convert_tokens_to_ids(["<image>", "<pad>"]) == [IMAGE_TOKEN_ID, PAD_TOKEN_ID]
    assert tokenizer("Hello world!").input_ids == [1, 15043, 3186, 29991]
    assert processor.chat_template == LLAVA_HF_CHAT_TEMPLATE
    assert model.config.vision_config.image_size == 336 and model.config.vision_config.patch_size == 14
    if expected == "LlavaNextForConditionalGeneration":
        assert model.config.image_grid_pinpoints == [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


@pytest.mark.parametrize("name", LIKE)
def test_pad_gives_576_image_tokens_on_every_real_sample_image(like_checkpoints, name):
    processor = load_processor(str(like_checkpoints[name]), image_aspect_ratio="pad")
    images = sorted(p for p in upstream().rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    assert len(images) >= 30
    anyres = load_processor(str(like_checkpoints[name]), image_aspect_ratio="anyres")
    for path in images:
        with Image.open(path) as image:
            image = image.convert("RGB")
        encoded = encode_image(processor, image, LLAVA)
        assert encoded.replacement == "<image>" * 576 and tuple(encoded.tensors["pixel_values"].shape) == (1, 3, 336, 336), path
        if name == "llava-v1.6-vicuna-7b" and image.width != image.height:
            tiles = encode_image(anyres, image, LLAVA_NEXT).replacement
            assert tiles.count("<image>") > 1200  # tiles: what pad protects from


def test_pad_is_the_originals_expand2square(like_checkpoints):
    """Pad to a square with the mean colour (122, 116, 104) centred, as expand2square does, then
    CLIP's resize (bicubic) and normalisation."""
    processor = load_processor(str(like_checkpoints["llava-v1.6-vicuna-7b"]), image_aspect_ratio="pad")
    image = Image.new("RGB", (500, 300), (200, 30, 40))
    square = Image.new("RGB", (500, 500), (122, 116, 104))
    square.paste(image, (0, 100))
    resized = torch.from_numpy(np.asarray(square.resize((336, 336), Image.BICUBIC), dtype=np.float32))
    mean, std = torch.tensor(processor.image_processor.image_mean), torch.tensor(processor.image_processor.image_std)
    expected = ((resized / 255 - mean) / std).permute(2, 0, 1)
    torch.testing.assert_close(pixels(processor, image), expected[None], rtol=0, atol=2e-2)


@pytest.mark.parametrize("tokenizer", ["as loaded", "LlamaTokenizer legacy=False", "LlamaTokenizer legacy=True"])
def test_training_sequences_equal_the_original_rendering(like_checkpoints, twitter_train, tmp_path, tokenizer):
    """Token for token: LLaVA's conv_vicuna_v1 text, split at <image>, each piece tokenised on its
    own by the LLaMA-2 tokenizer (the first with BOS), 576 image tokens; labels from the first
    answer token through </s>. The same ids however transformers builds the tokenizer: from the
    checkpoint folder (tokenizer.json's own pipeline), or as a LlamaTokenizer rebuilt from the
    `legacy` flag (with legacy=False no "▁" follows <image> when the text is tokenised whole)."""
    path = like_checkpoints["llava-v1.6-vicuna-7b"]
    processor = load_processor(str(path), image_aspect_ratio="pad")
    if tokenizer != "as loaded":
        from transformers import LlamaTokenizer

        legacy = tokenizer.endswith("True")
        config = json.loads((path / "tokenizer_config.json").read_text())
        (tmp_path / "tokenizer").mkdir()
        (tmp_path / "tokenizer" / "tokenizer.json").write_bytes((path / "tokenizer.json").read_bytes())
        (tmp_path / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({**config, "legacy": legacy}))
        processor.tokenizer = LlamaTokenizer.from_pretrained(tmp_path / "tokenizer")
        scheme = "always" if legacy else "first"
        assert f"prepend_scheme={scheme}" in str(processor.tokenizer.backend_tokenizer.pre_tokenizer)
    backend = llama2_backend()
    loaded, images = twitter_train
    dataset = PreferenceDataset(loaded.examples, processor, images, 2048, LLAVA, NegativeConfig())
    for index in range(len(dataset)):
        example = loaded.examples[index]
        item = dataset[index]
        for sequence, answer in ((item["sequences"][0], example.chosen), (item["sequences"][1], example.rejected)):
            text = f"{VICUNA_V1_SYSTEM} USER: <image>\n{example.question.strip()} ASSISTANT: {answer}</s>"
            before, after = text.split("<image>")
            prompt = backend.encode(f"{VICUNA_V1_SYSTEM} USER: <image>\n{example.question.strip()} ASSISTANT:".split("<image>")[1]).ids[1:]
            expected = backend.encode(before).ids + [IMAGE_TOKEN_ID] * 576 + backend.encode(after).ids[1:]
            assert sequence["input_ids"] == expected
            first = len(backend.encode(before).ids) + 576 + len(prompt)
            assert sequence["labels"] == [IGNORE_INDEX] * first + expected[first:]
            assert expected[-1] == 2 and expected[-2] != 29871  # </s> right after the answer, no stray space token
            assert processor.tokenizer.decode(expected[first:]) == f"{answer.strip()}</s>" or answer != answer.strip()


def test_negative_images_as_the_original_makes_them(like_checkpoints, twitter_train):
    processor = load_processor(str(like_checkpoints["llava-1.5-7b"]), image_aspect_ratio="pad")
    loaded, folder = twitter_train
    examples = loaded.examples

    def negative(image_type: str, epoch: int = 0, fixed: bool = False, position: int = 1) -> torch.Tensor:
        dataset = PreferenceDataset(examples, processor, folder, 2048, LLAVA, NegativeConfig(image_type, seed=3, fixed=fixed))
        dataset.set_negatives_epoch(epoch)
        return dataset[position]["sequences"][2]["pixel_values"]  # (c_w, m_l, y_w)

    image = examples[1].image.open(folder)
    assert image.height > 320 and image.width > 240
    clean = pixels(processor, image)
    # black: zeros of the normalised tensor, i.e. the mean colour, not black pixels.
    assert torch.equal(negative("black"), torch.zeros_like(clean))
    # rotate: an angle in [10, 80] counter-clockwise, nearest neighbour, black corners, same size.
    angle = random.Random(negative_image_seed(3, 1, 0)).uniform(10, 80)
    assert 10 <= angle <= 80
    rotated = image.rotate(angle, resample=Image.NEAREST, expand=False, fillcolor=(0, 0, 0))
    torch.testing.assert_close(negative("rotate"), pixels(processor, rotated), rtol=0, atol=0)
    # crop: a window min(H, 320) tall and min(W, 240) wide, at a seeded position.
    rng = random.Random(negative_image_seed(3, 1, 0))
    height, width = crop_size(image.height, image.width)
    assert (height, width) == (320, 240)
    top, left = rng.randint(0, image.height - height), rng.randint(0, image.width - width)
    cropped = image.crop((left, top, left + width, top + height))
    torch.testing.assert_close(negative("crop"), pixels(processor, cropped), rtol=0, atol=0)
    # random: the image of the record that supplies the negative context.
    dataset = PreferenceDataset(examples, processor, folder, 2048, LLAVA, NegativeConfig("random", seed=3))
    partner = examples[dataset.negative_context_index(1)]
    torch.testing.assert_close(negative("random"), pixels(processor, partner.image.open(folder)))
    item = dataset[1]
    assert processor.tokenizer.decode(item["sequences"][4]["input_ids"]).count(partner.question.strip()[:40]) == 1
    # diffusion: new noise every epoch, the same noise for the same seed, record and epoch.
    assert not torch.equal(negative("diffusion", epoch=0), negative("diffusion", epoch=1))
    assert torch.equal(negative("diffusion", epoch=1), negative("diffusion", epoch=1))
    assert not torch.equal(negative("rotate", epoch=0), negative("rotate", epoch=1))
    # --fixed_negatives: one draw for the whole run.
    assert torch.equal(negative("diffusion", epoch=0, fixed=True), negative("diffusion", epoch=1, fixed=True))


def test_an_other_records_context_that_swallows_the_answer_is_reported(processor, synthetic_dir):
    """Record 0's question is short, but the record that lends it its negative context has a
    long one: the (c_l, ., .) sequences of record 0 would keep no answer token."""
    loaded = load_examples(synthetic_dir / "pref_train.json", "preference", synthetic_dir / "image", show_progress=False)
    sizes = loaded.image_sizes[:6]

    def report_of(records):
        dataset = PreferenceDataset(records, processor, synthetic_dir / "image", 260, LLAVA, NegativeConfig())
        return dataset, check_lengths(dataset, sizes, show_progress=False)

    # At 260 tokens every record fits with its own and its lender's context...
    _, before = report_of(loaded.examples[:6])
    assert before.dropped == [] and before.kept == list(range(6))
    # ...until the lender's context grows: record 0's (c_l, ., .) sequences would keep no answer.
    lender = report_of(loaded.examples[:6])[0].negative_context_index(0)
    examples = list(loaded.examples[:6])
    examples[lender] = type(examples[lender])(**{**examples[lender].__dict__, "question": examples[lender].question + " padding" * 120})
    dataset, report = report_of(examples)
    assert examples[0].idx in report.dropped and 0 not in report.kept
    assert report.as_dict()["dropped"] == len(report.dropped) >= 2  # record 0 and the lender itself
    dataset.keep = report.kept
    for index in range(len(dataset)):  # nothing kept trains any sequence on zero answer tokens
        for sequence in dataset[index]["sequences"]:
            assert any(label != IGNORE_INDEX for label in sequence["labels"])


def test_the_checkpoints_own_template_gets_no_stray_space_before_eos(like_checkpoints):
    """llava-hf's template ends an answer with a space and no </s>: the </s> we add follows the
    answer directly, as in the original, not a lone "▁" token."""
    processor = load_processor(str(like_checkpoints["llava-1.5-7b"]), image_aspect_ratio="pad", conversation_template="checkpoint")
    assert processor.chat_template == LLAVA_HF_CHAT_TEMPLATE
    features = encode_conversation(processor, Image.new("RGB", (400, 300)), [("Describe it.", "A grey box.")], LLAVA)
    ids = features["input_ids"]
    assert ids[-1] == 2 and ids[-2] != 29871
    assert processor.tokenizer.decode([t for t in features["labels"] if t != IGNORE_INDEX]) == "A grey box.</s>"
    assert processor.tokenizer.decode([t for t in ids if t != IMAGE_TOKEN_ID]).endswith("\nDescribe it. ASSISTANT: A grey box.</s>")
