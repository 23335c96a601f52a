"""The SFT dataset: validated examples, length-checked before training, encoded lazily."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mcmdpo.data.conversation import encode_conversation, plan_sequence
from mcmdpo.data.loading import LoadedData
from mcmdpo.data.records import SFTExample

logger = logging.getLogger(__name__)


@dataclass
class TruncationReport:
    total: int
    dropped: list[Any]  # idx of records whose whole answer would be cut: not trained on
    truncated: list[Any]  # idx of records whose answer is cut short

    def summary(self, max_length: int) -> str:
        return (
            f"{self.total} records; max_length={max_length}: {len(self.dropped)} dropped because the prompt "
            f"alone reaches max_length (no answer token would remain), {len(self.truncated)} with their answer cut short"
        )


def check_lengths(
    loaded: LoadedData, processor: Any, max_length: int, show_progress: bool = True
) -> tuple[list[SFTExample], TruncationReport]:
    """Drop, count and report the records truncation would leave with no answer at all."""
    kept: list[SFTExample] = []
    report = TruncationReport(len(loaded.examples), [], [])
    pairs = list(zip(loaded.examples, loaded.image_sizes))
    for example, size in tqdm(pairs, desc="measuring sequence lengths", disable=not show_progress):
        # Without a checked size, assume CLIP-L/336's; only resolution-dependent processors care.
        plan = plan_sequence(processor, example.turns, size or (336, 336))
        if plan.first_answer >= max_length:
            report.dropped.append(example.idx)
            continue
        if plan.length > max_length:
            report.truncated.append(example.idx)
        kept.append(example)
    return kept, report


class SFTDataset(Dataset):
    """Encodes one example per item: the image is decoded and processed on access."""

    def __init__(self, examples: list[SFTExample], processor: Any, image_folder: str | Path | None, max_length: int):
        self.examples = examples
        self.processor = processor
        self.image_folder = image_folder
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.examples[index]
        image = example.image.open(self.image_folder)
        return encode_conversation(self.processor, image, example.turns, self.max_length)
