"""Loading a data file into typed examples, validating every record and decoding every image
before any long work starts."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
    or None when images were not checked. ``warnings``: what is allowed but likely a mistake
    (see :func:`find_warnings`); never a reason to stop."""

    path: str
    kind: str
    examples: list[Any]
    image_sizes: list[tuple[int, int] | None]
    warnings: list[Problem] = field(default_factory=list)


def _image_field(image: ImageRef) -> str:
    """The record field an image came from, as problems name it."""
    return image.source_field or ("image.bytes" if image.data is not None else "image_path")


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


# What checking one image found: its (height, width), or None and a message saying what is wrong.
ImageCheck = tuple[tuple[int, int] | None, str | None]


def distinct_images(examples: list[Any]) -> list[ImageRef]:
    """The images of the examples, each once, in the order of their first record."""
    return list({example.image: None for example in examples if example.image is not None})


def check_images(
    images: list[ImageRef],
    image_folder: str | Path | None,
    show_progress: bool = True,
    num_workers: int | None = None,
    description: str = "checking images",
) -> list[ImageCheck]:
    """Decode each of ``images`` in full (threads: PIL releases the GIL while decoding); one
    :data:`ImageCheck` per image, in order."""
    if not images:
        return []
    workers = num_workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        checked = pool.map(lambda image: _check_image(image, image_folder), images)
        return list(tqdm(checked, total=len(images), desc=description, disable=not show_progress))


def apply_image_checks(
    examples: list[Any], checks: dict[ImageRef, ImageCheck], path: str | Path, problems: list[Problem]
) -> tuple[list[Any], list[tuple[int, int] | None]]:
    """The examples whose image is sound (or who have none) and their (height, width), given
    what checking each distinct image found; a problem naming the record and the field is added
    for each other one."""
    valid: list[Any] = []
    sizes: list[tuple[int, int] | None] = []
    for example in examples:
        size, message = checks[example.image] if example.image is not None else (None, None)
        if message is None:
            valid.append(example)
            sizes.append(None if size is None else tuple(size))
            continue
        problems.append(Problem(str(path), message, example.location, example.idx, _image_field(example.image)))
    return valid, sizes


def verify_images(
    examples: list[Any],
    path: str | Path,
    image_folder: str | Path | None,
    problems: list[Problem],
    show_progress: bool = True,
    num_workers: int | None = None,
) -> tuple[list[Any], list[tuple[int, int] | None]]:
    """Decode every distinct image of the examples once (benchmarks ask many questions about one
    image). Returns the examples whose image is sound (or who have none) and their (height,
    width); a problem naming the record and the field is added for each other one. Training
    shares this work out among its processes (:mod:`mcmdpo.train.data_checks`)."""
    if not examples:
        return [], []
    distinct = distinct_images(examples)
    checked = check_images(distinct, image_folder, show_progress, num_workers, f"checking images of {Path(path).name}")
    return apply_image_checks(examples, dict(zip(distinct, checked)), path, problems)


def _where(example: Any) -> str:
    return f"{example.location.unit} {example.location.number}"


def _idx_key(idx: Any) -> Any:
    """``idx`` as a dictionary key: JSON values, told apart by type (1, 1.0, "1" and true differ)."""
    try:
        hash(idx)
        return type(idx).__name__, idx
    except TypeError:
        return type(idx).__name__, repr(idx)


def _escapes(path: str, folder: str | Path) -> bool:
    """Whether the relative ``path`` leads out of ``folder``: ``..`` components are resolved as
    text, without following links (a folder of links to images elsewhere stays inside)."""
    folder = os.path.abspath(folder)
    return os.path.commonpath([folder, os.path.normpath(os.path.join(folder, path))]) != folder


def find_warnings(loaded: LoadedData, image_folder: str | Path | None, max_listed: int = 10) -> list[Problem]:
    """What in ``loaded`` is allowed but likely a mistake, each naming its records:

    - an ``idx`` used by more than one record (outputs and reports keyed by idx mix them up):
      one warning per value, at its first record, listing the others;
    - an image path that leaves ``image_folder`` (absolute, or escaping it through ``..``):
      one warning per record. Not checked without an image folder, nor for embedded images."""
    warnings: list[Problem] = []
    by_idx: dict[Any, list[Any]] = {}
    for example in loaded.examples:
        if example.idx is not None:
            by_idx.setdefault(_idx_key(example.idx), []).append(example)
    for same in by_idx.values():
        if len(same) > 1:
            first, others = same[0], same[1:]
            listed = ", ".join(_where(example) for example in others[:max_listed])
            if len(others) > max_listed:
                listed += f" and {len(others) - max_listed} more"
            message = f"duplicate idx, also used by {listed}"
            warnings.append(Problem(loaded.path, message, first.location, first.idx))
    if image_folder is None:
        return warnings
    for example in loaded.examples:
        image = example.image
        if image is None or image.data is not None or image.path is None:
            continue
        if Path(image.path).is_absolute():
            message = f"absolute image path, read from there and not from --image_folder: {image.path}"
        elif _escapes(image.path, image_folder):
            message = f"image path leaves --image_folder through '..': {image.path}"
        else:
            continue
        warnings.append(Problem(loaded.path, message, example.location, example.idx, _image_field(image)))
    return warnings


def parse_records(path: str | Path, kind: str | None = None) -> tuple[str, list[Any], list[Problem]]:
    """Read ``path`` and parse its records as ``kind`` (guessed from the first record when None):
    (kind, the valid examples, the file-level and per-record problems). Images are not opened."""
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
    return kind, examples, problems


def find_problems(
    path: str | Path,
    kind: str | None = None,
    image_folder: str | Path | None = None,
    check_images: bool = True,
    show_progress: bool = True,
    num_workers: int | None = None,
) -> tuple[LoadedData, list[Problem]]:
    """Parse ``path`` as ``kind`` (guessed when None) and return the valid examples with every
    problem found: file-level, per record and per image. ``LoadedData.warnings`` holds what
    :func:`find_warnings` finds in the valid examples."""
    path = Path(path)
    kind, examples, problems = parse_records(path, kind)
    sizes: list[tuple[int, int] | None] = [None] * len(examples)
    if check_images:
        examples, sizes = verify_images(examples, path, image_folder, problems, show_progress, num_workers)
    loaded = LoadedData(str(path), kind, examples, sizes)
    loaded.warnings = find_warnings(loaded, image_folder)
    return loaded, problems


def load_examples(
    path: str | Path,
    kind: str,
    image_folder: str | Path | None = None,
    check_images: bool = True,
    show_progress: bool = True,
) -> LoadedData:
    """Load ``path`` as ``kind``; raise :class:`DataValidationError` listing every problem.
    Warnings do not stop it: they are in ``warnings`` of what it returns, for the caller to show."""
    loaded, problems = find_problems(path, kind, image_folder, check_images, show_progress)
    if problems:
        raise DataValidationError(problems)
    return loaded
