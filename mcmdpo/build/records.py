"""What a record of the builder holds, and the small facts every stage needs about it: its key,
its post (the context inside the question), and its image.

A record, as collect writes it and each later stage extends it: ``key`` (its id as text, unique
among kept records), ``id`` (as the input gave it, else its position), ``source`` (file and
position), ``image`` (``{"path": P}``, relative to the image folder, or ``{"stored": "images/SHA.EXT"}``
for an image embedded in the input, kept in the output folder), ``image_sha256``, ``question``
(the prompt as training sees it), ``context`` (the post) and ``alt_text``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from mcmdpo.data.records import ImageRef
from mcmdpo.data.synthetic import INSTRUCTION
from mcmdpo.eval.clip_score import CONTEXT_MARKER, post_of

STORED_IMAGES = "images"


def context_of(question: str) -> str:
    """The post inside a question: what follows its "Context:" line break (the project's SFT data
    and the released pairs alike); nothing where there is no "Context:"."""
    return post_of(question).strip() if CONTEXT_MARKER in question else ""


def question_for(context: str) -> str:
    """The question the project's SFT data asks about a post."""
    return INSTRUCTION + context


def image_ref(record: dict[str, Any], output_dir: str | Path) -> ImageRef:
    """The record's image: a path under the image folder, or an embedded image collect stored."""
    image = record["image"]
    if "stored" in image:
        return ImageRef(path=str(Path(output_dir) / image["stored"]))
    return ImageRef(path=image["path"])


def image_folder_for(record: dict[str, Any], image_folder: str | None) -> str | None:
    """The folder ``image_ref``'s path is relative to (stored images carry a full path)."""
    return None if "stored" in record["image"] else image_folder


def open_image(record: dict[str, Any], image_folder: str | None, output_dir: str | Path) -> Image.Image:
    return image_ref(record, output_dir).open(image_folder_for(record, image_folder))
