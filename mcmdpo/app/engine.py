"""The model side of the app, free of any web code: load a checkpoint as inference loads it, write
alt-text with the project's generation code, and score an alt-text with the preference
evaluation's own code.

A score is that of one preference record (c_w = the post, m_w = the image, y_w = the alt-text)
scored exactly as :mod:`mcmdpo.eval.preferences` scores a held-out record: the same
:class:`~mcmdpo.preference.dataset.PreferenceDataset` (the negative image m_l diffused as
evaluation diffuses it, with its seed for record 0), the same preference step and
:func:`~mcmdpo.eval.preferences.summarize`. Only the image and context terms are built (the
record has no rejected alt-text), so three sequences are scored: (c_w, m_w, y_w), (c_w, m_l, y_w)
and (c_l, m_w, y_w), where c_l is an unrelated post lent by a second record, as the evaluation
takes another record's question.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mcmdpo.data.image_inputs import ImageInputs
from mcmdpo.data.negatives import NegativeConfig
from mcmdpo.preference.dataset import PreferenceDataset
from mcmdpo.data.records import DataValidationError, ImageRef, PreferenceExample, RecordLocation
from mcmdpo.eval.generation import GenerationSettings, generate_batch
from mcmdpo.eval.preferences import sequence_logps_of, summarize
from mcmdpo.data.conversation import DEFAULT_MAX_LENGTH
from mcmdpo.model import loading
from mcmdpo.model.families import ModelFamily
from mcmdpo.preference.layout import ANCHOR, build_layout
from mcmdpo.preference.packing import SequencePacking, packing_for, sequence_packing

# The evaluation's image and context terms: (c_w, m_w, y_w) against (c_w, m_l, y_w) and (c_l, m_w, y_w).
MARGIN_LAYOUT = build_layout(("image", "context"))


class ScoringError(ValueError):
    """An alt-text the model cannot score as asked (too long for ``max_length``, a text holding the
    model's own image placeholder), with the message the page shows."""


@dataclass(frozen=True)
class LoadOptions:
    """How every checkpoint is loaded (inference's flags). ``dtype`` None: float32, the
    preference evaluation's, on every device."""

    image_aspect_ratio: str = "auto"
    conversation_template: str = "auto"
    dtype: str | None = None
    device: str | None = None  # default: cuda where available, else cpu (as inference)


@dataclass
class Checkpoint:
    """One loaded checkpoint: its model, a processor for generation (padded on the left, as
    inference loads it) and one for scoring (on the right, as the evaluation loads it), its
    family's image inputs and the sequence packing the evaluation would score it with."""

    label: str
    path: str
    model: Any
    generation_processor: Any
    scoring_processor: Any
    family: ModelFamily
    packing: SequencePacking
    load_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def inputs(self) -> ImageInputs:
        return self.family.inputs

    def describe(self) -> str:
        config = self.model.config
        return (f"{self.family.name}, image protocol {getattr(config, 'image_aspect_ratio', '?')}, "
                f"{sum(p.numel() for p in self.model.parameters()):,} parameters, {self.model.dtype}, {self.device}")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


@dataclass(frozen=True)
class Score:
    """One alt-text under one model. ``logp``: log p(y | c, m) summed over the answer's tokens (its
    end-of-turn token included), the evaluation's sequence log-prob. ``image_margin``: logp minus
    log p(y | c, diffused m); ``context_margin``: logp minus log p(y | unrelated c, m). A positive
    margin: the clean image (the post's own context) makes this alt-text more likely."""

    logp: float
    image_margin: float
    context_margin: float
    truncated: bool = False

    def as_dict(self) -> dict[str, float | bool]:
        return {"logp": self.logp, "image_margin": self.image_margin, "context_margin": self.context_margin, "truncated": self.truncated}


def load_checkpoint(path: str | Path, label: str | None = None, options: LoadOptions = LoadOptions(), log: Any = sys.stderr) -> Checkpoint:
    """Load ``path`` through the project's loaders, as inference and the evaluation load it."""
    path = str(path)
    start = time.perf_counter()
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"loading model {path} ...", file=log, flush=True)
    loaded = loading.load_checkpoint(
        path, image_aspect_ratio=options.image_aspect_ratio, conversation_template=options.conversation_template,
        dtype=options.dtype or "float32",
    )
    scoring_processor = loaded.processor
    generation_processor = loaded.load_processor("left", options.conversation_template)
    model = loaded.model.to(device).eval()
    packing_name, notice = packing_for("tree", model.config._attn_implementation)
    if notice:
        print(f"note: {notice}", file=log, flush=True)
    checkpoint = Checkpoint(
        label or Path(path).name, path, model, generation_processor, scoring_processor, loaded.family,
        sequence_packing(packing_name, scoring_processor, MARGIN_LAYOUT, loaded.family), time.perf_counter() - start,
    )
    print(f"loaded {checkpoint.label} in {checkpoint.load_seconds:.1f} s: {checkpoint.describe()}", file=log, flush=True)
    return checkpoint


def build_question(instruction: str, post: str) -> str:
    """The question of a test record: the instruction, then the post (the synthetic data's and the
    released test files' ``question`` is exactly this)."""
    return f"{instruction}{post}"


def generate(checkpoint: Checkpoint, image: Image.Image, question: str, settings: GenerationSettings, seed: int = 0) -> str:
    """The alt-text ``checkpoint`` writes for ``image`` and ``question``, generated as inference
    generates it (:func:`~mcmdpo.eval.generation.generate_batch`); ``seed`` seeds sampling."""
    with checkpoint.lock:
        torch.manual_seed(seed)
        return generate_batch(checkpoint.model, checkpoint.generation_processor, checkpoint.inputs, [question], [image], settings)[0]


def image_ref(image: Image.Image) -> ImageRef:
    """``image`` as an in-memory record image (PNG: lossless, so the record decodes to the same pixels)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return ImageRef(data=buffer.getvalue())


def margin_records(image: Image.Image, question: str, alt_text: str, unrelated_question: str) -> list[PreferenceExample]:
    """The record to score (position 0) and the record that lends it the unrelated context."""
    ref = image_ref(image)
    return [
        PreferenceExample("page", ref, question, alt_text, alt_text, RecordLocation("the page", "record", 0)),
        PreferenceExample("unrelated", ref, unrelated_question, alt_text, alt_text, RecordLocation("the page", "record", 1)),
    ]


def score(
    checkpoint: Checkpoint,
    image: Image.Image,
    question: str,
    alt_text: str,
    unrelated_question: str,
    negatives: NegativeConfig = NegativeConfig(),
    max_length: int = DEFAULT_MAX_LENGTH,
) -> Score:
    """``alt_text``'s log-prob and its image and context margins under ``checkpoint``, computed by
    the preference evaluation's code on a two-record file (see the module's docstring)."""
    if question.strip() == unrelated_question.strip():
        raise ScoringError("The unrelated post is the post itself, so the context margin would be 0: give another post.")
    records = margin_records(image, question, alt_text, unrelated_question)
    dataset = PreferenceDataset(records, checkpoint.scoring_processor, None, max_length, checkpoint.inputs, negatives, MARGIN_LAYOUT)
    try:
        report = dataset.keep_what_fits([(image.height, image.width)] * len(records), show_progress=False)
    except DataValidationError as error:
        raise ScoringError(f"{checkpoint.label}: cannot score this text: {error.problems[0].message}") from None
    if 0 not in report.kept:
        raise ScoringError(
            f"{checkpoint.label}: the prompt (image tokens and post, or with the unrelated post) leaves no room for the "
            f"alt-text within {max_length} tokens (--max_length)."
        )
    dataset.keep = [0]
    with checkpoint.lock:
        logps = sequence_logps_of(checkpoint.model, dataset, checkpoint.packing, batch_size=1, show_progress=False)
    metrics = summarize(logps, MARGIN_LAYOUT)
    return Score(
        logp=logps[0, MARGIN_LAYOUT.column(ANCHOR)].item(),
        image_margin=metrics["image_margin"],
        context_margin=metrics["context_margin"],
        truncated="page" in report.truncated,
    )
