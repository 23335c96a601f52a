"""Length checks before training: every sequence a record trains on (for MCM-DPO also those with
another record's context and with the negative image) is measured; a record any of whose
sequences would keep no answer token is dropped, counted and reported, never trained on silently.

The report (records kept, dropped and cut, image tokens per image) is printed and written to
``OUTPUT_DIR/data_report.json`` so a user sees, before a long run, what the image protocol and
``--max_length`` do to their data.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, Sequence

from tqdm.auto import tqdm

from mcmdpo.compat import NUM_MULTIMODAL_TOKENS, relies_on
from mcmdpo.data.conversation import plan_sequence
from mcmdpo.data.image_inputs import ImageInputs, image_replacement, replacement_ids
from mcmdpo.data.records import DataValidationError, Problem
from mcmdpo.files import write_text_atomically

Turns = Sequence[tuple[str, str]]
ImageSizes = Sequence[tuple[int, int] | None]  # (height, width) of each record's image; None: text only
# A record's sequences to measure: (turns, image (height, width) or None for a text-only one).
PlannedConversations = list[tuple[Turns, tuple[int, int] | None]]


class PlannedDataset(Protocol):
    """A dataset as the length checks read it, before it is told which records to keep (both
    :class:`~mcmdpo.data.sft_dataset.SFTDataset` and
    :class:`~mcmdpo.preference.dataset.PreferenceDataset` are one): the file's records, the
    processor, image protocol and ``max_length`` that encode them, and each record's sequences."""

    examples: Sequence[Any]
    processor: Any
    max_length: int
    inputs: ImageInputs

    def planned_conversations(self, position: int, sizes: ImageSizes) -> PlannedConversations: ...


@dataclass
class LengthReport:
    records: int
    max_length: int
    kept: list[int] = field(default_factory=list)  # positions of the records trained on
    dropped: list[Any] = field(default_factory=list)  # idx of records a sequence of which would keep no answer token
    truncated: list[Any] = field(default_factory=list)  # idx of records a sequence of which is cut short
    image_tokens: list[int] = field(default_factory=list)  # per record image: the tokens it becomes, markers included

    def as_dict(self) -> dict[str, Any]:
        tokens = self.image_tokens
        return {
            "records": self.records,
            "kept": len(self.kept),
            "dropped": len(self.dropped),
            "truncated": len(self.truncated),
            "image_tokens": {"min": min(tokens), "median": statistics.median(tokens), "max": max(tokens)} if tokens else None,
            "max_length": self.max_length,
            "dropped_idx": self.dropped,
            "truncated_idx": self.truncated,
        }

    def summary(self) -> str:
        tokens = self.as_dict()["image_tokens"]
        shown = f"; tokens per image min {tokens['min']} / median {tokens['median']:g} / max {tokens['max']}" if tokens else ""
        return (
            f"{self.records} records, max_length={self.max_length}: {len(self.kept)} kept, {len(self.dropped)} dropped "
            f"(a sequence would keep no answer token), {len(self.truncated)} with an answer cut short{shown}"
        )

    def write(self, path: str | Path) -> Path:
        """Write the report as JSON, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_text_atomically(path, json.dumps(self.as_dict(), indent=1, default=str) + "\n")


@relies_on(NUM_MULTIMODAL_TOKENS)
def image_token_count(processor: Any, size: tuple[int, int]) -> int | None:
    """The processor's own count of the tokens an image of (height, width) becomes, computed from
    the size alone (no image is encoded), where the processor offers it."""
    counter = getattr(processor, "_get_num_multimodal_tokens", None)
    if counter is None:
        return None
    try:
        return int(counter(image_sizes=[list(size)]).num_image_tokens[0])
    except (AttributeError, KeyError, TypeError, ValueError, NotImplementedError):
        return None


# A record's fate under --max_length: trained on whole, trained on with an answer cut short, or
# dropped (a sequence would keep no answer token).
KEPT, CUT, DROPPED = "kept", "cut", "dropped"


class Measurement(NamedTuple):
    """What measuring one record found: its fate and the tokens its image becomes (None without
    an image)."""

    fate: str
    image_tokens: int | None


def measure_records(
    dataset: PlannedDataset,
    image_sizes: ImageSizes,
    positions: Sequence[int] | None = None,
    show_progress: bool = True,
) -> list[Measurement | Problem]:
    """Measure every sequence the records at ``positions`` (default: all) train on, as
    ``dataset.planned_conversations`` plans them: one :class:`Measurement` per record, in order,
    or the :class:`Problem` that stopped it (e.g. the text holds the model's own image
    placeholder). Records are measured independently, so any share of them can be measured
    anywhere and the results put back in order."""
    examples, processor, max_length, inputs = dataset.examples, dataset.processor, dataset.max_length, dataset.inputs
    positions = range(len(examples)) if positions is None else positions
    expansions: dict[Any, tuple[str, int]] = {}

    def expansion(size: tuple[int, int]) -> tuple[str, int]:
        """What the placeholder becomes for an image of this size, and its token count. Encoding
        an image can take a second (SmolVLM resizes to 2,048 pixels and crops), so one image is
        encoded per distinct count of the processor's own token arithmetic: images with the same
        count expand to the same number of tokens, bounded by special tokens in every family."""
        size = tuple(size)
        count = image_token_count(processor, size)
        key = ("size", size) if count is None else ("count", count)
        if key not in expansions:
            text = image_replacement(processor, size, inputs)
            expansions[key] = text, len(replacement_ids(processor, text))
        return expansions[key]

    results: list[Measurement | Problem] = []
    for position in tqdm(positions, desc="measuring sequence lengths", disable=not show_progress):
        example = examples[position]
        tokens = expansion(image_sizes[position])[1] if image_sizes[position] is not None else None
        try:
            plans = [
                plan_sequence(processor, turns, None if size is None else expansion(size)[0])
                for turns, size in dataset.planned_conversations(position, image_sizes)
            ]
        except ValueError as error:  # e.g. the text holds the model's own image placeholder
            location = getattr(example, "location", None)
            results.append(Problem(str(location.file) if location else "", str(error), location, example.idx))
            continue
        fate = DROPPED if any(plan.first_answer >= max_length for plan in plans) else CUT if any(
            plan.length > max_length for plan in plans) else KEPT
        results.append(Measurement(fate, tokens))
    return results


def report_from(examples: Sequence[Any], max_length: int, measurements: Sequence[Measurement]) -> LengthReport:
    """The report of every record's measurement (one per record, in order)."""
    report = LengthReport(len(examples), max_length)
    for position, (example, (fate, tokens)) in enumerate(zip(examples, measurements, strict=True)):
        if tokens is not None:
            report.image_tokens.append(tokens)
        if fate == DROPPED:
            report.dropped.append(example.idx)
            continue
        if fate == CUT:
            report.truncated.append(example.idx)
        report.kept.append(position)
    return report


def report_of_measured(dataset: PlannedDataset, measured: Sequence[Measurement | Problem]) -> LengthReport:
    """The report of every record's measurement, or :class:`DataValidationError` listing every
    record that could not be measured."""
    problems = [result for result in measured if isinstance(result, Problem)]
    if problems:
        raise DataValidationError(problems)
    return report_from(dataset.examples, dataset.max_length, measured)


def check_lengths(dataset: PlannedDataset, image_sizes: ImageSizes, show_progress: bool = True) -> LengthReport:
    """Measure every sequence of every record of ``dataset`` in this process and report which
    records to keep (:meth:`mcmdpo.train.data_checks.DataChecks.check_lengths` shares the same
    work among a training job's processes); raise :class:`DataValidationError` listing every
    record that cannot be measured."""
    return report_of_measured(dataset, measure_records(dataset, image_sizes, show_progress=show_progress))
