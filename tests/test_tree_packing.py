"""The tree-packed preference step (one prefix-tree row per record and image) gives the plain
step's log-probs, loss and gradients, trains the same, and is really what runs."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerCallback

from mcmdpo.data import load_examples
from mcmdpo.data.image_inputs import ImageInputs
from mcmdpo.data.negatives import NEGATIVE_IMAGE_TYPES
from mcmdpo.preference.dataset import NegativeConfig, PreferenceDataset
from mcmdpo.preference.layout import DPO_LAYOUT, MCMDPO_LAYOUT
from mcmdpo.model import load_model, load_processor
from mcmdpo.preference.losses import PreferenceLoss
from mcmdpo.model.families import BY_NAME
from mcmdpo.preference.packing import sequence_packing
from mcmdpo.preference.tree import PrefixTree


def loss_and_grads(checkpoint, items, step, layout, checkpointing=False, image_aspect_ratio="auto"):
    torch.manual_seed(0)
    model = load_model(str(checkpoint), image_aspect_ratio=image_aspect_ratio).train()
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    logps = step.logps(model, step.collator(items), False)
    reference = torch.linspace(-60, -20, logps.numel()).view_as(logps)
    losses, _ = PreferenceLoss(layout, 0.1)(logps, reference)
    losses.mean().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return logps.detach(), losses.mean().item(), grads


def assert_packed_equals_plain(checkpoint, processor, examples, image_folder, negatives, layout=MCMDPO_LAYOUT,
                               inputs=ImageInputs(), checkpointing=False, image_aspect_ratio="auto", family=BY_NAME["llava"]):
    dataset = PreferenceDataset(examples, processor, image_folder, 4096, inputs, negatives, layout)
    items = [dataset[i] for i in range(len(examples))]
    prompt_lengths = {sum(label == -100 for label in s["labels"]) for item in items for s in item["sequences"]}
    assert len(prompt_lengths) > 1  # prompts of different lengths share one batch
    plain = loss_and_grads(checkpoint, items, sequence_packing("none", processor, layout, family), layout, checkpointing, image_aspect_ratio)
    packed = loss_and_grads(checkpoint, items, sequence_packing("tree", processor, layout, family), layout, checkpointing, image_aspect_ratio)
    assert packed[0].shape == (len(examples), len(layout.triples))
    torch.testing.assert_close(packed[0], plain[0], rtol=0, atol=1e-4)
    assert abs(packed[1] - plain[1]) < 1e-5
    assert packed[2].keys() == plain[2].keys()
    for name in plain[2]:
        torch.testing.assert_close(packed[2][name], plain[2][name], rtol=0, atol=1e-4, msg=name)


def pref_examples(synthetic_dir, count=5):
    return load_examples(synthetic_dir / "pref_train.json", "preference", synthetic_dir / "image", show_progress=False).examples[:count]


@pytest.mark.parametrize("image_type", NEGATIVE_IMAGE_TYPES)
def test_packed_step_equals_plain_step_for_every_negative_image(tiny_checkpoint, processor, synthetic_dir, image_type):
    assert_packed_equals_plain(tiny_checkpoint, processor, pref_examples(synthetic_dir), synthetic_dir / "image", NegativeConfig(image_type, seed=3))


def test_packed_step_equals_plain_step_for_dpo_and_with_activation_checkpointing(tiny_checkpoint, processor, synthetic_dir):
    assert_packed_equals_plain(tiny_checkpoint, processor, pref_examples(synthetic_dir), synthetic_dir / "image", NegativeConfig(), DPO_LAYOUT)
    assert_packed_equals_plain(tiny_checkpoint, processor, pref_examples(synthetic_dir, 3), synthetic_dir / "image", NegativeConfig(),
                               checkpointing=True)


def test_packed_step_on_llava_next(synthetic_dir, tmp_path):
    """LLaVA-1.6 anyres: a cropped negative has its own number of tiles and image tokens."""
    from mcmdpo.tiny import TinyModelSpec, write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "next", TinyModelSpec(architecture="llava_next"))
    processor = load_processor(str(checkpoint), image_aspect_ratio="anyres")
    inputs = ImageInputs(("pixel_values", "image_sizes"))
    assert_packed_equals_plain(checkpoint, processor, pref_examples(synthetic_dir, 3), synthetic_dir / "image", NegativeConfig("crop"),
                               inputs=inputs, image_aspect_ratio="anyres", family=BY_NAME["llava_next"])


def test_prefix_tree_by_hand():
    """Two contexts x two answers after a shared prefix: each token stored once, attending to its
    ancestors only, at its depth."""
    sequences = [{"input_ids": ids} for ids in ([1, 2, 3, 7], [1, 2, 3, 8, 9], [1, 2, 4, 7], [1, 2, 4, 8, 9])]
    tree = PrefixTree.of(sequences, ["input_ids"])
    assert tree.tokens["input_ids"] == [1, 2, 3, 7, 8, 9, 4, 7, 8, 9]
    assert tree.depth == [0, 1, 2, 3, 3, 4, 2, 3, 3, 4]
    assert tree.paths[3] == [0, 1, 6, 8, 9]
    mask = tree.ancestry(11)
    assert mask[9].nonzero().flatten().tolist() == [0, 1, 6, 8, 9]
    assert mask[4].nonzero().flatten().tolist() == [0, 1, 2, 4]
    assert mask[10].nonzero().flatten().tolist() == [10]  # padding sees itself only


class CountRows(TrainerCallback):
    """Records the [rows, length] of every batch the policy's embedding layer sees in training."""

    def __init__(self):
        self.shapes: list[tuple[int, int]] = []
        self.steps: list[int] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        model.get_input_embeddings().register_forward_hook(lambda module, inputs, output: self.shapes.append(tuple(inputs[0].shape)))

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(len(self.shapes))


def train(checkpoint, data, out, *extra):
    from mcmdpo.train.cli import parse_arguments, run

    counter = CountRows()
    argv = [
        "--stage", "mcmdpo", "--model_name_or_path", str(checkpoint), "--data_path", str(data / "pref_train.json"),
        "--image_folder", str(data / "image"), "--output_dir", str(out), "--max_steps", "2",
        # SGD: Adam's first steps scale even float-rounding gradients to +-lr, SGD keeps them rounding-sized.
        "--optim", "sgd", "--learning_rate", "0.05", "--per_device_train_batch_size", "2", "--logging_steps", "1", "--save_strategy", "no",
        "--report_to", "none", "--use_cpu", "true", "--reference_cache_dir", str(out.parent / "cache"), "--plot", "false",
        "--dataloader_num_workers", "0", *extra,
    ]
    run(*parse_arguments(argv), callbacks=[counter])
    history = [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    return history, counter


@pytest.mark.parametrize("options", [[], ["--activation_checkpointing", "true"], ["--use_lora", "true", "--lora_r", "8", "--lora_dropout", "0"]],  # dropout masks differ with the shapes
                         ids=["default", "checkpointing", "lora"])
def test_training_with_the_packed_step_matches_the_plain_step_and_runs_packed_rows(tiny_checkpoint, synthetic_dir, tmp_path, options):
    """Same run, same reference cache: the logged losses and margins agree step by step; the
    policy saw 2 rows per record (one per image) per step, against 8 sequences, and nothing
    else (the cached reference is read, not recomputed: one forward per step)."""
    plain, plain_rows = train(tiny_checkpoint, synthetic_dir, tmp_path / "plain", "--sequence_packing", "none", *options)
    packed, packed_rows = train(tiny_checkpoint, synthetic_dir, tmp_path / "packed", *options)
    for a, b in zip(plain, packed, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["margins/image"] == pytest.approx(a["margins/image"], abs=1e-4)
        assert b["margins/context"] == pytest.approx(a["margins/context"], abs=1e-4)
    assert packed_rows.steps == plain_rows.steps == [1, 2]  # one policy forward per step
    assert [rows for rows, _ in packed_rows.shapes] == [2 * 2] * 2
    assert [rows for rows, _ in plain_rows.shapes] == [2 * 8] * 2


def test_without_the_cache_the_lora_reference_runs_each_step(tiny_checkpoint, synthetic_dir, tmp_path):
    """The counter above would see it if the reference ran during training: here (LoRA, no cache)
    each step runs the policy and the adapter-free reference, both packed."""
    _, rows = train(tiny_checkpoint, synthetic_dir, tmp_path / "live", "--use_lora", "true", "--lora_r", "8",
                    "--precompute_reference_logps", "false")
    assert rows.steps == [2, 4] and all(r == 4 for r, _ in rows.shapes)


def test_an_attention_without_4d_masks_scores_whole_sequences_with_a_notice_and_the_tree_refuses_it(tiny_checkpoint, processor, synthetic_dir):
    """flash-attention's kernels take no 4-D mask: training, evaluation and the app then score every
    sequence in full (with a notice), and the tree itself refuses such a model rather than
    computing with a causal mask that would let branches see each other."""
    from mcmdpo.preference.packing import packing_for

    assert packing_for("tree", None) == ("tree", None) and packing_for("tree", "eager") == ("tree", None)
    packing, notice = packing_for("tree", "flash_attention_2")
    assert packing == "none" and "flash_attention_2 does not take" in notice and "--sequence_packing none" in notice
    assert packing_for("none", "flash_attention_2") == ("none", None)
    dataset = PreferenceDataset(pref_examples(synthetic_dir, 2), processor, synthetic_dir / "image", 4096, ImageInputs(), NegativeConfig(), DPO_LAYOUT)
    tree = sequence_packing("tree", processor, DPO_LAYOUT, BY_NAME["llava"])
    model = load_model(str(tiny_checkpoint)).eval()
    model.config.get_text_config()._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="needs sdpa or eager attention .* use --sequence_packing none"):
        tree.logps(model, tree.collator([dataset[0], dataset[1]]), False)


def test_a_batch_whose_answers_were_all_cut_scores_zero_as_the_plain_step_does(tiny_checkpoint, processor, synthetic_dir):
    dataset = PreferenceDataset(pref_examples(synthetic_dir, 2), processor, synthetic_dir / "image", 4096, ImageInputs(), NegativeConfig(), DPO_LAYOUT)
    items = [dataset[i] for i in range(2)]
    for item in items:
        for sequence in item["sequences"]:
            sequence["labels"] = [-100] * len(sequence["labels"])
    model = load_model(str(tiny_checkpoint)).eval()
    with torch.no_grad():
        scores = {name: step.logps(model, step.collator(items), False)
                  for name, step in ((n, sequence_packing(n, processor, DPO_LAYOUT, BY_NAME["llava"])) for n in ("none", "tree"))}
    assert scores["tree"].tolist() == scores["none"].tolist() == [[0.0, 0.0], [0.0, 0.0]]
