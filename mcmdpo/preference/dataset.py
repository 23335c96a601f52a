"""The preference batch: for each record, the (context, image, response) triples its preference
layout scores (2 for DPO, 8 for MCM-DPO), in the layout's order. Unpaired records (KTO: one
alt-text and a label) are scored on the triples of their one answer."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from mcmdpo.data.conversation import tokenize_conversation
from mcmdpo.data.image_inputs import EncodedImage, ImageInputs, encode_image, frames_per_patch, mean_colour_image
from mcmdpo.data.lengths import LengthReport, check_lengths
from mcmdpo.data.negatives import (
    NegativeConfig,
    black_pixels,
    crop_size,
    cropped_image,
    diffuse_pixels,
    negative_image_seed,
    other_index,
    rotated_image,
)
from mcmdpo.data.records import PreferenceExample, UnpairedExample
from mcmdpo.preference.batch import DESIRABLE, INDEX, REFERENCE_LOGPS
from mcmdpo.preference.layout import MCMDPO_LAYOUT, PreferenceLayout

__all__ = ["NegativeConfig", "PreferenceDataset", "responses_of", "unpaired_records"]


def responses_of(example: PreferenceExample | UnpairedExample) -> tuple[str, ...]:
    """A record's answers by the response axis of its triples: (y_w, y_l) of a pair, the one
    alt-text of an unpaired record."""
    if isinstance(example, UnpairedExample):
        return (example.completion,)
    return (example.chosen, example.rejected)


def unpaired_records(examples: Sequence[PreferenceExample]) -> list[dict[str, Any]]:
    """Preference pairs as unpaired records (what KTO reads): the chosen alt-text labelled
    desirable, the rejected one undesirable, each with its record's image and question; written
    as JSON, a file of them trains with ``--objective kto``."""
    records = []
    for example in examples:
        if example.image.data is not None:
            image: dict[str, Any] = {"image": {"bytes": base64.b64encode(example.image.data).decode("ascii")}}
        else:
            image = {"image_path": example.image.path}
        for completion, label, role in ((example.chosen, True, "chosen"), (example.rejected, False, "rejected")):
            records.append({"idx": f"{example.idx}:{role}", **image, "question": example.question,
                            "completion": completion, "label": label})
    return records


class PreferenceDataset(Dataset):
    """One item per trained record: its sequences (one per triple of ``layout``, in its order),
    each a dict of token lists and image tensors, plus the item's position and, when given, its
    precomputed reference log-probs. Only the triples the layout's terms compare are built.

    ``examples`` is the whole file: the negative context (and the ``random`` negative image) of a
    record is another record of the file, as in the original, also when that one is not trained
    on. ``keep`` lists the positions trained on (default: all), e.g. after length checks."""

    def __init__(
        self,
        examples: list[PreferenceExample] | list[UnpairedExample],
        processor: Any,
        image_folder: str | Path | None,
        max_length: int,
        inputs: ImageInputs,
        negatives: NegativeConfig = NegativeConfig(),
        layout: PreferenceLayout = MCMDPO_LAYOUT,
        reference_logps: torch.Tensor | None = None,
        keep: Sequence[int] | None = None,
    ):
        needs_other_record = layout.uses_negative_context or (layout.uses_negative_image and negatives.kind.from_other_record)
        if needs_other_record and len(examples) < 2:
            raise ValueError("negative contexts (and 'random' negative images) need at least two records")
        answers = min((len(responses_of(example)) for example in examples), default=2)
        if any(triple.response >= answers for triple in layout.triples):
            raise ValueError(f"the terms {', '.join(layout.term_names)} score a rejected answer, which unpaired records have not")
        self.examples = examples
        self.processor = processor
        self.image_folder = image_folder
        self.max_length = max_length
        self.inputs = inputs
        self.negatives = negatives
        self.layout = layout
        self.triples = layout.triples
        self.keep = list(range(len(examples))) if keep is None else list(keep)
        self.reference_logps = reference_logps  # [epochs, records, sequences]: see reference_epoch
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.keep)

    @property
    def uses_negative_context(self) -> bool:
        return self.layout.uses_negative_context

    @property
    def uses_negative_image(self) -> bool:
        return self.layout.uses_negative_image

    @property
    def epochs_differ(self) -> bool:
        """Whether the sequences (so the reference log-probs) change from one epoch to the next."""
        return self.uses_negative_image and self.negatives.redrawn_each_epoch

    def set_negatives_epoch(self, epoch: int) -> None:
        """The epoch whose negative images ``__getitem__`` draws (a callback sets it each epoch).
        Not named ``set_epoch``: accelerate's data loaders call that with their own count."""
        self.epoch = epoch

    def reference_epoch(self, epoch: int) -> int:
        """Row of ``reference_logps`` that holds ``epoch``'s reference log-probs."""
        return epoch if self.epochs_differ else 0

    @property
    def lengths(self) -> list[int]:
        """Text length in characters (question and longer response): a cheap stand-in for token
        length when grouping batches."""
        return [len(e.question) + max(map(len, responses_of(e))) for e in (self.examples[r] for r in self.keep)]

    def negative_context_index(self, position: int) -> int:
        """The record of the file whose question is record ``position``'s negative context."""
        return other_index(self.negatives.seed, position, len(self.examples), "context")

    def _image_seed(self, position: int) -> int:
        return negative_image_seed(self.negatives.seed, position, self.epoch if self.negatives.redrawn_each_epoch else None)

    def negative_image(self, position: int, image: Image.Image, clean: EncodedImage) -> EncodedImage:
        """m_l for record ``position``, whose own image and its encoding are given."""
        seed, kind = self._image_seed(position), self.negatives.image_type
        pixels = clean.tensors["pixel_values"]
        if kind == "diffusion":
            return clean.with_pixels(diffuse_pixels(pixels, self.negatives.diffusion_step, seed, frames_per_patch(self.processor)))
        if kind == "black" and not self.inputs.zero_image_is_padding:
            return clean.with_pixels(black_pixels(pixels))
        if kind == "black":  # the mean colour as an image: exact zeros would be dropped as padding
            negative = mean_colour_image(self.processor, (image.height, image.width))
        elif kind == "rotate":
            negative = rotated_image(image, seed)
        elif kind == "crop":
            negative = cropped_image(image, seed)
        else:  # "random": the image of the record that supplies the negative context
            negative = self.examples[self.negative_context_index(position)].image.open(self.image_folder)
        return encode_image(self.processor, negative, self.inputs)

    def negative_image_size(self, position: int, sizes: Sequence[tuple[int, int] | None]) -> tuple[int, int] | None:
        """(height, width) of m_l before processing: it decides the image token count under
        resolution-dependent protocols (anyres), and does not depend on the random draw."""
        size = sizes[position]
        if self.negatives.image_type == "crop" and size is not None:
            return crop_size(*size)
        if self.negatives.kind.from_other_record:
            return sizes[self.negative_context_index(position)]
        return size

    def turns_of(self, position: int) -> dict[tuple[int, int], tuple[tuple[str, str], ...]]:
        """Record ``position``'s conversation for each (context, response) choice: its own or
        the lending record's question, its chosen or rejected alt-text."""
        example = self.examples[position]
        contexts = [example.question]
        if self.uses_negative_context:
            contexts.append(self.examples[self.negative_context_index(position)].question)
        responses = responses_of(example)
        return {(c, r): ((context, response),) for c, context in enumerate(contexts) for r, response in enumerate(responses)}

    def planned_conversations(
        self, position: int, sizes: Sequence[tuple[int, int] | None]
    ) -> list[tuple[tuple[tuple[str, str], ...], tuple[int, int] | None]]:
        """(turns, image size) of each sequence record ``position`` trains on, for length checks."""
        turns = self.turns_of(position)
        image_sizes = [sizes[position], self.negative_image_size(position, sizes) if self.uses_negative_image else None]
        return [(turns[t.context, t.response], image_sizes[t.image]) for t in self.triples]

    def keep_records(self, positions: Sequence[int]) -> None:
        """Train on the records at ``positions`` only (those the length checks keep); the others
        still lend their contexts and images as negatives."""
        self.keep = list(positions)

    def keep_what_fits(self, sizes: Sequence[tuple[int, int] | None], show_progress: bool = True) -> LengthReport:
        """Measure every sequence of every record in this process
        (:func:`~mcmdpo.data.lengths.check_lengths`), train on the records that keep an answer
        token in each, and return the report."""
        report = check_lengths(self, sizes, show_progress=show_progress)
        self.keep_records(report.kept)
        return report

    def __getitem__(self, index: int) -> dict[str, Any]:
        position = self.keep[index]
        example = self.examples[position]
        image = example.image.open(self.image_folder)
        images = [encode_image(self.processor, image, self.inputs)]
        if self.uses_negative_image:
            images.append(self.negative_image(position, image, images[0]))
        turns = self.turns_of(position)
        sequences = []
        for triple in self.triples:
            encoded = images[triple.image]
            tokens = tokenize_conversation(
                self.processor, turns[triple.context, triple.response], encoded.replacement, self.max_length, self.inputs.token_type_key
            )
            sequences.append({**tokens, **encoded.tensors})
        item: dict[str, Any] = {"sequences": sequences, INDEX: index}
        if self.reference_logps is not None:
            # NaN where the reference pass did not score it (a record the run does not train on)
            item[REFERENCE_LOGPS] = self.reference_logps[self.reference_epoch(self.epoch)][index]
        if isinstance(example, UnpairedExample):
            item[DESIRABLE] = example.desirable
        return item
