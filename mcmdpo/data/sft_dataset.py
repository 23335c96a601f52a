"""The SFT dataset: validated, length-checked examples, encoded lazily."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from torch.utils.data import Dataset

from mcmdpo.data.conversation import encode_conversation, token_types
from mcmdpo.data.image_inputs import EncodedImage, ImageInputs, encode_image, mean_colour_image, replacement_ids
from mcmdpo.data.lengths import ImageSizes, PlannedConversations
from mcmdpo.data.records import SFTExample


class SFTDataset(Dataset):
    """Encodes one example per item: the image (if the record has one: text-only records are
    accepted, as upstream accepts them) is decoded and processed on access."""

    def __init__(
        self, examples: list[SFTExample], processor: Any, image_folder: str | Path | None, max_length: int, inputs: ImageInputs
    ):
        self.examples = examples
        self.processor = processor
        self.image_folder = image_folder
        self.max_length = max_length
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def lengths(self) -> list[int]:
        """Text length in characters: a cheap stand-in for token length when grouping batches."""
        return [sum(len(user) + len(answer) for user, answer in example.turns) for example in self.examples]

    def planned_conversations(self, position: int, sizes: ImageSizes) -> PlannedConversations:
        """(turns, image size) of the one sequence record ``position`` trains on, for length checks."""
        return [(self.examples[position].turns, sizes[position])]

    def keep_records(self, positions: Sequence[int]) -> None:
        """Train on the records at ``positions`` only (those the length checks keep)."""
        self.examples = [self.examples[position] for position in positions]

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.examples[index]
        image = example.image.open(self.image_folder) if example.image is not None else None
        return encode_conversation(self.processor, image, example.turns, self.inputs, self.max_length)

    def blank_image(self) -> tuple[EncodedImage, dict[str, list[int]]]:
        """One blank (mean-colour) image and its tokens (input_ids, and image-token flags where
        the family takes them), for batches of text-only records
        (see :class:`~mcmdpo.data.collate.SFTCollator`)."""
        encoded = encode_image(self.processor, mean_colour_image(self.processor, (336, 336)), self.inputs)
        ids = replacement_ids(self.processor, encoded.replacement)
        tokens = {"input_ids": ids}
        if self.inputs.token_type_key:
            tokens[self.inputs.token_type_key] = token_types(self.processor, ids)
        return encoded, tokens
