"""The annotation database: the one definition of what the web app's annotation page
(``python -m mcmdpo.app annotate``) writes, and what the ``human`` ranker and the export
(``python -m mcmdpo.app export``) read. SQLite in WAL mode, every write one transaction:

- ``answers``: one row per answer: for a record (its key, as the build's files name it), the two
  alt-texts as shown (their texts, and their candidate indices when they are the build's
  candidates; NULL otherwise), the annotator, the choice, optionally the annotator's corrected
  alt-text, and ``undone_at`` once the annotator took the answer back (kept, never counted);
- ``items``: the records the page asks about: the question, the post, the image (a path under the
  image folder, or the sha256 of an image kept in ``images``) and the two alt-texts compared, in
  the candidates file's order;
- ``images``: images the candidates file embedded, by sha256;
- ``assignments``: which annotator has been shown which record, and which text was shown first;
- ``settings``: the page's last image folder.

    CHOICES: first | second | tie | both_bad | skip

``PRAGMA user_version`` holds :data:`SCHEMA_VERSION`. Version 1 (the answers table alone, without
``undone_at``) is read as it is and upgraded in place by :func:`create_database`; any other
version is refused."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.request import pathname2url

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
CHOICES = ("first", "second", "tie", "both_bad", "skip")
NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
TABLES = f"""
CREATE TABLE IF NOT EXISTS answers (
    answer_id INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL,            -- the record's key in the build's files (items.record_id)
    first_text TEXT NOT NULL,           -- the alt-text shown first
    second_text TEXT NOT NULL,          -- the alt-text shown second
    first_candidate INTEGER,            -- its candidate index; NULL for a text that is no candidate
    second_candidate INTEGER,
    annotator TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ({", ".join(repr(choice) for choice in CHOICES)})),
    corrected_text TEXT,                -- the annotator's corrected alt-text, if they wrote one
    created_at TEXT NOT NULL DEFAULT ({NOW}),
    undone_at TEXT                      -- when the annotator undid it; an undone answer counts nowhere
);
CREATE INDEX IF NOT EXISTS answers_by_record ON answers (record_id);
CREATE INDEX IF NOT EXISTS answers_by_annotator ON answers (annotator, answer_id);
CREATE TABLE IF NOT EXISTS images (
    sha256 TEXT PRIMARY KEY,
    data BLOB NOT NULL                  -- the image file's bytes
);
CREATE TABLE IF NOT EXISTS items (
    record_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,          -- its place in the candidates file: the queue's order
    record_idx TEXT NOT NULL,           -- the record's id, as JSON: the pairs' idx
    question TEXT NOT NULL,             -- the prompt as training reads it (instruction, then the post)
    context TEXT NOT NULL,              -- the post, as the page shows it
    image_path TEXT,                    -- relative to the image folder ...
    image_sha256 TEXT REFERENCES images (sha256),  -- ... or an image kept in this database
    first_text TEXT NOT NULL,           -- the two alt-texts compared, in the candidates file's order
    second_text TEXT NOT NULL,
    first_candidate INTEGER,
    second_candidate INTEGER,
    CHECK ((image_path IS NULL) != (image_sha256 IS NULL))
);
CREATE TABLE IF NOT EXISTS assignments (
    record_id TEXT NOT NULL REFERENCES items (record_id),
    annotator TEXT NOT NULL,
    second_first INTEGER NOT NULL CHECK (second_first IN (0, 1)),  -- 1: the item's second text shown first
    assigned_at TEXT NOT NULL DEFAULT ({NOW}),
    PRIMARY KEY (record_id, annotator)
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
COLUMNS = ("answer_id", "record_id", "first_text", "second_text", "first_candidate", "second_candidate", "annotator", "choice",
           "corrected_text")
ITEM_COLUMNS = ("record_id", "position", "record_idx", "question", "context", "image_path", "image_sha256", "first_text",
                "second_text", "first_candidate", "second_candidate")
BUSY_TIMEOUT_S = 30  # how long a write waits for another's transaction


class AnnotationError(ValueError):
    """A database that is not an annotation database this code can read, or an answer it refuses."""


@dataclass(frozen=True)
class Answer:
    answer_id: int
    record_id: str
    first_text: str
    second_text: str
    first_candidate: int | None
    second_candidate: int | None
    annotator: str
    choice: str
    corrected_text: str | None
    undone: bool = False


@dataclass(frozen=True)
class Item:
    """A record the page asks about: two alt-texts of one image and post."""

    record_id: str
    position: int
    record_idx: Any  # the record's id as the input gave it
    question: str
    context: str
    image_path: str | None
    image_sha256: str | None
    first_text: str
    second_text: str
    first_candidate: int | None = None
    second_candidate: int | None = None

    def row(self) -> tuple[Any, ...]:
        values = {name: getattr(self, name) for name in ITEM_COLUMNS}
        values["record_idx"] = json.dumps(self.record_idx, ensure_ascii=False)
        return tuple(values[name] for name in ITEM_COLUMNS)


def connect(path: str | Path, read_only: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit: :func:`transaction`), whose
    commits reach the disk before they return (``synchronous=FULL``)."""
    path = Path(path).resolve()
    target = f"file:{pathname2url(str(path))}" + ("?mode=ro" if read_only else "")
    connection = sqlite3.connect(target, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken at once (``BEGIN IMMEDIATE``: two writers never both read,
    then both write); committed on success, rolled back on any error."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _tables(connection: sqlite3.Connection) -> set[str]:
    return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _columns(connection: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}


def statements(script: str) -> list[str]:
    """The SQL statements of a script, each whole (a ';' inside a comment or a string ends none)."""
    found, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    return found


def create_database(path: str | Path, flag: str = "--db") -> Path:
    """An annotation database at ``path``: created, or checked (and a version-1 one upgraded), in
    WAL mode. An :class:`AnnotationError` naming ``flag`` and the file when it is another
    database."""
    path = Path(path)
    if not path.parent.is_dir():
        raise AnnotationError(f"{flag} {path}: the folder {path.parent} does not exist")
    try:
        connection = connect(path)
    except sqlite3.Error as error:
        raise AnnotationError(f"{flag} {path}: cannot be opened as a database ({error})") from None
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        tables = _tables(connection)
        if version not in (0, *READABLE_VERSIONS) or (version == 0 and tables):
            raise AnnotationError(f"{flag} {path}: schema version {version} with tables {sorted(tables)}: not an annotation "
                                  f"database this code writes (version {SCHEMA_VERSION}, mcmdpo.build.annotations)")
        connection.execute("PRAGMA journal_mode = WAL")  # readers never wait for the writer; kept in the file
        with transaction(connection):
            if "answers" in tables and "undone_at" not in _columns(connection, "answers"):  # version 1
                connection.execute("ALTER TABLE answers ADD COLUMN undone_at TEXT")
            for statement in statements(TABLES):
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.DatabaseError as error:
        raise AnnotationError(f"{flag} {path}: not an annotation database ({error})") from None
    finally:
        connection.close()
    return path


def add_answer(path: str | Path, record_id: str, first_text: str, second_text: str, annotator: str, choice: str,
               first_candidate: int | None = None, second_candidate: int | None = None,
               corrected_text: str | None = None) -> int:
    """Record one answer; its id."""
    if choice not in CHOICES:
        raise AnnotationError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
    connection = connect(path)
    try:
        with transaction(connection):
            return insert_answer(connection, record_id, (first_text, second_text), (first_candidate, second_candidate),
                                 annotator, choice, corrected_text)
    finally:
        connection.close()


def insert_answer(connection: sqlite3.Connection, record_id: str, texts: tuple[str, str], candidates: tuple[int | None, int | None],
                  annotator: str, choice: str, corrected_text: str | None) -> int:
    """One answer's row, within the caller's transaction; its id."""
    cursor = connection.execute(
        "INSERT INTO answers (record_id, first_text, second_text, first_candidate, second_candidate, annotator, choice, "
        "corrected_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (record_id, *texts, *candidates, annotator, choice, corrected_text))
    return int(cursor.lastrowid)


@contextmanager
def _reading(path: str | Path, flag: str) -> Iterator[tuple[sqlite3.Connection, int]]:
    """A read-only connection and the schema version, or an :class:`AnnotationError` naming the
    database when it is missing or not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{flag} {path}: file not found")
    try:
        connection = connect(path, read_only=True)
    except sqlite3.Error as error:
        raise AnnotationError(f"{flag} {path}: cannot be opened ({error})") from None
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version not in READABLE_VERSIONS:
            raise AnnotationError(f"{flag} {path}: schema version {version}, this build reads versions "
                                  f"{' and '.join(map(str, READABLE_VERSIONS))} (mcmdpo.build.annotations)")
        yield connection, version
    except sqlite3.DatabaseError as error:
        raise AnnotationError(f"{flag} {path}: not an annotation database ({error})") from None
    finally:
        connection.close()


def read_answers(path: str | Path, flag: str = "--annotations", include_undone: bool = False) -> list[Answer]:
    """Every answer, in the order given (undone ones only with ``include_undone``)."""
    with _reading(path, flag) as (connection, version):
        undone = "undone_at IS NOT NULL" if version >= 2 else "0"
        where = "" if include_undone else f"WHERE NOT ({undone})"
        rows = connection.execute(f"SELECT {', '.join(COLUMNS)}, {undone} FROM answers {where} ORDER BY answer_id").fetchall()
    return [Answer(*row[:-1], undone=bool(row[-1])) for row in rows]


def read_items(path: str | Path, flag: str = "--db") -> list[Item]:
    """The records the page asks about, in queue order (none in a version-1 database)."""
    with _reading(path, flag) as (connection, version):
        if version < 2:
            return []
        rows = connection.execute(f"SELECT {', '.join(ITEM_COLUMNS)} FROM items ORDER BY position, record_id").fetchall()
    return [item_of(row) for row in rows]


def item_of(row: tuple[Any, ...]) -> Item:
    values = dict(zip(ITEM_COLUMNS, row))
    values["record_idx"] = json.loads(values["record_idx"])
    return Item(**values)


def read_image(path: str | Path, sha256: str, flag: str = "--db") -> bytes:
    """An image kept in the database."""
    with _reading(path, flag) as (connection, _):
        row = connection.execute("SELECT data FROM images WHERE sha256 = ?", (sha256,)).fetchone()
    if row is None:
        raise AnnotationError(f"{flag} {path}: no image {sha256}")
    return bytes(row[0])


def read_setting(path: str | Path, name: str, flag: str = "--db") -> str | None:
    with _reading(path, flag) as (connection, version):
        if version < 2:
            return None
        row = connection.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
    return row[0] if row else None


def add_items(path: str | Path, items: Iterable[Item], images: dict[str, bytes], settings: dict[str, str],
              flag: str = "--db") -> int:
    """Add the records not yet in the database (one transaction), keep the images they embed
    and the settings; how many were added. A record already there with other texts, question or
    image is an :class:`AnnotationError` (its answers would be about other texts)."""
    added = 0
    connection = connect(path)
    try:
        with transaction(connection):
            for sha256, data in images.items():
                connection.execute("INSERT OR IGNORE INTO images (sha256, data) VALUES (?, ?)", (sha256, data))
            for item in items:
                row = connection.execute(f"SELECT {', '.join(ITEM_COLUMNS)} FROM items WHERE record_id = ?",
                                         (item.record_id,)).fetchone()
                if row is None:
                    connection.execute(f"INSERT INTO items ({', '.join(ITEM_COLUMNS)}) VALUES ({', '.join('?' * len(ITEM_COLUMNS))})",
                                       item.row())
                    added += 1
                    continue
                held = item_of(row)
                changed = [name for name in ITEM_COLUMNS if name not in ("position", "record_idx")
                           and getattr(held, name) != getattr(item, name)]
                if changed:
                    raise AnnotationError(f"{flag} {path}: record {item.record_id!r} is already in this database with another "
                                          f"{', '.join(changed)}: its answers are about those; use another database for this file")
            for name, value in settings.items():
                connection.execute("INSERT INTO settings (name, value) VALUES (?, ?) "
                                   "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, value))
    finally:
        connection.close()
    return added


def answers_digest(answers: list[Answer]) -> str:
    """What the human ranking depends on: every answer, by content (not the file's bytes)."""
    digest = hashlib.sha256()
    for answer in answers:
        digest.update(repr(tuple(getattr(answer, name) for name in COLUMNS)).encode())
    return digest.hexdigest()


def by_record(answers: list[Answer]) -> dict[str, list[Answer]]:
    grouped: dict[str, list[Answer]] = {}
    for answer in answers:
        grouped.setdefault(answer.record_id, []).append(answer)
    return grouped


def as_dict(answer: Answer) -> dict[str, Any]:
    return {name: getattr(answer, name) for name in COLUMNS}
