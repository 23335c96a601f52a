"""The annotation database: the one definition of what the web app's annotation page writes and
the ``human`` ranker reads. SQLite, one table of answers: for a record (its key, as the build's
files name it), the two alt-texts as shown (their texts, and their candidate indices when they are
candidates; NULL for the user's own alt-text), the annotator, the choice, and optionally the
annotator's own corrected alt-text.

    CHOICES: first | second | tie | both_bad | skip

``PRAGMA user_version`` holds :data:`SCHEMA_VERSION`; a database of another version is refused."""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
CHOICES = ("first", "second", "tie", "both_bad", "skip")
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS answers (
    answer_id INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL,            -- the record's key in the build's files
    first_text TEXT NOT NULL,           -- the alt-text shown first
    second_text TEXT NOT NULL,          -- the alt-text shown second
    first_candidate INTEGER,            -- its candidate index; NULL for the user's alt-text
    second_candidate INTEGER,
    annotator TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ({", ".join(repr(choice) for choice in CHOICES)})),
    corrected_text TEXT,                -- the annotator's corrected alt-text, if they wrote one
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX IF NOT EXISTS answers_by_record ON answers (record_id);
"""
COLUMNS = ("answer_id", "record_id", "first_text", "second_text", "first_candidate", "second_candidate", "annotator", "choice",
           "corrected_text")


class AnnotationError(ValueError):
    """A database that is not an annotation database this code can read."""


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


def create_database(path: str | Path) -> Path:
    """An empty annotation database at ``path`` (or the schema added to an existing one)."""
    path = Path(path)
    with sqlite3.connect(path) as connection:
        connection.executescript(SCHEMA)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return path


def add_answer(path: str | Path, record_id: str, first_text: str, second_text: str, annotator: str, choice: str,
               first_candidate: int | None = None, second_candidate: int | None = None,
               corrected_text: str | None = None) -> int:
    """Record one answer; its id."""
    if choice not in CHOICES:
        raise AnnotationError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
    with sqlite3.connect(path) as connection:
        cursor = connection.execute(
            "INSERT INTO answers (record_id, first_text, second_text, first_candidate, second_candidate, annotator, choice, "
            "corrected_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (record_id, first_text, second_text, first_candidate, second_candidate, annotator, choice, corrected_text))
        return int(cursor.lastrowid)


def read_answers(path: str | Path) -> list[Answer]:
    """Every answer, in the order given; an :class:`AnnotationError` naming the database when it
    is missing or not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"--annotations {path}: file not found")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise AnnotationError(f"--annotations {path}: schema version {version}, this build reads version {SCHEMA_VERSION} "
                                      "(mcmdpo.build.annotations)")
            rows = connection.execute(f"SELECT {', '.join(COLUMNS)} FROM answers ORDER BY answer_id").fetchall()
    except sqlite3.DatabaseError as error:
        raise AnnotationError(f"--annotations {path}: not an annotation database ({error})") from None
    return [Answer(*row) for row in rows]


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
