"""The model-family matrix: every capability on every declared family, each with its tiny
real-shape checkpoint (real tokenizer where a package ships one, the published processor settings
and chat template, tiny random weights), through the same entry points users run."""

from __future__ import annotations

import json
import shutil
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from mcmdpo.data import load_examples
from mcmdpo.data.conversation import IGNORE_INDEX, render_conversation
from mcmdpo.data.image_inputs import encode_image, frames_per_patch
from mcmdpo.data.negatives import NEGATIVE_IMAGE_TYPES, diffuse_pixels
from mcmdpo.preference.dataset import NegativeConfig, PreferenceDataset
from mcmdpo.eval.inference import main as inference_main
from mcmdpo.eval.preferences import evaluate_preferences
from mcmdpo.model import ARCHITECTURES, family_for, load_family, load_model, load_processor
from mcmdpo.model.families import BY_NAME
from mcmdpo.model.processors import load_checkpoint_processor
from mcmdpo.tiny import TinyModelSpec, write_tiny_checkpoint
from mcmdpo.train.cli import main as train_main
from mcmdpo.preference.layout import DPO_LAYOUT, MCMDPO_LAYOUT, MCMDPO_TERMS
from mcmdpo.preference.losses import PreferenceLoss
from mcmdpo.preference.packing import sequence_packing

# Each family under the image protocol that is its own (LLaVA-1.6's tiles, not the pad protocol
# that runs it as LLaVA-1.5).
PROTOCOL = {name: ("anyres" if name == "llava_next" else "auto") for name in ARCHITECTURES}
COMMON = ["--report_to", "none", "--save_strategy", "no", "--logging_steps", "1", "--dataloader_num_workers", "0", "--seed", "0",
          "--plot", "false", "--max_length", "4096"]
# Large image-token counts on the CPU (Gemma's 896-pixel tower, SmolVLM's 17 crops, OneVision's
# ~1,300 tokens an image): these families are tested in the slow tier (-m slow) alone.
HEAVY = ("gemma3", "smolvlm", "llava_onevision")
FAMILIES = [pytest.param(name, marks=pytest.mark.slow) if name in HEAVY else name for name in ARCHITECTURES]
# Training runs: LLaVA-1.5 in the fast tier, every other family in the slow tier.
TRAINING = [name if name == "llava" else pytest.param(name, marks=pytest.mark.slow) for name in ARCHITECTURES]
NAMES = ["cw_mw_yw", "cw_mw_yl", "cw_ml_yw", "cw_ml_yl", "cl_mw_yw", "cl_mw_yl", "cl_ml_yw", "cl_ml_yl"]


@pytest.fixture(scope="session")
def family_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One tiny checkpoint per family, written on first use."""
    root = tmp_path_factory.mktemp("families")

    class Lazy(dict):
        def __missing__(self, name: str) -> Path:
            self[name] = write_tiny_checkpoint(root / name, TinyModelSpec(architecture=name))
            return self[name]

    return Lazy()


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    from mcmdpo.data.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("family_data"), seed=1, num_sft=8, num_pref_train=6, num_pref_test=4, num_test=3)


def loaded(checkpoint: Path, name: str):
    protocol = PROTOCOL[name]
    return load_processor(str(checkpoint), image_aspect_ratio=protocol), load_family(str(checkpoint), protocol)


@pytest.mark.parametrize("name", FAMILIES)
def test_checkpoint_reloads_through_the_auto_classes(family_checkpoints, name):
    checkpoint = family_checkpoints[name]
    config = json.loads((checkpoint / "config.json").read_text())
    assert family_for(config["model_type"]).name == name
    model = AutoModelForImageTextToText.from_pretrained(checkpoint)
    assert family_for(model.config) is BY_NAME[name]
    processor = load_checkpoint_processor(checkpoint)
    # DataLoader workers started by spawn receive the processor pickled (image-only ones too).
    copy = pickle.loads(pickle.dumps(processor))
    assert type(copy).__name__ == type(processor).__name__ and copy.tokenizer("a b")["input_ids"] == processor.tokenizer("a b")["input_ids"]
    # Generation stops at the end of an answer's turn, as the template closes it.
    text, spans = render_conversation(processor, [("Q", "A")], with_image=False)
    closing = processor.tokenizer.convert_ids_to_tokens(model.generation_config.eos_token_id)
    assert any(text[: spans[-1][1]].endswith(token) for token in closing), (closing, text)
    # The declaration matches the model: 3-D rotary positions exactly where the model derives them.
    assert hasattr(model.model, "get_rope_index") == (BY_NAME[name].positions == "multimodal_rope")


@pytest.mark.parametrize("name", FAMILIES)
def test_the_eight_sequences_decode_to_their_triples_as_the_processor_encodes_them(family_checkpoints, small_data, name):
    processor, family = loaded(family_checkpoints[name], name)
    examples = load_examples(small_data / "pref_train.json", "preference", small_data / "image", show_progress=False).examples
    dataset = PreferenceDataset(examples, processor, small_data / "image", 8192, family.inputs, NegativeConfig("crop"))
    index = 1
    example, other = examples[index], examples[dataset.negative_context_index(index)]
    item = dataset[index]
    image = example.image.open(small_data / "image")
    clean = encode_image(processor, image, family.inputs)
    for name_, sequence in zip(NAMES, item["sequences"]):
        context = example.question if name_[1] == "w" else other.question
        response = example.chosen if name_[-1] == "w" else example.rejected
        labelled = processor.tokenizer.decode([t for t in sequence["labels"] if t != IGNORE_INDEX], skip_special_tokens=True)
        assert labelled.strip() == response, name_
        # Exactly the ids and tensors the checkpoint's processor makes of the rendered text and image.
        text, _ = render_conversation(processor, [(context, response)])
        shown = image if name_[4] == "w" else dataset.negative_image(index, image, clean)
        if name_[4] == "w":
            theirs = processor(text=[text], images=[image], return_tensors="pt", add_special_tokens=not text.startswith(processor.tokenizer.bos_token or "\0"))
            assert sequence["input_ids"] == theirs["input_ids"][0].tolist(), name_
            for key in family.inputs.keys:
                torch.testing.assert_close(sequence[key], theirs[key], rtol=0, atol=0)
            # Every per-token input the processor gives (Qwen's and Gemma's image-token flags) rides along too.
            per_token = [k for k, v in theirs.items() if k not in ("input_ids", "attention_mask") and v.shape == theirs["input_ids"].shape]
            assert per_token == ([family.inputs.token_type_key] if family.inputs.token_type_key else []), per_token
            for key in per_token:
                assert sequence[key] == theirs[key][0].tolist(), key
        else:
            assert torch.equal(sequence["pixel_values"], shown.tensors["pixel_values"])
        # Labels on the answer (and its end-of-turn token) only: the prompt and image are masked.
        first = next(i for i, t in enumerate(sequence["labels"]) if t != IGNORE_INDEX)
        assert processor.tokenizer.decode(sequence["input_ids"][:first]).count(context.split("\n")[-1]) == 1


@pytest.mark.parametrize("name", FAMILIES)
def test_diffusion_noise_has_one_law_in_every_family(family_checkpoints, name):
    """i.i.d. noise per pixel and channel of the normalised image: Qwen's two temporal copies of a
    patch get the same noise, so the noisy image is still one image repeated."""
    processor, family = loaded(family_checkpoints[name], name)
    clean = encode_image(processor, Image.new("RGB", (96, 64), (120, 60, 200)), family.inputs).tensors["pixel_values"]
    frames = frames_per_patch(processor)
    assert frames == (2 if name.startswith("qwen") else 1)
    noisy = diffuse_pixels(clean, 700, seed=11, frames_per_patch=frames)
    noise = (noisy - 0.5931 * clean) / 0.8050
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1) < 0.05
    if frames > 1:
        copies = noise.reshape(noise.shape[0], 3, frames, -1)
        assert torch.allclose(copies[:, :, 0], copies[:, :, 1], atol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_packed_step_equals_the_plain_step(family_checkpoints, small_data, name):
    """Also where the model builds its own masks (Gemma 3's bidirectional image attention, its
    sliding-window layers) and positions (Qwen's 3-D rotary positions)."""
    processor, family = loaded(family_checkpoints[name], name)
    examples = load_examples(small_data / "pref_train.json", "preference", small_data / "image", show_progress=False).examples
    dataset = PreferenceDataset(examples, processor, small_data / "image", 8192, family.inputs, NegativeConfig("crop", seed=2))
    items = [dataset[i] for i in range(2)]

    def step(name_):
        step_ = sequence_packing(name_, processor, MCMDPO_LAYOUT, family)
        model = load_model(str(family_checkpoints[name]), image_aspect_ratio=PROTOCOL[name]).train()
        logps = step_.logps(model, step_.collator(items), False)
        losses, _ = PreferenceLoss(MCMDPO_LAYOUT, 0.1)(logps, torch.linspace(-60, -20, logps.numel()).view_as(logps))
        losses.mean().backward()
        return logps.detach(), losses.mean().item(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    plain_logps, plain_loss, plain_grads = step("none")
    packed_logps, packed_loss, packed_grads = step("tree")
    # Per record too: a wrong position (Qwen's 3-D ones) can move the loss by less than its tolerance.
    torch.testing.assert_close(packed_logps, plain_logps, rtol=0, atol=1e-4)
    assert packed_loss == pytest.approx(plain_loss, abs=1e-5)
    assert plain_grads.keys() == packed_grads.keys()
    for key, plain in plain_grads.items():
        torch.testing.assert_close(packed_grads[key], plain, rtol=1e-3, atol=1e-4 * max(1.0, plain.abs().max().item()))


def parameters(path: Path, name: str) -> dict[str, torch.Tensor]:
    model = load_model(str(path), image_aspect_ratio=PROTOCOL[name])
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


@pytest.mark.parametrize("name", TRAINING)
@pytest.mark.timeout(1000)
def test_sft_then_mcmdpo_train_only_what_the_paradigm_trains_and_inference_writes_every_record(
    family_checkpoints, small_data, tmp_path, name
):
    """Paradigm (b): the vision tower frozen in SFT, trained in MCM-DPO. SFT lowers the loss; a few
    MCM-DPO steps (cached reference) log all seven dimensions; inference answers every record."""
    checkpoint = family_checkpoints[name]
    data = ["--image_folder", str(small_data / "image"), "--image_aspect_ratio", PROTOCOL[name], *COMMON]
    sft = tmp_path / "sft"
    assert train_main(["--stage", "sft", "--model_name_or_path", str(checkpoint), "--output_dir", str(sft),
                       "--data_path", str(small_data / "sft_train.json"), "--max_steps", "12", "--learning_rate", "3e-3",
                       "--per_device_train_batch_size", "2", "--train_vision_tower", "false", *data]) == 0
    losses = [entry["loss"] for entry in json.loads((sft / "trainer_state.json").read_text())["log_history"] if "loss" in entry]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    before, after_sft = parameters(checkpoint, name), parameters(sft, name)
    family = BY_NAME[name]
    for key, value in after_sft.items():
        changed = not torch.equal(value, before[key])
        if family.component_of(key) == "vision_tower":
            assert not changed, key

    pref = tmp_path / "mcmdpo"
    assert train_main(["--stage", "mcmdpo", "--model_name_or_path", str(sft), "--output_dir", str(pref),
                       "--data_path", str(small_data / "pref_train.json"), "--max_steps", "2", "--learning_rate", "1e-3",
                       "--per_device_train_batch_size", "1", "--train_vision_tower", "true", "--train_projector", "false",
                       "--reference_cache_dir", str(tmp_path / "cache"), *data]) == 0
    logged = [entry for entry in json.loads((pref / "trainer_state.json").read_text())["log_history"] if "loss" in entry]
    for term in MCMDPO_TERMS:
        assert f"accuracies/{term}" in logged[0] and f"margins/{term}" in logged[0], term
    after = parameters(pref, name)
    changed = {component: False for component in ("vision_tower", "projector", "language_model")}
    for key, value in after.items():
        if not torch.equal(value, after_sft[key]):
            changed[family.component_of(key)] = True
    assert changed == {"vision_tower": True, "projector": False, "language_model": True}

    out = tmp_path / "responses.jsonl"
    assert inference_main(["--model_name", str(pref), "--test_datasets", str(small_data / "test.jsonl"), "--image_folder",
                           str(small_data / "image"), "--eval_output", str(out), "--max_new_tokens", "4", "--num_beams", "1",
                           "--batch_size", "2"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3 and all(isinstance(line["response"], str) for line in lines)
    metrics = evaluate_preferences(pref, small_data / "pref_test.json", small_data / "image", max_length=8192, show_progress=False)
    assert metrics["num_records"] == 4 and all(f"{term}_margin" in metrics for term in MCMDPO_TERMS)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_negative_image_type_builds_for_every_family(family_checkpoints, small_data, name):
    processor, family = loaded(family_checkpoints[name], name)
    examples = load_examples(small_data / "pref_train.json", "preference", small_data / "image", show_progress=False).examples
    for image_type in NEGATIVE_IMAGE_TYPES:
        dataset = PreferenceDataset(examples, processor, small_data / "image", 8192, family.inputs, NegativeConfig(image_type))
        clean, negative = (dataset[0]["sequences"][s] for s in (0, 2))  # (c_w, m_w, y_w), (c_w, m_l, y_w)
        assert set(negative) == set(clean)
        if image_type != "crop":  # the crop window (320 x 240) holds these small images whole
            assert not torch.equal(negative["pixel_values"], clean["pixel_values"]) or image_type == "random" and (
                negative["input_ids"] != clean["input_ids"]
            ), image_type


@pytest.mark.parametrize("name", TRAINING)
def test_dpo_with_lora_adapts_the_language_model_only(family_checkpoints, small_data, tmp_path, name):
    """LoRA adapters on the language model's linear layers (never the vision tower's), the
    reference being the policy with its adapters off."""
    out = tmp_path / "lora"
    assert train_main(["--stage", "dpo", "--model_name_or_path", str(family_checkpoints[name]), "--output_dir", str(out),
                       "--data_path", str(small_data / "pref_train.json"), "--image_folder", str(small_data / "image"),
                       "--image_aspect_ratio", PROTOCOL[name], "--max_steps", "1", "--per_device_train_batch_size", "1",
                       "--use_lora", "true", "--lora_r", "4", "--train_vision_tower", "true", "--train_projector", "true",
                       "--precompute_reference_logps", "false", *COMMON]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    family = BY_NAME[name]
    assert config["target_modules"] and all(family.component_of(module) == "language_model" for module in config["target_modules"])
    # The projector and the vision tower train in full beside the adapters (their containers split into modules).
    saved = {family.component_of(module) for module in config["modules_to_save"]}
    assert saved == {"vision_tower", "projector"}


@pytest.mark.parametrize("name", FAMILIES)
def test_a_text_only_sft_batch_carries_a_masked_blank_image_that_changes_nothing(family_checkpoints, name):
    from mcmdpo.data.collate import PaddingCollator, SFTCollator
    from mcmdpo.data.conversation import encode_conversation
    from mcmdpo.data.sft_dataset import SFTDataset

    processor, family = loaded(family_checkpoints[name], name)
    features = [encode_conversation(processor, None, [(f"Say {i}.", f"{i} and {i}.")], family.inputs) for i in range(2)]
    blank_image, blank_tokens = SFTDataset([], processor, None, 2048, family.inputs).blank_image()
    with_blank = SFTCollator(processor.tokenizer.pad_token_id, blank_image=blank_image, blank_tokens=blank_tokens)(features)
    plain = PaddingCollator(processor.tokenizer.pad_token_id)(features)
    assert "pixel_values" in with_blank and "pixel_values" not in plain
    model = load_model(str(family_checkpoints[name]), image_aspect_ratio=PROTOCOL[name]).eval()
    with torch.no_grad():
        assert model(**with_blank).loss.item() == pytest.approx(model(**plain).loss.item(), abs=1e-6)


@pytest.mark.slow
def test_gemmas_sliding_window_and_image_blocks_hold_in_the_packed_step(family_checkpoints, small_data):
    """A window shorter than the sequences (the tiny config's 512 never bites): it changes the
    log-probs, and the packed step still equals the plain one."""
    processor, family = loaded(family_checkpoints["gemma3"], "gemma3")
    examples = load_examples(small_data / "pref_train.json", "preference", small_data / "image", show_progress=False).examples
    dataset = PreferenceDataset(examples, processor, small_data / "image", 8192, family.inputs, NegativeConfig(), DPO_LAYOUT)
    items = [dataset[i] for i in range(2)]
    model = load_model(str(family_checkpoints["gemma3"])).eval()
    logps = {}
    for window in (512, 48):
        model.config.get_text_config().sliding_window = window
        for packing_name in ("none", "tree"):
            packing = sequence_packing(packing_name, processor, DPO_LAYOUT, family)
            with torch.no_grad():
                logps[window, packing_name] = packing.logps(model, packing.collator(items), False)
    assert (logps[48, "none"] - logps[512, "none"]).abs().max() > 1e-2
    for window in (512, 48):
        torch.testing.assert_close(logps[window, "tree"], logps[window, "none"], rtol=0, atol=1e-4)


def test_llavas_vicuna_template_on_another_family_is_a_clear_error(family_checkpoints):
    from mcmdpo.model import CheckpointError

    with pytest.raises(CheckpointError, match="vicuna_v1 is LLaVA's.*<\\|image_pad\\|>"):
        load_processor(str(family_checkpoints["qwen2_5_vl"]), conversation_template="vicuna_v1")
    with pytest.raises(CheckpointError, match="pad is LLaVA's protocol"):
        load_processor(str(family_checkpoints["qwen2_5_vl"]), image_aspect_ratio="pad")


def test_a_record_holding_the_models_own_image_placeholder_is_named(family_checkpoints, small_data, tmp_path, capsys):
    """Validation rejects "<image>" in text; Qwen's placeholder is caught by the length check,
    before training, with the record named."""
    records = json.loads((small_data / "pref_train.json").read_text())
    text = json.loads(records[2]["text"])
    records[2]["text"] = json.dumps({**text, "question": text["question"] + " <|image_pad|>"})
    data = tmp_path / "pref.json"
    data.write_text(json.dumps(records))
    assert train_main(["--stage", "dpo", "--model_name_or_path", str(family_checkpoints["qwen2_5_vl"]), "--output_dir",
                       str(tmp_path / "out"), "--data_path", str(data), "--image_folder", str(small_data / "image"),
                       "--max_steps", "1", *COMMON]) == 2
    error = capsys.readouterr().err
    assert "idx=2" in error and "image placeholder '<|image_pad|>'" in error and "found 2" in error


@pytest.mark.parametrize("name", TRAINING)
def test_resume_from_a_checkpoint_continues_exactly(family_checkpoints, small_data, tmp_path, name):
    """Every family's checkpoint (saved under its original key names) resumes with its own weights,
    vision tower trained: the losses after the checkpoint equal an uninterrupted run's."""
    checkpoint = family_checkpoints[name]
    common = ["--stage", "sft", "--model_name_or_path", str(checkpoint), "--data_path", str(small_data / "sft_train.json"),
              "--image_folder", str(small_data / "image"), "--image_aspect_ratio", PROTOCOL[name], "--max_steps", "3",
              "--learning_rate", "1e-3", "--per_device_train_batch_size", "2", "--train_vision_tower", "true",
              *COMMON, "--save_strategy", "steps", "--save_steps", "2"]  # the later --save_strategy wins
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert train_main([*common, "--output_dir", str(full)]) == 0
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")
    assert train_main([*common, "--output_dir", str(resumed), "--resume_from_checkpoint", str(resumed / "checkpoint-2")]) == 0

    def losses(output):
        return {e["step"]: e["loss"] for e in json.loads((output / "trainer_state.json").read_text())["log_history"] if "loss" in e}

    assert losses(resumed)[3] == pytest.approx(losses(full)[3], abs=1e-6)
