"""The model layer: tiny checkpoints load through the Auto classes, round-trip exactly, and each
component freezes on its own."""

from __future__ import annotations

import copy

import subprocess
import sys

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from mcmdpo.data.collate import PaddingCollator
from mcmdpo.data.conversation import encode_conversation
from mcmdpo.data.templates import VICUNA_V1_CHAT_TEMPLATE, VICUNA_V1_SYSTEM
from mcmdpo.data.image_inputs import ImageInputs
from mcmdpo.model import load_family, load_model, load_processor, set_trainable_components
from mcmdpo.model.families import BY_NAME

component_of = BY_NAME["llava"].component_of
from mcmdpo.tiny import TinyModelSpec, write_tiny_checkpoint


def _batch(processor, inputs=ImageInputs()):
    image = Image.new("RGB", (48, 32), (200, 30, 30))
    features = [encode_conversation(processor, image, [("Describe the image.", "A red square.")], inputs)]
    return PaddingCollator(processor.tokenizer.pad_token_id)(features)


@pytest.mark.slow
def test_tiny_factory_cli_writes_a_complete_checkpoint(tmp_path):
    out = tmp_path / "tiny"
    result = subprocess.run([sys.executable, "-m", "mcmdpo.tiny", "--output_dir", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "chat_template.jinja"):
        assert (out / name).is_file(), name
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert processor.image_processor.do_pad  # LLaVA's "pad" aspect ratio


def test_chat_template_is_vicuna_v1(processor):
    """The plain tiny model's template is Vicuna v1 without a system prompt; LLaVA checkpoints get
    the original's, system prompt included (``auto``), and a system message replaces it."""
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A."}]},
    ]
    assert processor.apply_chat_template(messages, tokenize=False) == "USER: <image>\nQ? ASSISTANT: A.</s>"
    assert processor.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True) == "USER: <image>\nQ? ASSISTANT:"
    system = [{"role": "system", "content": "Be brief."}, *messages[:1]]
    assert processor.apply_chat_template(system, tokenize=False, add_generation_prompt=True) == "Be brief. USER: <image>\nQ? ASSISTANT:"
    original = copy.deepcopy(processor)  # the fixture is shared
    original.chat_template = VICUNA_V1_CHAT_TEMPLATE
    assert original.apply_chat_template(messages, tokenize=False) == f"{VICUNA_V1_SYSTEM} USER: <image>\nQ? ASSISTANT: A.</s>"


def test_tokenizer_round_trips_arbitrary_text(processor):
    text = "Ünïcödé, emoji 🍋 and pH 7 — all kept."
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert processor.tokenizer.decode(ids) == text


@pytest.mark.parametrize(
    "architecture, protocol, model_class",
    [
        ("llava", "pad", "LlavaForConditionalGeneration"),
        ("llava_next", "anyres", "LlavaNextForConditionalGeneration"),
        # LLaVA-1.6 under the pad protocol is the LLaVA-1.5 architecture, and is saved as one.
        ("llava_next", "pad", "LlavaForConditionalGeneration"),
    ],
)
def test_save_and_reload_gives_identical_outputs(tmp_path, architecture, protocol, model_class):
    path = write_tiny_checkpoint(tmp_path / "ckpt", TinyModelSpec(architecture=architecture))
    model, processor = load_model(str(path), image_aspect_ratio=protocol), load_processor(str(path), image_aspect_ratio=protocol)
    assert type(model).__name__ == model_class
    inputs = load_family(str(path), protocol).inputs
    batch = _batch(processor, inputs)
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
    model.save_pretrained(tmp_path / "again")
    processor.save_pretrained(tmp_path / "again")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        after = reloaded(**_batch(AutoProcessor.from_pretrained(tmp_path / "again"), inputs)).logits
    torch.testing.assert_close(before, after, rtol=0, atol=0)
    assert reloaded.config.image_aspect_ratio == protocol  # recorded, so inference uses what training used
    assert load_processor(str(tmp_path / "again")).image_processor.image_aspect_ratio == protocol


def test_component_of_names():
    assert component_of("model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight") == "vision_tower"
    assert component_of("base_model.model.model.vision_tower.x") == "vision_tower"
    assert component_of("model.multi_modal_projector.linear_1.weight") == "projector"
    assert component_of("model.image_newline") == "projector"
    assert component_of("model.language_model.layers.0.self_attn.q_proj.weight") == "language_model"
    assert component_of("lm_head.weight") == "language_model"


@pytest.mark.parametrize("vision, projector, language", [(False, True, True), (True, True, True), (False, False, True), (True, False, False)])
def test_each_component_freezes_alone(tiny_checkpoint, vision, projector, language):
    model = load_model(str(tiny_checkpoint))
    counts = set_trainable_components(model, vision, projector, language)
    totals = {"vision_tower": 0, "projector": 0, "language_model": 0}
    for name, parameter in model.named_parameters():
        totals[component_of(name)] += parameter.numel()
    expected = {"vision_tower": vision, "projector": projector, "language_model": language}
    assert counts == {name: totals[name] if expected[name] else 0 for name in totals}
    assert all(totals.values())
    # Gradients reach the trainable components and nothing else. (LLaVA reads the vision tower's
    # second-to-last layer, so its last layer never gets a gradient even when trainable.)
    processor = load_processor(str(tiny_checkpoint))
    model(**_batch(processor)).loss.backward()
    reached = {name: False for name in totals}
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            assert expected[component_of(name)], name
            reached[component_of(name)] = True
    assert reached == expected


def test_like_and_a_different_architecture_is_an_error():
    with pytest.raises(ValueError, match="llava-1.5-7b is a llava checkpoint, not qwen2_5_vl"):
        TinyModelSpec(like="llava-1.5-7b", architecture="qwen2_5_vl")
