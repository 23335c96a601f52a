"""What the annotation page asks about, read from its candidates file: the builder's sample stage
file (``OUT/sample.jsonl``; ``rank.jsonl`` holds the same records) or a preference file in the
upstream format. Each record becomes one :class:`~mcmdpo.build.annotations.Item`: two alt-texts
in the file's order (a builder record's two candidates drawn at random, seeded by ``--seed`` and
the record's key, among its distinct usable ones; a preference record's chosen and rejected), its
question and post, and its image: a path under ``--image_folder`` or an embedded image, kept by
sha256. Everything is checked before the server starts; each problem names the file, the record
and the field."""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from mcmdpo.app.examples import split_question
from mcmdpo.build.annotations import Item
from mcmdpo.build.stage_files import FOOTER_KEY, HEADER_KEY
from mcmdpo.data.loading import find_problems

IMAGE_PLACEHOLDER = "<image>"  # a text holding it cannot be trained on
MAX_LISTED = 20
FEWER_THAN_TWO = "fewer_than_two_distinct_alt_texts"
STAGES_WITH_CANDIDATES = ("sample", "rank")  # the builder's stages whose records hold them


class CandidatesError(ValueError):
    """A candidates file the page cannot ask about: every problem found, each with its file,
    record and field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        listed = problems[:MAX_LISTED] + ([f"... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else [])
        super().__init__(f"{len(problems)} problem(s) in the candidates file:\n" + "\n".join(listed))


@dataclass
class Candidates:
    """The records to ask about, the images they embed (sha256 -> bytes), and the records left
    out (reason -> their record ids)."""

    kind: str  # "build" (a stage file's records with candidates) or "preference"
    items: list[Item]
    images: dict[str, bytes] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    complete: bool = True  # a stage file with its footer (the stage finished)


def leaves_folder(path: str) -> bool:
    """Whether a relative image path names something outside the image folder: absolute, or
    through ``..`` (resolved as text, so links inside the folder are followed as training does)."""
    if os.path.isabs(path):
        return True
    normal = os.path.normpath(path)
    return normal == ".." or normal.startswith(".." + os.sep)


def image_in_folder(path: Any, image_folder: Path) -> str | None:
    """The problem with an image path, or None when it names an image file inside the folder."""
    if not isinstance(path, str) or not path.strip():
        return "must be a non-empty path"
    if leaves_folder(path):
        return f"image path {path} leaves --image_folder {image_folder}"
    file = image_folder / path
    if not file.is_file():
        return f"image not found: {file}"
    try:
        with Image.open(file):  # the header only: is it an image at all
            pass
    except (UnidentifiedImageError, OSError) as error:
        return f"not an image ({error}): {file}"
    return None


def usable(text: Any) -> bool:
    return isinstance(text, str) and bool(text.strip()) and IMAGE_PLACEHOLDER not in text


def normalized(text: str) -> str:
    return " ".join(text.split()).casefold()


def distinct_indices(texts: list[Any]) -> list[int]:
    """The indices of the usable texts, each distinct text (case and spacing aside) once."""
    seen, found = set(), []
    for index, text in enumerate(texts):
        if usable(text) and normalized(text) not in seen:
            seen.add(normalized(text))
            found.append(index)
    return found


def pick_two(key: str, texts: list[Any], seed: int) -> tuple[int, int] | None:
    """Two distinct usable candidates of a record, drawn under ``seed`` and its key alone (so the
    same whatever the file's order), in index order; None when it has fewer than two."""
    distinct = distinct_indices(texts)
    if len(distinct) < 2:
        return None
    first, second = sorted(random.Random(f"{seed}:{key}").sample(distinct, 2))
    return first, second


def read_candidates(path: str | Path, image_folder: str | Path, seed: int = 0) -> Candidates:
    """The items of a builder stage file or a preference file, every problem raised at once."""
    path, image_folder = Path(path), Path(image_folder)
    if not path.is_file():
        raise CandidatesError([f"--candidates {path}: file not found"])
    if not image_folder.is_dir():
        raise CandidatesError([f"--image_folder {image_folder}: not a folder"])
    with path.open("rb") as handle:
        first_line = handle.readline()
    try:
        header = json.loads(first_line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if isinstance(header, dict) and HEADER_KEY in header:
        return read_stage_file(path, image_folder, seed)
    return read_preference_file(path, image_folder)


def read_stage_file(path: Path, image_folder: Path, seed: int) -> Candidates:
    """A builder stage file: a header line, one record a line (``key``, ``id``, ``question``,
    ``context``, ``image``, ``candidates``), and a footer once the stage finished. Images the
    build stored (``{"stored": "images/..."}``) are read from the file's own folder."""
    problems: list[str] = []
    candidates = Candidates("build", [], complete=False)
    keys: dict[str, int] = {}
    data = path.read_bytes()
    lines = data.splitlines()
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            if number == len(lines) and not data.endswith(b"\n"):
                continue  # a last line still being written by the build
            problems.append(f"{path}, line {number}: not a JSON record ({error})")
            continue
        if not isinstance(record, dict):
            problems.append(f"{path}, line {number}: not a JSON object")
            continue
        if HEADER_KEY in record:
            if number != 1:
                problems.append(f"{path}, line {number}: a second header")
            elif record[HEADER_KEY] not in STAGES_WITH_CANDIDATES:
                raise CandidatesError([f"--candidates {path}: the builder's {record[HEADER_KEY]} stage file, whose records have no "
                                       "candidates: give the sample stage's file (OUT/sample.jsonl)"])
            continue
        if FOOTER_KEY in record:
            candidates.complete = True
            continue
        where = f"{path}, line {number}" + (f" (key={record['key']!r})" if isinstance(record.get("key"), str) else "")
        item = stage_item(record, where, len(candidates.items), path.parent, image_folder, seed, problems, candidates)
        if item is None:
            continue
        if item.record_id in keys:
            problems.append(f"{where}, field 'key': also the key of line {keys[item.record_id]}")
            continue
        keys[item.record_id] = number
        candidates.items.append(item)
    if not candidates.items and not problems and not any(candidates.skipped.values()):
        problems.append(f"{path}: holds no records")
    if problems:
        raise CandidatesError(problems)
    return candidates


def stage_item(record: dict[str, Any], where: str, position: int, stage_folder: Path, image_folder: Path, seed: int,
               problems: list[str], candidates: Candidates) -> Item | None:
    """One stage record's item, or None (a problem added, or the record skipped)."""
    found = len(problems)
    for name, kind in (("key", str), ("question", str), ("context", str), ("candidates", list), ("image", dict)):
        if name not in record:
            problems.append(f"{where}, field '{name}': missing" + (" (a record without an image)" if name == "image" else ""))
        elif not isinstance(record[name], kind):
            problems.append(f"{where}, field '{name}': must be {kind.__name__}, found {type(record[name]).__name__}")
    if len(problems) > found:
        return None
    image, image_path, sha256 = record["image"], None, None
    if "path" in image:
        image_path = image["path"]
        if (problem := image_in_folder(image_path, image_folder)) is not None:
            problems.append(f"{where}, field 'image.path': {problem}")
            return None
    elif "stored" in image:  # embedded in the build's input: the build kept it in its own folder
        stored = image["stored"]
        if not isinstance(stored, str) or leaves_folder(stored) or not (stage_folder / stored).is_file():
            problems.append(f"{where}, field 'image.stored': no image file {stage_folder / str(stored)} beside the candidates file")
            return None
        data = (stage_folder / stored).read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        candidates.images[sha256] = data
    else:
        problems.append(f"{where}, field 'image': has neither 'path' nor 'stored' (a record without an image)")
        return None
    texts = record["candidates"]
    picked = pick_two(record["key"], texts, seed)
    if picked is None:
        candidates.skipped.setdefault(FEWER_THAN_TWO, []).append(record["key"])
        return None
    first, second = picked
    return Item(record_id=record["key"], position=position, record_idx=record.get("id", record["key"]),
                question=record["question"], context=record["context"], image_path=image_path, image_sha256=sha256,
                first_text=texts[first], second_text=texts[second], first_candidate=first, second_candidate=second)


def read_preference_file(path: Path, image_folder: Path) -> Candidates:
    """A preference file in the upstream format (JSON array, JSON Lines or parquet), checked as
    training checks it (every image decoded); each record's chosen and rejected are the two
    alt-texts, its ``idx`` the record's id."""
    try:
        loaded, found = find_problems(path, "preference", image_folder, show_progress=False)
    except (OSError, ValueError) as error:
        raise CandidatesError([f"--candidates {path}: {error}"]) from None
    problems = [str(problem) for problem in found]
    candidates = Candidates("preference", [])
    ids: dict[str, str] = {}
    for example in loaded.examples:
        where = f"{example.location} (idx={example.idx!r})"
        record_id = str(example.idx) if example.idx is not None else f"{example.location.unit} {example.location.number}"
        image_path, sha256 = example.image.path, None
        if example.image.data is not None:
            sha256 = hashlib.sha256(example.image.data).hexdigest()
            candidates.images[sha256] = example.image.data
            image_path = None
        elif leaves_folder(image_path):
            problems.append(f"{where}, field 'image_path': image path {image_path} leaves --image_folder {image_folder}")
            continue
        if record_id in ids:
            problems.append(f"{where}, field 'idx': {record_id} is also the idx of {ids[record_id]}; the page needs one per record")
            continue
        ids[record_id] = str(example.location)
        if len(distinct_indices([example.chosen, example.rejected])) < 2:
            candidates.skipped.setdefault(FEWER_THAN_TWO, []).append(record_id)
            continue
        candidates.items.append(Item(record_id=record_id, position=len(candidates.items), record_idx=example.idx,
                                     question=example.question, context=split_question(example.question)[1],
                                     image_path=image_path, image_sha256=sha256,
                                     first_text=example.chosen, second_text=example.rejected))
    if problems:
        raise CandidatesError(problems)
    return candidates


def describe(candidates: Candidates) -> str:
    """One line on what was read, for the console."""
    line = f"{len(candidates.items)} records to ask about"
    for reason, ids in candidates.skipped.items():
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        line += f"; {len(ids)} left out ({reason}: {shown})"
    if not candidates.complete:
        line += "; the stage file has no footer yet (the build is still writing it?): its records so far"
    return line

