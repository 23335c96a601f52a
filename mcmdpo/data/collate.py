"""Batching encoded examples: pad token sequences, concatenate image tensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mcmdpo.data.conversation import IGNORE_INDEX
from mcmdpo.data.image_inputs import EncodedImage, concat_padded

# What pads a per-token input other than 0 (None: the pad token). Per-token inputs are the lists of
# an encoded sequence (ids, attention mask, labels and any image-token flags a family takes);
# image inputs are tensors.
PAD_VALUES = {"input_ids": None, "labels": IGNORE_INDEX}


def is_token_key(value: Any) -> bool:
    """Whether an encoded sequence's value is per-token (a list) rather than an image tensor."""
    return isinstance(value, (list, tuple))


def token_keys(feature: dict[str, Any]) -> list[str]:
    """The per-token keys of an encoded sequence, in its order."""
    return [key for key, value in feature.items() if is_token_key(value)]


def pad_rows(rows: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    """[len(rows), longest] long tensor of ``rows`` padded with ``value`` on the left or right."""
    longest = max(len(row) for row in rows)
    return torch.tensor(
        [[value] * (longest - len(row)) + list(row) if left else list(row) + [value] * (longest - len(row)) for row in rows],
        dtype=torch.long,
    )


def image_tensors(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """The image tensors of the features that have an image (text-only rows have none), each
    key's concatenated in order."""
    keys = dict.fromkeys(key for f in features for key, value in f.items() if not is_token_key(value))
    return {key: concat_padded([torch.as_tensor(f[key]) for f in features if key in f]) for key in keys}


@dataclass
class PaddingCollator:
    """Pads input_ids / attention_mask / labels to the longest sequence of the batch."""

    pad_token_id: int
    padding_side: str = "right"

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        for key in token_keys(features[0]):
            pad = PAD_VALUES.get(key, 0)
            pad = self.pad_token_id if pad is None else pad
            batch[key] = pad_rows([f[key] for f in features], pad, left=self.padding_side == "left")
        return {**batch, **image_tensors(features)}


@dataclass
class SFTCollator(PaddingCollator):
    """PaddingCollator for SFT batches, which may hold text-only records (as upstream's data does).

    A batch with no image at all still carries one blank image, its tokens appended to the first
    row after its last token with attention and labels masked: every process then runs the same
    forward (embeddings, vision tower, projector, language model, in that order), which ZeRO-3's
    collective weight gathering needs, while no real token can see the blank image (attention is
    causal and the blank comes last) and the loss is unchanged."""

    blank_image: EncodedImage | None = None
    blank_tokens: dict[str, list[int]] | None = None  # the blank image's tokens: input_ids and any image-token flags

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.blank_image is not None and not any("pixel_values" in f for f in features):
            first = dict(features[0])
            count = len(self.blank_tokens["input_ids"])
            for key, values in self.blank_tokens.items():
                first[key] = list(first[key]) + list(values)
            first["attention_mask"] = list(first["attention_mask"]) + [0] * count
            first["labels"] = list(first["labels"]) + [IGNORE_INDEX] * count
            features = [{**first, **self.blank_image.tensors}, *features[1:]]
        return super().__call__(features)
