"""Loading a data file into typed examples, validating every record and decoding every image
before any long work starts."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from mcmdpo.data.parsing import KINDS, PARSERS, guess_kind
from mcmdpo.data.reading import read_raw_records
from mcmdpo.data.records import DataValidationError, ImageRef, Problem


@dataclass
class LoadedData:
    """The examples of one file; ``image_sizes[i]`` is (height, width) of example i's image,
    or None when images were not checked."""

    path: str
    kind: str
    examples: list[Any]
    image_sizes: list[tuple[int, int] | None]


def _check_image(image: ImageRef, image_folder: str | Path | None) -> tuple[tuple[int, int] | None, str | None]:
    """Decode ``image`` in full; return its (height, width) or a message saying what is wrong."""
    shown = str(image.resolve(image_folder)) if image.data is None else f"embedded image {image.describe()}"
    try:
        return image.verify(image_folder), None
    except FileNotFoundError:
        return None, f"image file not found: {shown}"
    except IsADirectoryError:
        return None, f"image path is a directory: {shown}"
    except UnidentifiedImageError:
        return None, f"not a readable image (corrupt or unknown format): {shown}"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return None, f"image cannot be fully decoded (truncated or damaged: {error}): {shown}"


def verify_images(
    examples: list[Any],
    path: str | Path,
    image_folder: str | Path | None,
    problems: list[Problem],
    show_progress: bool = True,
    num_workers: int | None = None,
) -> tuple[list[Any], list[tuple[int, int] | None]]:
    """Decode every distinct image of the examples once (threads: PIL releases the GIL while
    decoding; benchmarks ask many questions about one image). Returns the examples whose image is
    sound (or who have none) and their (height, width); a problem naming the record and the field
    is added for each other one."""
    if not examples:
        return [], []
    distinct = list({example.image: None for example in examples if example.image is not None})
    workers = num_workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        checked = pool.map(lambda image: _check_image(image, image_folder), distinct)
        checked = list(tqdm(checked, total=len(distinct), desc=f"checking images of {Path(path).name}", disable=not show_progress))
    by_image = dict(zip(distinct, checked))
    valid: list[Any] = []
    sizes: list[tuple[int, int] | None] = []
    for example in examples:
        size, message = by_image[example.image] if example.image is not None else (None, None)
        if message is None:
            valid.append(example)
            sizes.append(size)
            continue
        field = example.image.source_field or ("image.bytes" if example.image.data is not None else "image_path")
        problems.append(Problem(str(path), message, example.location, example.idx, field))
    return valid, sizes


def find_problems(
    path: str | Path,
    kind: str | None = None,
    image_folder: str | Path | None = None,
    check_images: bool = True,
    show_progress: bool = True,
    num_workers: int | None = None,
) -> tuple[LoadedData, list[Problem]]:
    """Parse ``path`` as ``kind`` (guessed when None) and return the valid examples with every
    problem found: file-level, per record and per image."""
    path = Path(path)
    raw_records, problems, file_format = read_raw_records(path)
    if kind is None:
        kind = guess_kind(raw_records[0][1] if raw_records else None, file_format == "jsonl")
    if kind not in KINDS:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {KINDS}")
    if not raw_records and not problems:
        problems.append(Problem(str(path), "the file holds no records"))
    parser = PARSERS[kind]
    examples = [example for location, record in raw_records if (example := parser(location, record, problems))]
    sizes: list[tuple[int, int] | None] = [None] * len(examples)
    if check_images:
        examples, sizes = verify_images(examples, path, image_folder, problems, show_progress, num_workers)
    return LoadedData(str(path), kind, examples, sizes), problems


def load_examples(
    path: str | Path,
    kind: str,
    image_folder: str | Path | None = None,
    check_images: bool = True,
    show_progress: bool = True,
) -> LoadedData:
    """Load ``path`` as ``kind``; raise :class:`DataValidationError` listing every problem."""
    loaded, problems = find_problems(path, kind, image_folder, check_images, show_progress)
    if problems:
        raise DataValidationError(problems)
    return loaded
