"""Typed examples and the problem reports that validation produces."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass(frozen=True)
class RecordLocation:
    """Where a record sits in its file: ``unit`` is "record" (0-based index in a JSON array),
    "row" (0-based parquet row) or "line" (1-based JSON Lines line)."""

    file: str
    unit: str
    number: int

    def __str__(self) -> str:
        return f"{self.file}, {self.unit} {self.number}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, precise enough to fix without a debugger."""

    file: str
    message: str
    location: RecordLocation | None = None
    idx: Any = None
    field: str | None = None

    def __str__(self) -> str:
        where = str(self.location) if self.location is not None else self.file
        if self.idx is not None:
            where += f" (idx={self.idx!r})"
        if self.field is not None:
            where += f", field '{self.field}'"
        return f"{where}: {self.message}"


class DataValidationError(ValueError):
    """Raised with every problem found in a data file, not only the first."""

    def __init__(self, problems: list[Problem], max_listed: int = 50):
        self.problems = problems
        lines = [str(p) for p in problems[:max_listed]]
        if len(problems) > max_listed:
            lines.append(f"... and {len(problems) - max_listed} more")
        super().__init__(f"{len(problems)} problem(s) in the input data:\n" + "\n".join(lines))


@dataclass(frozen=True)
class ImageRef:
    """An image given by a path (relative to the image folder) or by its encoded bytes."""

    path: str | None = None
    data: bytes | None = field(default=None, repr=False)
    source_field: str | None = None  # the record field it came from, where not image_path / image.bytes

    def describe(self) -> str:
        return self.path if self.path is not None else f"<{len(self.data or b'')} bytes>"

    def resolve(self, image_folder: str | Path | None) -> Path:
        assert self.path is not None
        return Path(image_folder) / self.path if image_folder else Path(self.path)

    def source(self, image_folder: str | Path | None) -> io.BytesIO | Path:
        return io.BytesIO(self.data) if self.data is not None else self.resolve(image_folder)

    def open(self, image_folder: str | Path | None) -> Image.Image:
        """Decode the whole image (``load`` catches truncation) and return it as RGB."""
        with Image.open(self.source(image_folder)) as image:
            image.load()
            return image.convert("RGB")

    def verify(self, image_folder: str | Path | None) -> tuple[int, int]:
        """Check the file's structure and checksums (``verify``: a PNG cut inside its last chunk
        still decodes) and decode it in full (``load``: a cut JPEG still verifies). Returns
        (height, width); raises what PIL raises."""
        with Image.open(self.source(image_folder)) as image:
            image.verify()
        decoded = self.open(image_folder)
        return decoded.height, decoded.width


@dataclass(frozen=True)
class PreferenceExample:
    """One preference record: instruction + context (``question``), image, chosen and rejected."""

    idx: Any
    image: ImageRef
    question: str
    chosen: str
    rejected: str
    location: RecordLocation


@dataclass(frozen=True)
class UnpairedExample:
    """One unpaired record (KTO): instruction + context (``question``), image, one alt-text
    (``completion``) and whether it is desirable (``label``)."""

    idx: Any
    image: ImageRef
    question: str
    completion: str
    desirable: bool
    location: RecordLocation


@dataclass(frozen=True)
class SFTExample:
    """A conversation about one image: ``turns`` are (user, assistant) pairs; the image belongs to
    the first user turn. ``image`` is None for a text-only conversation."""

    idx: Any
    image: ImageRef | None
    turns: tuple[tuple[str, str], ...]
    location: RecordLocation


@dataclass(frozen=True)
class TestExample:
    """A test record. ``record`` is the raw input, carried to the output untouched (a benchmark
    reader leaves out an embedded image and may add the split). ``image`` is None for a
    question without an image (HallusionBench has some)."""

    __test__ = False  # not a pytest test class, despite the name

    idx: Any
    image: ImageRef | None
    question: str
    references: tuple[str, ...]
    record: dict
    location: RecordLocation
