"""The SFT stage end to end, in process, on the tiny model and the synthetic data."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from mcmdpo.data.image_inputs import ImageInputs
from mcmdpo.data import load_examples
from mcmdpo.data.collate import PaddingCollator
from mcmdpo.data.sft_dataset import SFTDataset
from mcmdpo.train.cli import main, parse_arguments, run


def sft_argv(checkpoint, data_dir, output_dir, *extra: str) -> list[str]:
    return [
        "--stage", "sft", "--model_name_or_path", str(checkpoint),
        "--data_path", str(data_dir / "sft_train.json"), "--image_folder", str(data_dir / "image"),
        "--output_dir", str(output_dir), "--per_device_train_batch_size", "8", "--learning_rate", "2e-3",
        "--logging_steps", "5", "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true",
        "--dataloader_num_workers", "0", "--seed", "0", *extra,
    ]


def held_out_loss(model_path, data_dir, model=None, processor=None) -> float:
    """Mean answer-token loss on the synthetic test split (never trained on): of the checkpoint at
    ``model_path`` as the Auto classes load it, or of ``model`` with ``processor`` as given."""
    processor = processor if processor is not None else AutoProcessor.from_pretrained(model_path)
    model = (model if model is not None else AutoModelForImageTextToText.from_pretrained(model_path)).eval()
    loaded = load_examples(data_dir / "test.jsonl", "test", data_dir / "image", show_progress=False)
    turns = [((e.question, e.references[0]),) for e in loaded.examples]
    from mcmdpo.data.records import SFTExample

    examples = [SFTExample(e.idx, e.image, t, e.location) for e, t in zip(loaded.examples, turns)]
    dataset = SFTDataset(examples, processor, data_dir / "image", 2048, ImageInputs())
    batch = PaddingCollator(processor.tokenizer.pad_token_id)([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        return model(**batch).loss.item()


def test_sft_lowers_the_loss_and_saves_a_reloadable_checkpoint(tiny_checkpoint, synthetic_dir, tmp_path):
    out = tmp_path / "sft"
    trainer = run(*parse_arguments(sft_argv(tiny_checkpoint, synthetic_dir, out, "--max_steps", "40")))
    losses = [entry["loss"] for entry in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in entry]
    assert len(losses) == 8
    assert losses[-1] < 0.6 * losses[0], losses
    # The output is an HF checkpoint that plain transformers loads as the model training ended with...
    trained = {name: tensor.detach().cpu() for name, tensor in trainer.model.state_dict().items()}
    reloaded = AutoModelForImageTextToText.from_pretrained(out)
    assert type(reloaded) is type(trainer.model)
    assert reloaded.state_dict().keys() == trained.keys()
    assert all(torch.equal(tensor, trained[name]) for name, tensor in reloaded.state_dict().items())
    assert not torch.equal(trained["lm_head.weight"], AutoModelForImageTextToText.from_pretrained(tiny_checkpoint).lm_head.weight)
    # ...with its processor: the reloaded pair gives the held-out loss of the trained pair in memory...
    after = held_out_loss(out, synthetic_dir)
    assert after == held_out_loss(None, synthetic_dir, model=trainer.model, processor=trainer.processing_class)
    # ...and it has learnt something that holds on data it never saw.
    before = held_out_loss(tiny_checkpoint, synthetic_dir)
    assert after < 0.6 * before, (before, after)
    assert (out / "training_curves.png").stat().st_size > 10_000  # the run's curves, beside the checkpoint


def _vision_weights(path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(path / "model.safetensors").items() if "vision_tower" in k}


@pytest.mark.parametrize("train_vision_tower", [True, False])
def test_vision_tower_option_round_trips(tiny_checkpoint, synthetic_dir, tmp_path, train_vision_tower):
    """Paradigms (c)/(d) train the vision encoder in SFT: the checkpoint must reload with that
    trained encoder; (a)/(b) leave it exactly as it was."""
    out = tmp_path / "sft"
    argv = sft_argv(tiny_checkpoint, synthetic_dir, out, "--max_steps", "3", "--train_vision_tower", str(train_vision_tower).lower())
    assert main(argv) == 0
    initial, saved = _vision_weights(tiny_checkpoint), _vision_weights(out)
    assert initial.keys() == saved.keys()
    changed = [k for k in saved if not torch.equal(initial[k], saved[k])]
    if train_vision_tower:
        assert len(changed) > len(saved) // 2, changed  # all but the unused last layer
    else:
        assert changed == []
    reloaded = AutoModelForImageTextToText.from_pretrained(out)
    for name, tensor in reloaded.state_dict().items():
        if "vision_tower" in name:
            key = next(k for k in saved if k.endswith(name.split("vision_tower.", 1)[1]))
            assert torch.equal(tensor, saved[key]), name
