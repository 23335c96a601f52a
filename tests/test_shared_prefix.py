"""The shared-prefix MCM-DPO step (images encoded once, prompts run once, responses from the
cached prompt) gives the straightforward step's log-probs, loss and gradients."""

from __future__ import annotations

import pytest
import torch

from mcmdpo.data import load_examples
from mcmdpo.data.image_inputs import ImageInputs
from mcmdpo.data.negatives import NEGATIVE_IMAGE_TYPES
from mcmdpo.data.preference_dataset import NegativeConfig, PreferenceCollator, PreferenceDataset
from mcmdpo.model import load_model, load_processor
from mcmdpo.train.losses import mcmdpo_loss
from mcmdpo.train.preference_trainer import batch_sequence_logps
from mcmdpo.train.shared_prefix import SharedPrefixCollator, shared_prefix_logps


def loss_and_grads(checkpoint, items, collate, logps_fn):
    model = load_model(str(checkpoint)).train()
    logps = logps_fn(model, collate(items))
    reference = torch.linspace(-60, -20, logps.numel()).view_as(logps)
    losses, _ = mcmdpo_loss(logps, reference, beta=0.1)
    losses.mean().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return logps.detach(), losses.mean().item(), grads


def assert_same_step(checkpoint, processor, examples, image_folder, negatives, inputs=ImageInputs()):
    dataset = PreferenceDataset(examples, processor, image_folder, 2048, inputs, negatives)
    items = [dataset[i] for i in range(len(examples))]
    prompt_lengths = {len(s["input_ids"]) - sum(l != -100 for l in s["labels"]) for item in items for s in item["sequences"]}
    assert len(prompt_lengths) > 1  # prompts of different lengths share one batch
    pad = processor.tokenizer.pad_token_id
    straight = loss_and_grads(checkpoint, items, PreferenceCollator(pad), lambda m, b: batch_sequence_logps(m, b, 8, False))
    shared = loss_and_grads(checkpoint, items, SharedPrefixCollator(pad), shared_prefix_logps)
    torch.testing.assert_close(shared[0], straight[0], rtol=0, atol=1e-4)
    assert abs(shared[1] - straight[1]) < 1e-5
    assert shared[2].keys() == straight[2].keys()
    for name in straight[2]:
        torch.testing.assert_close(shared[2][name], straight[2][name], rtol=0, atol=1e-4, msg=name)


@pytest.mark.parametrize("image_type", NEGATIVE_IMAGE_TYPES)
def test_shared_prefix_step_equals_straightforward_step(tiny_checkpoint, processor, synthetic_dir, image_type):
    examples = load_examples(synthetic_dir / "pref_train.json", "preference", synthetic_dir / "image", show_progress=False).examples[:5]
    assert_same_step(tiny_checkpoint, processor, examples, synthetic_dir / "image", NegativeConfig(image_type, seed=3))


def test_shared_prefix_step_on_llava_next(synthetic_dir, tmp_path):
    """LLaVA-1.6: a cropped negative has its own number of tiles and image tokens."""
    from mcmdpo.model.tiny import TinyModelSpec, write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "next", TinyModelSpec(architecture="llava_next"))
    examples = load_examples(synthetic_dir / "pref_train.json", "preference", synthetic_dir / "image", show_progress=False).examples[:3]
    assert_same_step(checkpoint, load_processor(str(checkpoint)), examples, synthetic_dir / "image", NegativeConfig("crop"))


def test_training_with_the_shared_prefix_step_matches_full_sequences(tiny_checkpoint, synthetic_dir, tmp_path):
    """Same run, same cache: the logged losses and metrics agree step by step."""
    import json

    from mcmdpo.train.cli import main

    def run(name, *extra):
        argv = [
            "--stage", "mcmdpo", "--model_name_or_path", str(tiny_checkpoint), "--data_path", str(synthetic_dir / "pref_train.json"),
            "--image_folder", str(synthetic_dir / "image"), "--output_dir", str(tmp_path / name), "--max_steps", "4",
            "--learning_rate", "1e-3", "--per_device_train_batch_size", "4", "--logging_steps", "1", "--save_strategy", "no",
            "--report_to", "none", "--use_cpu", "true", "--reference_cache_dir", str(tmp_path / "cache"), *extra,
        ]
        assert main(argv) == 0
        return [e for e in json.loads((tmp_path / name / "trainer_state.json").read_text())["log_history"] if "loss" in e]

    full, shared = run("full"), run("shared", "--shared_prefix", "true")
    for a, b in zip(full, shared, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["margins/image"] == pytest.approx(a["margins/image"], abs=1e-4)


def test_shared_prefix_step_for_dpo(tiny_checkpoint, processor, synthetic_dir):
    """DPO's two sequences share one image and one prompt."""
    from mcmdpo.data.preference_dataset import DPO_SEQUENCES
    from mcmdpo.train.losses import dpo_loss

    examples = load_examples(synthetic_dir / "pref_train.json", "preference", synthetic_dir / "image", show_progress=False).examples[:5]
    dataset = PreferenceDataset(examples, processor, synthetic_dir / "image", 2048, ImageInputs(), sequences=DPO_SEQUENCES)
    items = [dataset[i] for i in range(len(examples))]
    pad = processor.tokenizer.pad_token_id

    def step(collate, logps_fn):
        model = load_model(str(tiny_checkpoint)).train()
        logps = logps_fn(model, collate(items))
        losses, _, _ = dpo_loss(logps[:, 0], logps[:, 1], torch.full((5,), -40.0), torch.full((5,), -45.0), 0.1)
        losses.mean().backward()
        return logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    straight = step(PreferenceCollator(pad), lambda m, b: batch_sequence_logps(m, b, 2, False))
    shared = step(SharedPrefixCollator(pad), shared_prefix_logps)
    assert shared[0].shape == (5, 2)
    torch.testing.assert_close(shared[0], straight[0], rtol=0, atol=1e-4)
    for name in straight[1]:
        torch.testing.assert_close(shared[1][name], straight[1][name], rtol=0, atol=1e-4, msg=name)


def test_length_grouped_batches_cut_padding(tiny_checkpoint, synthetic_dir, tmp_path):
    """--train_sampling_strategy group_by_length groups records of similar length (from cheap
    text-length estimates, nothing encoded up front), so batches carry less padding."""
    from mcmdpo.train.cli import parse_arguments, run

    padding = {}
    for strategy in ("random", "group_by_length"):
        argv = [
            "--stage", "dpo", "--model_name_or_path", str(tiny_checkpoint), "--data_path", str(synthetic_dir / "pref_train.json"),
            "--image_folder", str(synthetic_dir / "image"), "--output_dir", str(tmp_path / strategy), "--max_steps", "1",
            "--per_device_train_batch_size", "8", "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true",
            "--reference_cache_dir", str(tmp_path / "cache"), "--train_sampling_strategy", strategy, "--plot", "false",
        ]
        trainer = run(*parse_arguments(argv))
        padding[strategy] = sum(int((batch["attention_mask"] == 0).sum()) for batch in trainer.get_train_dataloader())
    assert padding["group_by_length"] < 0.8 * padding["random"], padding
