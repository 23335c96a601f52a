"""What the data checks' results depend on, as values cheap to compare between runs: the data
file's sha256, each image file's size and modification time (not its pixels), the processor by
content, and what a stage's sequences depend on besides the records. The cache of
:mod:`mcmdpo.train.data_cache` is keyed by them."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from mcmdpo.caching import json_sha256, text_sha256
from mcmdpo.data.records import ImageRef
from mcmdpo.files import file_sha256


def file_digest(path: str | Path) -> str | None:
    """sha256 of a file's bytes; None when it cannot be read (parsing reports why)."""
    try:
        return file_sha256(path)
    except OSError:
        return None


def image_fingerprints(images: Sequence[ImageRef], image_folder: str | Path | None) -> list[list[int] | None]:
    """[size, mtime_ns] of each image file (stat, threads for network file systems); None for an
    embedded image (the data file's digest covers it) or a file that cannot be stat'ed."""

    folder = str(image_folder) if image_folder else ""

    def stat(chunk: Sequence[ImageRef]) -> list[list[int] | None]:
        rows: list[list[int] | None] = []
        for image in chunk:
            if image.data is not None or image.path is None:
                rows.append(None)
                continue
            try:
                found = os.stat(os.path.join(folder, image.path))  # what ImageRef.resolve names, without Path's cost
                rows.append([found.st_size, found.st_mtime_ns])
            except OSError:
                rows.append(None)
        return rows

    chunks = [images[start:start + 4096] for start in range(0, len(images), 4096)]
    with ThreadPoolExecutor(min(4, max(1, len(chunks)))) as pool:
        return [row for rows in pool.map(stat, chunks) for row in rows]


def processor_fingerprint(processor: Any) -> dict[str, Any]:
    """What the processor's share of the sequence lengths depends on, by content (not its
    folder: a DPO run from a fresh SFT checkpoint with the same tokenizer finds the SFT run's
    lengths): its class and configuration (image processor, image protocol, token counts), the
    tokenizer's definition and settings, and the chat template."""
    tokenizer = processor.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    settings = {key: value for key, value in tokenizer.init_kwargs.items()
                if key not in ("name_or_path", "is_local", "local_files_only", "chat_template") and not key.endswith("_file")}
    try:
        configuration = processor.to_dict()
    except Exception:  # a processor that cannot describe itself: its image processor's settings
        configuration = vars(processor.image_processor)
    return {
        "class": f"{type(processor).__module__}.{type(processor).__qualname__}",
        "configuration_sha256": json_sha256(configuration),
        "image_aspect_ratio": getattr(processor.image_processor, "image_aspect_ratio", None),
        "tokenizer": type(tokenizer).__qualname__,
        "tokenizer_sha256": text_sha256(vocabulary),
        "tokenizer_settings_sha256": json_sha256([settings, tokenizer.special_tokens_map]),
        "chat_template_sha256": text_sha256(processor.chat_template or ""),
    }


def length_settings(stage: str, negatives: Any = None, layout: Any = None) -> dict[str, Any]:
    """What a stage's sequences depend on besides the records and the processor: for a
    preference stage, its triples and the negatives they read (other records' contexts and
    images, the crop's size)."""
    if layout is None:
        return {"stage": stage}
    return {
        "stage": stage,
        "triples": [triple.name for triple in layout.triples],
        "negatives": negatives.key_fields(layout.uses_negative_context, layout.uses_negative_image),
    }
