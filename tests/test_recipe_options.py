"""The upstream recipe's options: per-component learning rates, text-only SFT records, QLoRA's
clear error without a GPU, the data report, and one command per paradigm."""

from __future__ import annotations

import json
import os
import subprocess
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForImageTextToText

from conftest import REPO_ROOT
from mcmdpo.model import load_model
from mcmdpo.train.cli import main
from mcmdpo.train.optimizer import component_parameter_groups

COMMON = ["--save_strategy", "no", "--use_cpu", "true", "--dataloader_num_workers", "0", "--seed", "0", "--report_to", "none"]


def weights(path) -> dict[str, torch.Tensor]:
    """A checkpoint's parameters by their model names (as the Auto classes load them)."""
    return {name: value.detach() for name, value in AutoModelForImageTextToText.from_pretrained(path).named_parameters()}


def test_each_component_gets_its_learning_rate(tiny_checkpoint):
    model = load_model(str(tiny_checkpoint))
    args = SimpleNamespace(learning_rate=1e-3, vision_tower_lr=1e-5, projector_lr=5e-4, weight_decay=0.1)
    decay = {name for name, _ in model.named_parameters() if name.endswith("weight") and "norm" not in name}
    groups = component_parameter_groups(model, decay, args)
    rate_of = {id(p): group["lr"] for group in groups for p in group["params"]}
    decay_of = {id(p): group["weight_decay"] for group in groups for p in group["params"]}
    for name, parameter in model.named_parameters():
        expected = 1e-5 if "vision_tower" in name else 5e-4 if "multi_modal_projector" in name else 1e-3
        assert rate_of[id(parameter)] == expected, name
        assert decay_of[id(parameter)] == (0.1 if name in decay else 0.0), name
    # Unset, every component trains at the main rate, as the original does.
    same = component_parameter_groups(model, decay, SimpleNamespace(learning_rate=1e-3, vision_tower_lr=None, projector_lr=None, weight_decay=0.0))
    assert {group["lr"] for group in same} == {1e-3}


def test_component_learning_rates_in_training(tiny_checkpoint, synthetic_dir, tmp_path):
    """The projector at a rate of 0 does not move; the language model does."""
    out = tmp_path / "sft"
    argv = ["--stage", "sft", "--model_name_or_path", str(tiny_checkpoint), "--data_path", str(synthetic_dir / "sft_train.json"),
            "--image_folder", str(synthetic_dir / "image"), "--output_dir", str(out), "--max_steps", "2",
            "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--projector_lr", "0", "--vision_tower_lr", "1e-3",
            "--lr_scheduler_type", "constant", *COMMON]
    assert main(argv) == 0
    start, saved = weights(tiny_checkpoint), weights(out)
    projector = [k for k in saved if "multi_modal_projector" in k]
    assert projector and all(torch.equal(start[k], saved[k]) for k in projector)
    assert not torch.equal(start["lm_head.weight"], saved["lm_head.weight"])
    # The paper's default: the vision tower trains too (paradigm (d)).
    tower = [k for k in saved if "vision_tower" in k and "layers.0." in k]
    assert any(not torch.equal(start[k], saved[k]) for k in tower)
    report = json.loads((out / "data_report.json").read_text())
    assert report["records"] == 256 and report["kept"] == 256 and report["image_tokens"]["median"] == 16


def test_text_only_sft_records_train_beside_image_records(tiny_checkpoint, synthetic_dir, tmp_path):
    records = json.loads((synthetic_dir / "sft_train.json").read_text())[:6]
    text_only = [{"id": f"t{i}", "conversations": [{"from": "human", "value": f"Say {i}."}, {"from": "gpt", "value": f"{i}."}]} for i in range(6)]
    data = tmp_path / "mixed.json"
    data.write_text(json.dumps([row for pair in zip(records, text_only) for row in pair]))
    out = tmp_path / "sft"
    argv = ["--stage", "sft", "--model_name_or_path", str(tiny_checkpoint), "--data_path", str(data),
            "--image_folder", str(synthetic_dir / "image"), "--output_dir", str(out), "--max_steps", "3",
            "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--logging_steps", "1", *COMMON]
    # Batches of two: mixed ones, and (with --train_sampling_strategy sequential) text-only ones.
    assert main(argv) == 0
    assert main([*argv[:-len(COMMON)], "--output_dir", str(tmp_path / "seq"), "--train_sampling_strategy", "sequential", *COMMON]) == 0
    losses = [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(losses) == 3 and all(loss == loss for loss in losses)
    report = json.loads((out / "data_report.json").read_text())
    assert report["records"] == 12 and report["kept"] == 12 and report["image_tokens"] == {"min": 16, "median": 16, "max": 16}


def test_a_text_only_batch_carries_a_masked_blank_image_that_changes_nothing(tiny_checkpoint, processor):
    """The blank image's tokens sit after the first row's last token, masked: the loss is the
    loss of the text alone, and the forward runs the vision tower like every image batch."""
    from mcmdpo.data.collate import PaddingCollator, SFTCollator
    from mcmdpo.data.conversation import encode_conversation
    from mcmdpo.data.sft_dataset import SFTDataset

    from mcmdpo.data.image_inputs import ImageInputs

    features = [encode_conversation(processor, None, [(f"Say {i}.", f"{i} and {i}.")], ImageInputs()) for i in range(3)]
    blank_image, blank_tokens = SFTDataset([], processor, None, 2048, ImageInputs()).blank_image()
    collate = SFTCollator(processor.tokenizer.pad_token_id, blank_image=blank_image, blank_tokens=blank_tokens)
    with_blank = collate(features)
    plain = PaddingCollator(processor.tokenizer.pad_token_id)(features)
    assert "pixel_values" in with_blank and "pixel_values" not in plain
    assert (with_blank["input_ids"][0] == processor.image_token_id).sum() == 16
    model = load_model(str(tiny_checkpoint)).eval()
    with torch.no_grad():
        assert model(**with_blank).loss.item() == pytest.approx(model(**plain).loss.item(), abs=1e-6)
    # A batch with an image is left as it is.
    image_batch = collate(
        [encode_conversation(processor, __import__("PIL.Image").Image.new("RGB", (32, 32)), [("Q", "A.")], ImageInputs()), features[0]]
    )
    assert image_batch["pixel_values"].shape[0] == 1


def test_training_can_start_from_lora_adapters(tiny_checkpoint, synthetic_dir, tmp_path):
    """An adapter folder (e.g. a LoRA SFT stage) is merged into its base when loaded, so the next
    stage trains and saves a whole model (or new adapters) as usual."""
    common = ["--data_path", str(synthetic_dir / "sft_train.json"), "--image_folder", str(synthetic_dir / "image"),
              "--max_steps", "1", "--per_device_train_batch_size", "2", "--learning_rate", "1e-2", *COMMON]
    assert main(["--stage", "sft", "--model_name_or_path", str(tiny_checkpoint), "--output_dir", str(tmp_path / "lora"),
                 "--use_lora", "true", "--lora_r", "4", *common]) == 0
    merged = load_model(str(tmp_path / "lora"))
    assert type(merged).__name__ == "LlavaForConditionalGeneration" and not any("lora" in n for n, _ in merged.named_parameters())
    assert main(["--stage", "sft", "--model_name_or_path", str(tmp_path / "lora"), "--output_dir", str(tmp_path / "full"), *common]) == 0
    assert (tmp_path / "full" / "model.safetensors").is_file() and not (tmp_path / "full" / "adapter_config.json").exists()


def test_explicit_vicuna_v1_is_the_originals_template(tiny_checkpoint):
    """--conversation_template vicuna_v1 renders what LLaVA's conv_vicuna_v1 (SeparatorStyle.TWO)
    does, written out here by hand: the system prompt, " " after it and after each question,
    "</s>" after each answer, the image turn's text stripped after "<image>\\n" (LLaVA's
    preprocess_multimodal); ``auto`` keeps the tiny checkpoint's own template (no system prompt)."""
    from mcmdpo.data.conversation import render_conversation, render_prompt
    from mcmdpo.model import load_processor

    system = ("A chat between a curious user and an artificial intelligence assistant. "
              "The assistant gives helpful, detailed, and polite answers to the user's questions.")
    turns = [("  What is in the picture?\n", "A red square."), ("And its colour?", "Red.")]
    original = load_processor(str(tiny_checkpoint), conversation_template="vicuna_v1")
    text, spans = render_conversation(original, turns)
    assert text == (f"{system} USER: <image>\nWhat is in the picture? ASSISTANT: A red square.</s>"
                    "USER: And its colour? ASSISTANT: Red.</s>")
    assert [text[start:end] for start, end in spans] == [" A red square.</s>", " Red.</s>"]
    assert render_prompt(original, "Describe it.") == f"{system} USER: <image>\nDescribe it. ASSISTANT:"
    assert render_prompt(original, "Describe it.", with_image=False) == f"{system} USER: Describe it. ASSISTANT:"
    own = load_processor(str(tiny_checkpoint))  # auto
    assert render_prompt(own, "Describe it.") == "USER: <image>\nDescribe it. ASSISTANT:"


def test_qlora_without_a_gpu_is_a_clear_error_before_loading(capsys, tmp_path):
    code = main(["--stage", "sft", "--model_name_or_path", str(tmp_path / "not-loaded"), "--data_path", "x.json",
                 "--output_dir", str(tmp_path), "--use_lora", "true", "--bits", "4"])
    err = capsys.readouterr().err
    assert code == 2 and "--bits 4|8 (QLoRA) needs a CUDA GPU" in err and "not-loaded" not in err
    assert main(["--stage", "sft", "--model_name_or_path", "m", "--data_path", "x", "--output_dir", str(tmp_path), "--bits", "4"]) == 2
    assert "add --use_lora true" in capsys.readouterr().err


def test_paradigm_script_names_its_choices():
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "paradigm.sh"), "e"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage: bash scripts/paradigm.sh a|b|c|d" in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(1000)
def test_paradigm_b_freezes_the_vision_tower_in_sft_and_trains_it_in_alignment(tiny_checkpoint, synthetic_dir, tmp_path):
    env = {
        **os.environ, "DS_ACCELERATOR": "cpu", "NUM_GPUS": "2", "BF16": "false", "PREFERENCE": "dpo",
        "SFT_MODEL_PATH": str(tiny_checkpoint), "SFT_DATA_PATH": str(synthetic_dir / "sft_train.json"),
        "PREF_DATA_PATH": str(synthetic_dir / "pref_train.json"), "IMAGE_FOLDER": str(synthetic_dir / "image"),
        "OUTPUT_ROOT": str(tmp_path / "paradigm_b"), "DEEPSPEED_CONFIG": str(REPO_ROOT / "scripts" / "zero2.json"),
        "PER_DEVICE_BATCH": "2", "GLOBAL_BATCH": "4", "LEARNING_RATE": "1e-3",
        "EXTRA_ARGS": "--max_steps 2 --dataloader_num_workers 0 --report_to none --save_strategy no",
        "PREF_EXTRA_ARGS": f"--reference_cache_dir {tmp_path / 'cache'}",
    }
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "paradigm.sh"), "b"], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    start, sft, dpo = weights(tiny_checkpoint), weights(tmp_path / "paradigm_b" / "sft"), weights(tmp_path / "paradigm_b" / "dpo")
    tower = [k for k in start if "vision_tower" in k and "layers.0." in k]
    assert all(torch.equal(start[k], sft[k]) for k in tower)  # (b): frozen in SFT
    assert any(not torch.equal(sft[k], dpo[k]) for k in tower)  # ...trained in alignment
