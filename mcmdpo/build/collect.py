"""The collect stage: the user's alt-text, read in any format (:mod:`mcmdpo.build.sources`),
each record kept or dropped with its reason (:mod:`mcmdpo.build.drops`; here the image checks
and the exact duplicates: same image bytes, same alt-text). ``OUT/collect.jsonl`` holds one line
per input record, in input order: the record (:mod:`mcmdpo.build.records`) or why it was dropped;
the report lists the dropped records' ids by reason. Images embedded in the input are stored
once, by content, under ``OUT/images/``."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from mcmdpo.build import drops
from mcmdpo.build.fingerprints import data_digest
from mcmdpo.build.options import BuildOptions
from mcmdpo.build.records import STORED_IMAGES
from mcmdpo.build.report import grouped
from mcmdpo.build.sources import SourceRecord, duplicate_id_problems, parse_columns, read_source
from mcmdpo.build.stage_run import StageRun
from mcmdpo.caching import json_sha256
from mcmdpo.data.loading import check_images
from mcmdpo.data.records import DataValidationError, Problem
from mcmdpo.files import write_bytes_atomically
from mcmdpo.train.data_fingerprints import image_fingerprints

STAGE = "collect"
VERSION = 1  # of what collect writes and why it drops; a new version redoes the stage
WINDOW = 16  # records whose images are checked at once (in threads) before their lines are written


def read_records(options: BuildOptions) -> tuple[str, list[SourceRecord]]:
    """The user's records, or a :class:`DataValidationError` naming every broken one."""
    try:
        columns = parse_columns(options.columns) if options.columns else None
    except ValueError as error:
        raise DataValidationError([Problem("--columns", str(error))]) from None
    kind, records, problems = read_source(options.data_path, columns)
    problems += duplicate_id_problems(records)
    if problems:
        raise DataValidationError(problems)
    return kind, records


def collect_inputs(options: BuildOptions, kind: str, records: list[SourceRecord]) -> dict[str, Any]:
    """What collect's output depends on: the data by content, the images by size and modification
    time, the image folder and the settings."""
    folder = str(Path(options.image_folder).resolve()) if options.image_folder else None
    images = [record.image for record in records if record.image is not None]
    return {
        "version": VERSION,
        "data_path": str(Path(options.data_path).resolve()),
        "data_sha256": data_digest(options.data_path),
        "format": kind,
        "columns": options.columns,
        "image_folder": folder,
        "images_sha256": json_sha256(image_fingerprints(images, options.image_folder)),
        "min_words": options.min_words,
        "max_words": options.max_words,
    }


def _image_bytes(record: SourceRecord, image_folder: str | None) -> bytes:
    image = record.image
    return image.data if image.data is not None else image.resolve(image_folder).read_bytes()


def _store_embedded(data: bytes, digest: str, output_dir: Path) -> str:
    """An embedded image written once under OUT/images/, named by its content."""
    with Image.open(io.BytesIO(data)) as image:
        extension = (image.format or "img").lower()
    relative = f"{STORED_IMAGES}/{digest}.{extension}"
    target = output_dir / relative
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(target, data)
    return relative


def _decide(record: SourceRecord, check: tuple[Any, str | None] | None, options: BuildOptions, seen: dict[tuple[str, str], str],
            output_dir: Path) -> dict[str, Any]:
    """One record's line: kept (the record) or dropped (reason and detail)."""
    line: dict[str, Any] = {"key": record.key, "id": record.shown_id, "source": str(record.location)}
    image_name = record.image.path if record.image is not None else None
    dropped = drops.text_drop(record.alt_text, image_name, record.context, options.min_words, options.max_words)
    if dropped is None and record.image is None:
        dropped = drops.MISSING_IMAGE, "no image given"
    if dropped is None:
        _, message = check
        if message is not None:
            dropped = (drops.MISSING_IMAGE if "not found" in message else drops.UNREADABLE_IMAGE), message
    if dropped is not None:
        return {**line, "dropped": dropped[0], "detail": dropped[1]}
    data = _image_bytes(record, options.image_folder)
    digest = hashlib.sha256(data).hexdigest()
    alt_text = record.alt_text.strip()
    first = seen.get((digest, alt_text))
    if first is not None:
        return {**line, "dropped": drops.DUPLICATE, "detail": f"same image and alt-text as record {first}"}
    seen[(digest, alt_text)] = record.key
    if record.image.data is not None:
        image = {"stored": _store_embedded(data, digest, output_dir), "path": record.image.path}
    else:
        image = {"path": record.image.path}
    return {**line, "image": image, "image_sha256": digest, "question": record.question, "context": record.context,
            "alt_text": alt_text}


def _needs_image_check(record: SourceRecord, options: BuildOptions) -> bool:
    if record.image is None:
        return False
    return drops.text_drop(record.alt_text, record.image.path, record.context, options.min_words, options.max_words) is None


def run_collect(options: BuildOptions) -> dict[str, Any]:
    """Run (or resume, or find up to date) the collect stage; its report section."""
    output_dir = Path(options.output_dir)
    kind, records = read_records(options)
    run = StageRun(output_dir, STAGE, collect_inputs(options, kind, records), [record.key for record in records])
    seen = {(line["image_sha256"], line["alt_text"]): line["key"] for line in run.done if "dropped" not in line}
    pending = records[len(run.done):]
    with tqdm(total=len(records), initial=len(run.done), desc="collecting alt-text", disable=options.quiet) as progress:
        for start in range(0, len(pending), WINDOW):
            window = pending[start:start + WINDOW]
            to_check = [record for record in window if _needs_image_check(record, options)]
            found = check_images([record.image for record in to_check], options.image_folder, show_progress=False)
            checks = {id(record): check for record, check in zip(to_check, found)}
            for record in window:
                run.writer.append([_decide(record, checks.get(id(record)), options, seen, output_dir)])
                progress.update(1)
    return run.finish(collect_section(run.done, kind))


def collect_section(lines: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    dropped = grouped((line["dropped"], line["id"], line.get("detail")) for line in lines if "dropped" in line)
    ordered = {reason: dropped[reason] for reason in drops.REASONS if reason in dropped}
    kept = sum("dropped" not in line for line in lines)
    return {"status": "complete", "format": kind, "records": len(lines), "kept": kept, "dropped_count": len(lines) - kept,
            "dropped": ordered}


def kept_records(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if "dropped" not in line]

