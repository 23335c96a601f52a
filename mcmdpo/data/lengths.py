"""Length checks before training: records whose whole answer truncation would cut are dropped,
counted and reported, never trained on silently."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from mcmdpo.data.conversation import plan_sequence
from mcmdpo.data.loading import LoadedData

Turns = Sequence[tuple[str, str]]


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
    loaded: LoadedData,
    processor: Any,
    max_length: int,
    conversations_of: Callable[[Any], list[Turns]] | None = None,
    show_progress: bool = True,
) -> tuple[list[Any], TruncationReport]:
    """Keep the examples all of whose conversations (``conversations_of``, default
    :func:`sft_conversations`) keep an answer token within ``max_length``; report the others as
    dropped and those cut short as truncated."""
    conversations_of = conversations_of or sft_conversations
    kept: list[Any] = []
    report = TruncationReport(len(loaded.examples), [], [])
    pairs = list(zip(loaded.examples, loaded.image_sizes))
    for example, size in tqdm(pairs, desc="measuring sequence lengths", disable=not show_progress):
        # Without a checked size, assume CLIP-L/336's; only resolution-dependent processors care.
        plans = [plan_sequence(processor, turns, size or (336, 336)) for turns in conversations_of(example)]
        if any(plan.first_answer >= max_length for plan in plans):
            report.dropped.append(example.idx)
            continue
        if any(plan.length > max_length for plan in plans):
            report.truncated.append(example.idx)
        kept.append(example)
    return kept, report


def sft_conversations(example: Any) -> list[Turns]:
    return [example.turns]


def preference_conversations(example: Any) -> list[Turns]:
    return [((example.question, example.chosen),), ((example.question, example.rejected),)]
