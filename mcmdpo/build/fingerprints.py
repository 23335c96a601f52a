"""What each stage's inputs are, as values cheap to compare between runs: a data file or folder
by content, a model folder by its files' sizes and modification times (not gigabytes of weights
hashed), a text file by content. A stage whose fingerprint changed is redone."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from mcmdpo.caching import text_sha256
from mcmdpo.files import file_sha256


def data_digest(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (relative paths and contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{file_sha256(file)}\0".encode())
    return digest.hexdigest()


def checkpoint_fingerprint(name: str) -> dict[str, Any]:
    """A model as given (a folder or a hub name) and, for a folder, the size and modification
    time of each file it loads from (its top level): a checkpoint rewritten in place is a new
    input; a training run's intermediate checkpoint-*/ folders are not."""
    path = Path(name)
    if not path.is_dir():
        return {"name": name}
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    stats = [[file.name, (found := os.stat(file)).st_size, found.st_mtime_ns] for file in files]
    return {"name": name, "files": stats}


def text_file_fingerprint(path: str | Path) -> str:
    return text_sha256(Path(path).read_text(encoding="utf-8"))
