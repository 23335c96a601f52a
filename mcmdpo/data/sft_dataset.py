"""The SFT dataset: validated, length-checked examples, encoded lazily."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from PIL import Image

from mcmdpo.data.conversation import encode_conversation, process_image
from mcmdpo.data.records import SFTExample


class SFTDataset(Dataset):
    """Encodes one example per item: the image (if the record has one: text-only records are
    accepted, as upstream accepts them) is decoded and processed on access."""

    def __init__(self, examples: list[SFTExample], processor: Any, image_folder: str | Path | None, max_length: int):
        self.examples = examples
        self.processor = processor
        self.image_folder = image_folder
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def lengths(self) -> list[int]:
        """Text length in characters: a cheap stand-in for token length when grouping batches."""
        return [sum(len(user) + len(answer) for user, answer in example.turns) for example in self.examples]

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.examples[index]
        image = example.image.open(self.image_folder) if example.image is not None else None
        return encode_conversation(self.processor, image, example.turns, self.max_length)

    def blank_image_features(self) -> dict[str, Any]:
        """Image tensors of one blank (mean-colour) image and its ``num_image_tokens``, for
        batches of text-only records (see :class:`~mcmdpo.data.collate.SFTCollator`)."""
        mean_colour = tuple(int(x * 255) for x in self.processor.image_processor.image_mean)  # as LLaVA pads
        return process_image(self.processor, Image.new("RGB", (336, 336), mean_colour))
