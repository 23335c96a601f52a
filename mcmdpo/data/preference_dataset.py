"""The preference batch: for each record, the (context, image, response) triples that DPO (2) or
MCM-DPO (8) score, in the upstream order of ``SEQUENCE_NAMES``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from mcmdpo.data.collate import PaddingCollator
from mcmdpo.data.conversation import process_image, tokenize_conversation
from mcmdpo.data.negatives import (
    NEGATIVE_IMAGE_TYPES,
    black_image,
    cropped_image,
    diffuse_pixels,
    other_index,
    record_seed,
    rotated_image,
)
from mcmdpo.data.records import PreferenceExample

ALL_SEQUENCES = tuple(range(8))
DPO_SEQUENCES = (0, 1)  # (c_w, m_w, y_w), (c_w, m_w, y_l)


def triple_of(sequence: int) -> tuple[int, int, int]:
    """(context, image, response) of a sequence index: 0 = original/preferred, 1 = negative."""
    return sequence >> 2 & 1, sequence >> 1 & 1, sequence & 1


@dataclass(frozen=True)
class NegativeConfig:
    """How negatives are made (design §1.2). ``seed`` seeds every record's choices."""

    image_type: str = "diffusion"
    diffusion_step: int = 700
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_type not in NEGATIVE_IMAGE_TYPES:
            raise ValueError(f"negative image type must be one of {NEGATIVE_IMAGE_TYPES}, got {self.image_type!r}")


class PreferenceDataset(Dataset):
    """One item per record: its sequences (``sequences``: indices into SEQUENCE_NAMES), each a
    dict of token lists and image tensors, plus the record's position and, when given, its
    precomputed reference log-probs."""

    def __init__(
        self,
        examples: list[PreferenceExample],
        processor: Any,
        image_folder: str | Path | None,
        max_length: int,
        negatives: NegativeConfig = NegativeConfig(),
        sequences: Sequence[int] = ALL_SEQUENCES,
        reference_logps: torch.Tensor | None = None,
    ):
        needs_other_record = any(triple_of(s)[0] for s in sequences) or (
            negatives.image_type == "random" and any(triple_of(s)[1] for s in sequences)
        )
        if needs_other_record and len(examples) < 2:
            raise ValueError("negative contexts (and 'random' negative images) need at least two records")
        self.examples = examples
        self.processor = processor
        self.image_folder = image_folder
        self.max_length = max_length
        self.negatives = negatives
        self.sequences = tuple(sequences)
        self.reference_logps = reference_logps

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def lengths(self) -> list[int]:
        """Text length in characters (question and longer response): a cheap stand-in for token
        length when grouping batches."""
        return [len(e.question) + max(len(e.chosen), len(e.rejected)) for e in self.examples]

    def negative_context_index(self, index: int) -> int:
        return other_index(self.negatives.seed, index, len(self.examples), "context")

    def negative_image(self, index: int, image: Image.Image, image_features: dict[str, Any]) -> dict[str, Any]:
        """Image tensors of m_l for record ``index``, whose own image and tensors are given."""
        seed, kind = record_seed(self.negatives.seed, index, "image"), self.negatives.image_type
        if kind == "diffusion":
            noisy = diffuse_pixels(image_features["pixel_values"], self.negatives.diffusion_step, seed)
            return {**image_features, "pixel_values": noisy}
        if kind == "black":
            negative = black_image(image)
        elif kind == "rotate":
            negative = rotated_image(image, seed)
        elif kind == "crop":
            negative = cropped_image(image, seed)
        else:  # "random": another record's image
            other = other_index(self.negatives.seed, index, len(self.examples), "image")
            negative = self.examples[other].image.open(self.image_folder)
        return process_image(self.processor, negative)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.examples[index]
        image = example.image.open(self.image_folder)
        images = [process_image(self.processor, image)]
        if any(triple_of(s)[1] for s in self.sequences):
            images.append(self.negative_image(index, image, images[0]))
        contexts = [example.question]
        if any(triple_of(s)[0] for s in self.sequences):
            contexts.append(self.examples[self.negative_context_index(index)].question)
        responses = (example.chosen, example.rejected)
        sequences = []
        for sequence in self.sequences:
            context, image_choice, response = triple_of(sequence)
            image_features = dict(images[image_choice])
            count = image_features.pop("num_image_tokens")
            tokens = tokenize_conversation(self.processor, [(contexts[context], responses[response])], count, self.max_length)
            sequences.append({**tokens, **image_features})
        item: dict[str, Any] = {"sequences": sequences, "index": index}
        if self.reference_logps is not None:
            item["reference_logps"] = self.reference_logps[index]
        return item


@dataclass
class PreferenceCollator:
    """Flattens records x sequences (record-major: row = record * S + sequence) into one padded
    batch; ``index`` [B] and ``reference_logps`` [B, S] ride along."""

    pad_token_id: int
    padding_side: str = "right"

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        flat = [sequence for item in items for sequence in item["sequences"]]
        batch = PaddingCollator(self.pad_token_id, self.padding_side)(flat)
        batch["index"] = torch.tensor([item["index"] for item in items], dtype=torch.long)
        if "reference_logps" in items[0]:
            batch["reference_logps"] = torch.stack([item["reference_logps"] for item in items])
        return batch
