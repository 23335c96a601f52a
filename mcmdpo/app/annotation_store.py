"""Each annotator's queue over the annotation database (:mod:`mcmdpo.build.annotations`, the
schema): which record an annotator sees next, their answers, and undo. Free of web code.

- A record is *assigned* to an annotator the first time it is shown to them (one row of
  ``assignments``, with the side each text is shown on, drawn at random under the seed, the record
  and the annotator); the same record is never assigned to them twice.
- A record is assigned to at most ``overlap`` annotators at once; one who skips it frees their
  place for another.
- An annotator sees their own unanswered records first (the one they last undid first, then in
  the order given), then the first record in the queue's order that still has a free place.
- Every change is one ``BEGIN IMMEDIATE`` transaction, committed to disk before the call returns:
  two annotators answering at once never take the same place, and an answer a caller was told
  about survives the process being killed."""

from __future__ import annotations

import random
import sqlite3
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from mcmdpo.build.annotations import CHOICES, ITEM_COLUMNS, NOW, Item, connect, insert_answer, item_of, transaction

MAX_ANNOTATOR_CHARS = 64
MAX_CORRECTION_CHARS = 5_000
CORRECTABLE = ("first", "second")  # a correction is of the text chosen as better


class AnswerError(ValueError):
    """A request the queue refuses (a bad name, a record not waiting for this annotator, ...): its
    message is for the annotator."""


def annotator_name(text: object) -> str:
    """An annotator's name as stored: text, trimmed, NFC, 1 to 64 printable characters. It is only
    ever a value in parameterised queries and in the page's text, never a path or SQL."""
    if not isinstance(text, str):
        raise AnswerError("Give your name (an annotator's name is text).")
    name = unicodedata.normalize("NFC", text).strip()
    if not name:
        raise AnswerError("Give your name: it keeps your answers and your queue apart from the others'.")
    if len(name) > MAX_ANNOTATOR_CHARS:
        raise AnswerError(f"A name of at most {MAX_ANNOTATOR_CHARS} characters, please ({len(name)} given).")
    if any(unicodedata.category(character).startswith("C") for character in name):
        raise AnswerError("A name without control characters (line breaks, tabs, ...), please.")
    return name


@dataclass(frozen=True)
class Shown:
    """A record as one annotator sees it: the two alt-texts in the order shown."""

    record_id: str
    context: str
    texts: tuple[str, str]
    again: bool  # shown again after an undo


@dataclass(frozen=True)
class Progress:
    """Where an annotator stands: their answers (undone ones not counted), the records still in
    their queue (the one shown included), the record to show (None: nothing left) and a message."""

    annotator: str
    answered: int
    left: int
    record: Shown | None
    message: str = ""


# An assignment holds a place unless its annotator's answer is a skip.
HOLDS_PLACE = """NOT EXISTS (SELECT 1 FROM answers a WHERE a.record_id = s.record_id AND a.annotator = s.annotator
                             AND a.undone_at IS NULL AND a.choice = 'skip')"""
ANSWERED = """EXISTS (SELECT 1 FROM answers a WHERE a.record_id = s.record_id AND a.annotator = s.annotator
                      AND a.undone_at IS NULL)"""
# The records an annotator may still be given: never shown to (nor answered by) them, a place free.
OPEN_TO = f"""NOT EXISTS (SELECT 1 FROM assignments s WHERE s.record_id = i.record_id AND s.annotator = :annotator)
    AND NOT EXISTS (SELECT 1 FROM answers a WHERE a.record_id = i.record_id AND a.annotator = :annotator)
    AND (SELECT COUNT(*) FROM assignments s WHERE s.record_id = i.record_id AND {HOLDS_PLACE}) < :overlap"""


class AnnotationQueue:
    """The queues of every annotator over one database; each call opens its own connection, so
    request threads share nothing but the file."""

    def __init__(self, database: str | Path, overlap: int = 1, seed: int = 0):
        if overlap < 1:
            raise ValueError(f"--overlap must be at least 1, got {overlap}")
        self.database = Path(database)
        self.overlap = overlap
        self.seed = seed

    def _connect(self) -> sqlite3.Connection:
        return connect(self.database)

    def second_first(self, record_id: str, annotator: str) -> int:
        """1 when the item's second text is shown first to this annotator: a coin drawn from the
        seed, the record and the annotator alone."""
        return int(random.Random(f"{self.seed}:{record_id}:{annotator}").random() < 0.5)

    def item(self, record_id: str) -> Item | None:
        connection = self._connect()
        try:
            row = connection.execute(f"SELECT {', '.join(ITEM_COLUMNS)} FROM items WHERE record_id = ?", (record_id,)).fetchone()
        finally:
            connection.close()
        return item_of(row) if row else None

    def current(self, annotator: str, message: str = "") -> Progress:
        """The record to show the annotator now: their unanswered one, else a new one assigned to
        them (in one transaction)."""
        annotator = annotator_name(annotator)
        connection = self._connect()
        try:
            with transaction(connection):
                found = self._waiting(connection, annotator)
                if found is None:
                    row = connection.execute(f"SELECT i.record_id FROM items i WHERE {OPEN_TO} ORDER BY i.position, i.record_id "
                                             "LIMIT 1", {"annotator": annotator, "overlap": self.overlap}).fetchone()
                    if row is not None:
                        connection.execute("INSERT INTO assignments (record_id, annotator, second_first) VALUES (?, ?, ?)",
                                           (row[0], annotator, self.second_first(row[0], annotator)))
                        found = self._waiting(connection, annotator)
                return self._progress(connection, annotator, found, message)
        finally:
            connection.close()

    def answer(self, annotator: str, record_id: str, choice: str, corrected_text: str | None = None) -> Progress:
        """Keep the annotator's answer about the record shown to them (committed to disk), then
        the next record. ``corrected_text``: their edit of the text they chose as better."""
        annotator = annotator_name(annotator)
        if choice not in CHOICES:
            raise AnswerError(f"The choice must be one of {', '.join(CHOICES)}, not {choice!r}.")
        connection = self._connect()
        try:
            with transaction(connection):
                row = connection.execute(f"SELECT s.second_first FROM assignments s WHERE s.record_id = ? AND s.annotator = ? "
                                         f"AND NOT {ANSWERED}", (record_id, annotator)).fetchone()
                if row is None:
                    raise AnswerError(f"Record {record_id} is not waiting for an answer from {annotator} (answered already, or "
                                      "never shown to them): the page now shows the record that is.")
                item = self._item(connection, record_id)
                texts, candidates = shown_order(item, bool(row[0]))
                corrected = correction(corrected_text, choice, texts)
                insert_answer(connection, record_id, texts, candidates, annotator, choice, corrected)
        finally:
            connection.close()
        return self.current(annotator, f"Saved: {describe_choice(choice)}{' with your correction' if corrected else ''}.")

    def undo(self, annotator: str) -> Progress:
        """Take back the annotator's last answer (kept in the database, marked undone, counted
        nowhere) and show its record again."""
        annotator = annotator_name(annotator)
        connection = self._connect()
        try:
            with transaction(connection):
                row = connection.execute(
                    "SELECT a.answer_id, a.record_id FROM answers a JOIN assignments s ON s.record_id = a.record_id "
                    "AND s.annotator = a.annotator WHERE a.annotator = ? AND a.undone_at IS NULL ORDER BY a.answer_id DESC LIMIT 1",
                    (annotator,)).fetchone()
                if row is not None:
                    connection.execute(f"UPDATE answers SET undone_at = {NOW} WHERE answer_id = ?", (row[0],))
        finally:
            connection.close()
        return self.current(annotator, f"Undone: your answer about record {row[1]}; answer it again." if row else "Nothing to undo.")

    def _item(self, connection: sqlite3.Connection, record_id: str) -> Item:
        row = connection.execute(f"SELECT {', '.join(ITEM_COLUMNS)} FROM items WHERE record_id = ?", (record_id,)).fetchone()
        return item_of(row)

    def _waiting(self, connection: sqlite3.Connection, annotator: str) -> Shown | None:
        """The annotator's unanswered record: the one whose answer they undid last, else the
        first assigned."""
        row = connection.execute(
            "SELECT s.record_id, s.second_first, (SELECT MAX(a.answer_id) FROM answers a WHERE a.record_id = s.record_id "
            f"AND a.annotator = s.annotator AND a.undone_at IS NOT NULL) AS undone FROM assignments s WHERE s.annotator = ? "
            f"AND NOT {ANSWERED} ORDER BY undone IS NULL, undone DESC, s.rowid LIMIT 1", (annotator,)).fetchone()
        if row is None:
            return None
        item = self._item(connection, row[0])
        texts, _ = shown_order(item, bool(row[1]))
        return Shown(item.record_id, item.context, texts, again=row[2] is not None)

    def _progress(self, connection: sqlite3.Connection, annotator: str, shown: Shown | None, message: str) -> Progress:
        answered = connection.execute("SELECT COUNT(*) FROM answers WHERE annotator = ? AND undone_at IS NULL",
                                      (annotator,)).fetchone()[0]
        waiting = connection.execute(f"SELECT COUNT(*) FROM assignments s WHERE s.annotator = ? AND NOT {ANSWERED}",
                                     (annotator,)).fetchone()[0]
        open_ = connection.execute(f"SELECT COUNT(*) FROM items i WHERE {OPEN_TO}",
                                   {"annotator": annotator, "overlap": self.overlap}).fetchone()[0]
        return Progress(annotator, answered, waiting + open_, shown, message)


def shown_order(item: Item, second_first: bool) -> tuple[tuple[str, str], tuple[int | None, int | None]]:
    """(texts, candidate indices) in the order an annotator sees them."""
    texts = (item.first_text, item.second_text)
    candidates = (item.first_candidate, item.second_candidate)
    return (texts[::-1], candidates[::-1]) if second_first else (texts, candidates)


def correction(text: str | None, choice: str, shown: tuple[str, str]) -> str | None:
    """The corrected alt-text to keep: None when none was written or it is the chosen text as it
    was; an :class:`AnswerError` when it is empty, too long, or goes with no chosen text."""
    if text is None:
        return None
    if choice not in CORRECTABLE:
        raise AnswerError("A correction goes with the text you choose as better (1 or 2).")
    text = text.strip()
    if not text:
        raise AnswerError("The corrected alt-text is empty: write it, or press Esc to leave the edit.")
    if len(text) > MAX_CORRECTION_CHARS:
        raise AnswerError(f"The corrected alt-text is {len(text):,} characters long, more than the limit of {MAX_CORRECTION_CHARS:,}.")
    return None if text == shown[CORRECTABLE.index(choice)].strip() else text


def describe_choice(choice: str) -> str:
    return {"first": "1 is better", "second": "2 is better", "tie": "a tie", "both_bad": "both bad", "skip": "skipped"}[choice]
