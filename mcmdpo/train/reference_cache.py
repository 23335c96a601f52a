"""Reference log-probs computed once and kept on disk, keyed by everything they depend on: the
data file's content, the reference checkpoint, the negatives, the sequences and the tokenisation
settings. A later run with the same key reads them instead of running the reference model. A run
computes the rows of the records it draws only (a short run pays for its steps, not the whole
file); a later, longer run adds the rows it lacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mcmdpo.caching import description_key, text_sha256
from mcmdpo.data.negatives import NegativeConfig
from mcmdpo.files import cache_root, file_sha256, write_atomically, write_text_atomically
from mcmdpo.preference.layout import PreferenceLayout

CACHE_FORMAT = 4  # 2: one row of log-probs per epoch of negatives; 3: keyed by the layout's triples; 4: NaN rows not computed yet
DEFAULT_CACHE_DIR = cache_root() / "reference_logps"


def checkpoint_fingerprint(path: str | Path) -> dict[str, Any]:
    """A local checkpoint folder by its files' names, sizes and modification times (hashing
    14 GB of weights would take longer than the pass it saves); a hub name by itself."""
    folder = Path(path)
    if not folder.is_dir():
        return {"name": str(path)}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {
        "path": str(folder.resolve()),
        "files": [[str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in files],
    }


def cache_key(
    data_path: str | Path,
    image_folder: str | Path | None,
    reference_path: str | Path,
    negatives: NegativeConfig,
    layout: PreferenceLayout,
    max_length: int,
    logps_reduction: str,
    reference_dtype: str,
    record_ids: list[Any],
    image_aspect_ratio: str,
    chat_template: str,
    step: str,
) -> tuple[str, dict[str, Any]]:
    """The key (a hex digest) and the description it digests, kept beside the cached tensor."""
    description = {
        "format": CACHE_FORMAT,
        "data_sha256": file_sha256(data_path),
        "data_path": str(Path(data_path).resolve()),
        "image_folder": str(Path(image_folder).resolve()) if image_folder else None,
        "reference": checkpoint_fingerprint(reference_path),
        # Only what the scored triples depend on: DPO's log-probs do not change with the negatives.
        "negatives": negatives.key_fields(layout.uses_negative_context, layout.uses_negative_image),
        "triples": [triple.name for triple in layout.triples],
        "max_length": max_length,
        "logps_reduction": logps_reduction,
        "reference_dtype": reference_dtype,
        # How the policy's processor turns records into sequences (the reference fingerprint
        # above covers the weights that score them).
        "image_aspect_ratio": image_aspect_ratio,
        "chat_template_sha256": text_sha256(chat_template),
        # The packed and plain steps agree to float rounding, which in bf16 is not nothing.
        "step": step,
        # The records kept after length checks, in order: rows of the tensor.
        "records_sha256": text_sha256(json.dumps(record_ids, default=str)),
    }
    return description_key(description), description


def load_cached(cache_dir: str | Path, key: str, shape: tuple[int, int, int]) -> torch.Tensor:
    """[epochs, records, sequences] log-probs as far as the cache holds them, NaN where it does not
    (records no run has drawn yet, epochs no run has reached): a run computes only those it draws."""
    logps = torch.full(shape, float("nan"))
    path = Path(cache_dir) / f"{key}.pt"
    if path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored.dim() == 3 and tuple(stored.shape[1:]) == tuple(shape[1:]):
            epochs = min(stored.shape[0], shape[0])
            logps[:epochs] = stored[:epochs]
    return logps


def missing_rows(logps: torch.Tensor, drawn: list[list[int]]) -> list[list[int]]:
    """Per epoch, the drawn records (positions, in the order drawn) whose row is not there yet."""
    absent = logps.isnan().any(dim=-1)
    return [[position for position in positions if absent[epoch, position]] for epoch, positions in enumerate(drawn)]


def save_cached(cache_dir: str | Path, key: str, logps: torch.Tensor, description: dict[str, Any]) -> Path:
    """Write atomically, so an interrupted run never leaves a half-written cache entry. Rows not
    computed stay NaN; a cache holding more epochs than this run keeps them."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{key}.pt"
    if path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored.dim() == 3 and tuple(stored.shape[1:]) == tuple(logps.shape[1:]) and stored.shape[0] > logps.shape[0]:
            logps = torch.cat([logps, stored[logps.shape[0]:]])
    path = write_atomically(path, lambda handle: torch.save(logps.cpu(), handle))
    write_text_atomically(cache_dir / f"{key}.json", json.dumps(description, indent=1))
    return path
