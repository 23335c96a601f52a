"""--sft_loss_reduction: one SGD step of learning rate 1 moves the weights by minus the gradient,
which must be the gradient of the hand computation: the model's own loss of each example alone
(the original's micro-batch of one), combined per example (every example alike) or per token
(every answer token alike), whatever the micro-batch, accumulation or number of processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from mcmdpo.data import load_examples
from mcmdpo.data.collate import PaddingCollator
from mcmdpo.data.image_inputs import ImageInputs
from mcmdpo.data.sft_dataset import SFTDataset
from mcmdpo.train.cli import parse_arguments, run
from mcmdpo.train.sft_loss import per_example_token_means

# Answers of 1, 4, 13 and 30 words: token weighting and example weighting differ a lot here.
ANSWERS = [
    "Dog.",
    "A red bicycle outside.",
    "Two people walking along a quiet beach at sunset, with gulls overhead and waves behind them.",
    "A crowded market street in the evening: stalls of fruit and spices under strings of lights, a woman in a green "
    "coat buying oranges, children running between the stalls, and a cat asleep on a crate of apples in front.",
]


@pytest.fixture
def varied_lengths(synthetic_dir, tmp_path):
    """Four SFT records of the synthetic images whose answers have very different lengths."""
    source = json.loads((synthetic_dir / "sft_train.json").read_text())[: len(ANSWERS)]
    for record, answer in zip(source, ANSWERS):
        record["conversations"][1]["value"] = answer
    path = tmp_path / "sft_varied.json"
    path.write_text(json.dumps(source))
    return path


def hand_gradient(checkpoint, data_path, image_folder, reduction: str) -> torch.Tensor:
    """The flat gradient of the loss the reduction names, from each example's own forward pass."""
    processor = AutoProcessor.from_pretrained(checkpoint)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint)
    model.train()
    examples = load_examples(data_path, "sft", image_folder, show_progress=False).examples
    dataset = SFTDataset(examples, processor, image_folder, 2048, ImageInputs())
    collate = PaddingCollator(processor.tokenizer.pad_token_id)
    losses, tokens = [], []
    for index in range(len(dataset)):
        batch = collate([dataset[index]])
        losses.append(model(**batch).loss)  # the model's own mean over this example's answer tokens
        tokens.append(int((batch["labels"][:, 1:] != -100).sum()))
    if reduction == "example":
        total = sum(losses) / len(losses)
    else:
        total = sum(loss * count for loss, count in zip(losses, tokens)) / sum(tokens)
    total.backward()
    return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in model.parameters()])


def weight_change(checkpoint, trained) -> torch.Tensor:
    before = AutoModelForImageTextToText.from_pretrained(checkpoint)
    after = {name: tensor for name, tensor in trained.named_parameters()}
    return torch.cat([(after[name].detach() - tensor).flatten() for name, tensor in before.named_parameters()])


def one_sgd_step(checkpoint, data_path, image_folder, output_dir, *extra: str) -> list[str]:
    return ["--stage", "sft", "--model_name_or_path", str(checkpoint), "--data_path", str(data_path),
            "--image_folder", str(image_folder), "--output_dir", str(output_dir), "--optim", "sgd", "--learning_rate", "1.0",
            "--lr_scheduler_type", "constant", "--max_steps", "1", "--save_strategy", "no", "--report_to", "none",
            "--dataloader_num_workers", "0", "--plot", "false", "--seed", "0", *extra]


def test_per_example_token_means_equal_a_hand_table():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 1, -100], [-100, 2, 4, 6, 0]])
    log_probs = logits.log_softmax(-1)
    first = -(log_probs[0, 1, 3] + log_probs[0, 2, 1]) / 2  # position t predicts label t + 1
    second = -(log_probs[1, 0, 2] + log_probs[1, 1, 4] + log_probs[1, 2, 6] + log_probs[1, 3, 0]) / 4
    torch.testing.assert_close(per_example_token_means(logits, labels), torch.stack([first, second]))


@pytest.mark.parametrize("reduction, micro_batch, accumulation", [("example", 1, 4), ("example", 2, 2), ("token", 1, 4)])
def test_one_step_follows_the_hand_gradient(tiny_checkpoint, synthetic_dir, varied_lengths, tmp_path, reduction, micro_batch,
                                            accumulation):
    argv = one_sgd_step(tiny_checkpoint, varied_lengths, synthetic_dir / "image", tmp_path / "out",
                        "--sft_loss_reduction", reduction, "--per_device_train_batch_size", str(micro_batch),
                        "--gradient_accumulation_steps", str(accumulation), "--use_cpu", "true")
    trainer = run(*parse_arguments(argv))
    expected = -hand_gradient(tiny_checkpoint, varied_lengths, synthetic_dir / "image", reduction)
    other = -hand_gradient(tiny_checkpoint, varied_lengths, synthetic_dir / "image", {"example": "token", "token": "example"}[reduction])
    assert (expected - other).norm() > 0.1 * expected.norm()  # the two weightings really differ on these lengths
    torch.testing.assert_close(weight_change(tiny_checkpoint, trainer.model), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("reduction", ["example", "token"])
def test_two_processes_follow_the_hand_gradient(tiny_checkpoint, synthetic_dir, varied_lengths, tmp_path, reduction):
    """torchrun, two processes of one example each, two accumulation steps: the four examples of
    one optimizer step, wherever each was computed."""
    out = tmp_path / "out"
    argv = one_sgd_step(tiny_checkpoint, varied_lengths, synthetic_dir / "image", out, "--sft_loss_reduction", reduction,
                        "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "2", "--ddp_backend", "gloo")
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "mcmdpo.train", *argv], capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = -hand_gradient(tiny_checkpoint, varied_lengths, synthetic_dir / "image", reduction)
    trained = AutoModelForImageTextToText.from_pretrained(out)
    torch.testing.assert_close(weight_change(tiny_checkpoint, trained), expected, rtol=1e-4, atol=1e-6)
