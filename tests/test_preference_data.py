"""The 8-way preference batch and its negatives."""

from __future__ import annotations

import random

import pytest
import torch

from mcmdpo.data import load_examples
from mcmdpo.data.conversation import IGNORE_INDEX
from mcmdpo.data.image_inputs import ImageInputs, encode_image
from mcmdpo.data.negatives import NEGATIVE_IMAGE_TYPES, diffuse_pixels, diffusion_coefficients, negative_image_seed
from mcmdpo.preference.dataset import NegativeConfig, PreferenceDataset
from mcmdpo.preference.plain import PlainCollator
from mcmdpo.preference.layout import DPO_LAYOUT

LLAVA = ImageInputs()


def pixels(processor, image):
    return encode_image(processor, image, LLAVA).tensors["pixel_values"]


NAMES = ["cw_mw_yw", "cw_mw_yl", "cw_ml_yw", "cw_ml_yl", "cl_mw_yw", "cl_mw_yl", "cl_ml_yw", "cl_ml_yl"]


@pytest.fixture(scope="module")
def pref_examples(synthetic_dir):
    return load_examples(synthetic_dir / "pref_train.json", "preference", synthetic_dir / "image", show_progress=False).examples[:24]


def make_dataset(examples, processor, synthetic_dir, **negatives) -> PreferenceDataset:
    return PreferenceDataset(examples, processor, synthetic_dir / "image", 2048, LLAVA, NegativeConfig(**negatives))


def decoded_text(processor, ids) -> str:
    return processor.tokenizer.decode([t for t in ids if t != processor.image_token_id])


def test_the_eight_sequences_hold_the_right_triples(pref_examples, processor, synthetic_dir):
    dataset = make_dataset(pref_examples, processor, synthetic_dir, image_type="diffusion", diffusion_step=700, seed=5)
    index = 3
    example = pref_examples[index]
    other = pref_examples[dataset.negative_context_index(index)]
    assert other is not example and other.question != example.question
    item = dataset[index]
    assert len(item["sequences"]) == 8
    clean = pixels(processor, example.image.open(synthetic_dir / "image"))
    noisy = diffuse_pixels(clean, 700, negative_image_seed(5, index, epoch=0))
    for name, sequence in zip(NAMES, item["sequences"]):
        context = example.question if name[1] == "w" else other.question
        response = example.chosen if name[-1] == "w" else example.rejected
        assert decoded_text(processor, sequence["input_ids"]) == f"<s>USER: \n{context} ASSISTANT: {response}</s>", name
        answer = processor.tokenizer.decode([t for t in sequence["labels"] if t != IGNORE_INDEX])
        assert answer == f" {response}</s>", name
        expected_pixels = clean if name[4] == "w" else noisy
        torch.testing.assert_close(sequence["pixel_values"], expected_pixels, rtol=0, atol=0)
        assert sequence["input_ids"].count(processor.image_token_id) == 16


def test_dpo_batch_holds_the_response_pair_only(pref_examples, processor, synthetic_dir):
    dataset = PreferenceDataset(pref_examples, processor, synthetic_dir / "image", 2048, LLAVA, layout=DPO_LAYOUT)
    item = dataset[0]
    texts = [decoded_text(processor, s["input_ids"]) for s in item["sequences"]]
    q = pref_examples[0].question
    prompt = f"<s>USER: \n{q} ASSISTANT:"
    assert texts == [f"{prompt} {pref_examples[0].chosen}</s>", f"{prompt} {pref_examples[0].rejected}</s>"]


def negative_fingerprint(dataset: PreferenceDataset, index: int) -> tuple[int, torch.Tensor]:
    sequence = dataset[index]["sequences"][2]  # (c_w, m_l, y_w)
    return dataset.negative_context_index(index), sequence["pixel_values"]


# Not "crop": the original's window (at most 320 x 240) holds all of these 64-pixel images, so
# there is nothing to draw (test_real_checkpoints checks crop on real photos).
@pytest.mark.parametrize("image_type", [t for t in NEGATIVE_IMAGE_TYPES if t != "crop"])
def test_negatives_repeat_with_the_seed_and_change_with_it(pref_examples, processor, synthetic_dir, image_type):
    python_state, torch_state = random.getstate(), torch.get_rng_state()
    first = [negative_fingerprint(make_dataset(pref_examples, processor, synthetic_dir, image_type=image_type, seed=1), i) for i in range(8)]
    again = [negative_fingerprint(make_dataset(pref_examples, processor, synthetic_dir, image_type=image_type, seed=1), i) for i in range(8)]
    other = [negative_fingerprint(make_dataset(pref_examples, processor, synthetic_dir, image_type=image_type, seed=2), i) for i in range(8)]
    # The global random state is untouched (the original reseeded it per sample).
    assert random.getstate() == python_state and torch.equal(torch.get_rng_state(), torch_state)
    for (context_a, pixels_a), (context_b, pixels_b) in zip(first, again):
        assert context_a == context_b and torch.equal(pixels_a, pixels_b)
    assert [c for c, _ in first] != [c for c, _ in other]
    clean = [pixels(processor, e.image.open(synthetic_dir / "image")) for e in pref_examples[:8]]
    assert not any(torch.equal(pixels, image) for (_, pixels), image in zip(first, clean))  # m_l is never m_w
    if image_type != "black":  # a black image has nothing to draw at random
        assert any(not torch.equal(a, b) for (_, a), (_, b) in zip(first, other))
    else:
        assert all(torch.equal(first[0][1], pixels) for _, pixels in first)


def test_negative_context_is_always_another_record(pref_examples, processor, synthetic_dir):
    dataset = make_dataset(pref_examples, processor, synthetic_dir, seed=0)
    chosen = [dataset.negative_context_index(i) for i in range(len(dataset))]
    assert all(c != i and 0 <= c < len(dataset) for i, c in enumerate(chosen))
    assert len(set(chosen)) > len(dataset) // 2  # spread over the file, not one fixed record


def test_diffusion_schedule_at_step_700():
    keep, noise = diffusion_coefficients(700)
    assert keep == pytest.approx(0.593, abs=1e-3) and noise == pytest.approx(0.805, abs=1e-3)
    assert keep**2 + noise**2 == pytest.approx(1.0)
    x0 = torch.full((3, 64, 64), 2.0)
    noisy = diffuse_pixels(x0, 700, seed=11)
    assert noisy.mean().item() == pytest.approx(2.0 * keep, abs=0.03)
    assert (noisy - keep * x0).std().item() == pytest.approx(noise, abs=0.03)
    torch.testing.assert_close(noisy, diffuse_pixels(x0, 700, seed=11), rtol=0, atol=0)


def test_collator_flattens_record_major(pref_examples, processor, synthetic_dir):
    dataset = make_dataset(pref_examples, processor, synthetic_dir)
    dataset.reference_logps = torch.arange(len(dataset) * 8, dtype=torch.float32).view(1, -1, 8)  # one epoch
    items = [dataset[i] for i in (4, 9)]
    batch = PlainCollator(processor.tokenizer.pad_token_id)(items)
    assert batch["input_ids"].shape[0] == 16 and batch["pixel_values"].shape[0] == 16
    assert batch["index"].tolist() == [4, 9]
    torch.testing.assert_close(batch["reference_logps"], dataset.reference_logps[0, [4, 9]])
    row = 8 + 5  # record 9, sequence cl_mw_yl
    length = int(batch["attention_mask"][row].sum())
    assert batch["input_ids"][row, :length].tolist() == items[1]["sequences"][5]["input_ids"]
