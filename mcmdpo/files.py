"""Files the project writes and reads back: whole files replaced atomically (text, bytes, or
whatever a writer puts into a binary handle), JSON Lines logs appended line by line that an
interrupted run can resume, a file's sha256, and where the caches live."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable


def cache_root() -> Path:
    """The folder every cache of the project lives under: ``$MCMDPO_CACHE``, else
    ``~/.cache/mcmdpo`` (read at each call; the modules' default folders read it once, at import)."""
    return Path(os.environ.get("MCMDPO_CACHE", Path.home() / ".cache" / "mcmdpo"))


def beside(path: Path, suffix: str) -> Path:
    """A file next to ``path`` named after it: ``out.jsonl`` + ``.pope.scores.jsonl``."""
    return path.with_name(path.name.removesuffix(".jsonl").removesuffix(".json") + suffix)


def write_atomically(path: Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Let ``write`` fill a uniquely named temporary file beside ``path``, push it to disk, then
    rename it over ``path``: a reader (or a crash) sees the old file or the new one, never half of
    one."""
    path = Path(path)
    handle = tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # The temporary file is private (0600); the result gets the mode a plain write would give.
        os.chmod(handle.name, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        Path(handle.name).replace(path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomically(path: Path, data: bytes) -> Path:
    """:func:`write_atomically` of ``data``."""
    return write_atomically(path, lambda handle: handle.write(data))


def write_text_atomically(path: Path, text: str) -> Path:
    """:func:`write_atomically` of ``text`` in UTF-8."""
    return write_bytes_atomically(path, text.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def json_lines(rows: Iterable[Any]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


class DamagedLogError(ValueError):
    """A line of a log that is not a JSON record: the file is not one this code wrote."""


class AppendLog:
    """A JSON Lines file written one whole line at a time and synced, so that a crash loses at
    most the lines in flight. Reading it back cuts away a partial last line (a write cut short);
    a damaged line elsewhere is an error naming it."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(end)
        records = []
        for number, line in enumerate(data[:end].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise DamagedLogError(f"{self.path}, line {number}: not a JSON record ({error})") from None
            if not isinstance(record, dict):
                raise DamagedLogError(f"{self.path}, line {number}: not a JSON object")
            records.append(record)
        return records

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json_lines(records))
            handle.flush()
            os.fsync(handle.fileno())
