"""An exact, cheaper way to score a record's eight MCM-DPO sequences.

The straightforward step runs 8 full sequences per record, each re-encoding its image and
re-reading its prompt (hundreds of image tokens and the context) to score a ~20-token answer.
Here each record's 2 distinct images are encoded once, its 4 distinct (context, image) prompts run
once, and both responses continue from each prompt's cached keys and values, with gradients
flowing through the cache. The log-probabilities are the same as the straightforward ones (up to
float rounding); the tests check loss and gradients against :func:`batch_sequence_logps`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from mcmdpo.data.collate import PAD_VALUES, pad_rows
from mcmdpo.data.image_inputs import concat_padded
from mcmdpo.data.conversation import IGNORE_INDEX
from mcmdpo.train.losses import sequence_logps

# MCM-DPO's 8 sequences: prompts (c_w, m_w), (c_w, m_l), (c_l, m_w), (c_l, m_l) (prompt p = 2 c + m)
# over images m_w, m_l; DPO's 2 sequences: one prompt (c_w, m_w) over one image.
LAYOUTS = {8: (4, 2), 2: (1, 1)}  # sequences per record: (prompts, images)


# Per-token inputs beside input_ids that a family's model takes (image-token flags).
TOKEN_TYPE_KEYS = tuple(key for key in PAD_VALUES if key not in ("input_ids", "attention_mask", "labels"))


def split_at_answer(sequence: dict[str, Any]) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, response ids, response labels): the prompt ends where the labels start."""
    first = first_answer(sequence)
    return sequence["input_ids"][:first], sequence["input_ids"][first:], sequence["labels"][first:]


def first_answer(sequence: dict[str, Any]) -> int:
    return next(i for i, label in enumerate(sequence["labels"]) if label != IGNORE_INDEX)


@dataclass
class SharedPrefixCollator:
    """Batches :class:`~mcmdpo.data.preference_dataset.PreferenceDataset` items as, per record,
    its distinct images, its left-padded prompts and its right-padded responses (two per prompt):
    2, 4 and 8 for MCM-DPO's eight sequences, 1, 1 and 2 for DPO's two."""

    pad_token_id: int

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prompts, responses, labels, images = [], [], [], []
        prompt_types: dict[str, list[list[int]]] = {key: [] for key in TOKEN_TYPE_KEYS if key in items[0]["sequences"][0]}
        for item in items:
            sequences = item["sequences"]
            if len(sequences) not in LAYOUTS:
                raise ValueError("the shared-prefix step takes all eight sequences of a record, or DPO's two")
            num_prompts, num_images = LAYOUTS[len(sequences)]
            for prompt in range(num_prompts):
                chosen, rejected = split_at_answer(sequences[2 * prompt]), split_at_answer(sequences[2 * prompt + 1])
                if chosen[0] != rejected[0]:
                    raise ValueError("the two responses of a prompt do not share its tokens")
                prompts.append(chosen[0])
                for key, rows in prompt_types.items():
                    rows.append(sequences[2 * prompt][key][: first_answer(sequences[2 * prompt])])
                responses += [chosen[1], rejected[1]]
                labels += [chosen[2], rejected[2]]
            # m_w is the image of sequence 0 (c_w, m_w, y_w), m_l that of sequence 2 (c_w, m_l, y_w).
            images += [sequences[2 * m] for m in range(num_images)]
        batch = {
            "prompt_input_ids": pad_rows(prompts, self.pad_token_id, left=True),
            "prompt_attention_mask": pad_rows([[1] * len(p) for p in prompts], 0, left=True),
            "response_input_ids": pad_rows(responses, self.pad_token_id, left=False),
            "response_attention_mask": pad_rows([[1] * len(r) for r in responses], 0, left=False),
            "response_labels": pad_rows(labels, IGNORE_INDEX, left=False),
            "index": torch.tensor([item["index"] for item in items]),
        }
        for key, rows in prompt_types.items():
            batch[f"prompt_{key}"] = pad_rows(rows, 0, left=True)
        image_keys = [key for key in images[0] if key not in PAD_VALUES]
        for key in image_keys:
            batch[key] = concat_padded([torch.as_tensor(image[key]) for image in images])
        if "reference_logps" in items[0]:
            batch["reference_logps"] = torch.stack([item["reference_logps"] for item in items])
        return batch


def _base_model(model: Any) -> Any:
    """The multimodal base model (vision tower, projector, language model) inside a policy that
    may be wrapped by DeepSpeed or PEFT."""
    inner = getattr(model, "module", model)  # DeepSpeed engine
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # PEFT
    return inner.model


def shared_prefix_logps(model: Any, batch: dict[str, torch.Tensor], average: bool = False) -> torch.Tensor:
    """[records, sequences] log-probs, in SEQUENCE_NAMES order, from a :class:`SharedPrefixCollator`
    batch."""
    prompt_mask = batch["prompt_attention_mask"]
    num_records = batch["index"].shape[0]
    num_sequences = batch["response_input_ids"].shape[0] // num_records
    num_prompts, num_images = LAYOUTS[num_sequences]
    # 1. Each distinct image once: 2 per record.
    # Everything the collator did not put there for the text is the family's image inputs.
    image_inputs = {
        key: value for key, value in batch.items() if not key.startswith(("prompt_", "response_")) and key not in ("index", "reference_logps")
    }
    features = _base_model(model).get_image_features(**image_inputs, return_dict=True).pooler_output
    # Prompt p of a record shows image p % 2 (m_w for c_w and c_l, m_l likewise) of that record.
    prompt_features = [
        features[(row // num_prompts) * num_images + (row % num_prompts) % num_images] for row in range(prompt_mask.shape[0])
    ]
    if isinstance(features, torch.Tensor):  # one tensor for all images (Gemma 3), not one per image (LLaVA-NeXT)
        prompt_features = torch.stack(prompt_features)
    # 2. Each distinct prompt once, keeping its keys and values (with their gradients).
    prompt_positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    prompt_out = model(
        input_ids=batch["prompt_input_ids"],
        attention_mask=prompt_mask,
        position_ids=prompt_positions,
        **{key: batch[f"prompt_{key}"] for key in TOKEN_TYPE_KEYS if f"prompt_{key}" in batch},
        mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=prompt_features)},
        use_cache=True,
        logits_to_keep=1,
    )
    cache = prompt_out.cache
    if cache is None:
        raise RuntimeError("the shared-prefix step needs the prompt's key/value cache: turn activation checkpointing off")
    cache.batch_repeat_interleave(2)  # both responses continue from the same prompt
    # 3. Both responses from the cached prompt.
    response_mask = batch["response_attention_mask"]
    prompt_lengths = prompt_mask.sum(-1).repeat_interleave(2)
    positions = prompt_lengths[:, None] + torch.arange(response_mask.shape[1], device=response_mask.device)
    response_out = model(
        input_ids=batch["response_input_ids"],
        attention_mask=torch.cat([prompt_mask.repeat_interleave(2, dim=0), response_mask], dim=1),
        position_ids=positions,
        cache=cache,
        use_cache=True,
    )
    # The prompt's last logits predict the first answer token; the response's the rest.
    logits = torch.cat([prompt_out.logits[:, -1:].repeat_interleave(2, dim=0), response_out.logits], dim=1)
    labels = batch["response_labels"]
    labels = torch.cat([torch.full_like(labels[:, :1], IGNORE_INDEX), labels], dim=1)
    return sequence_logps(logits, labels, average).view(-1, num_sequences)
