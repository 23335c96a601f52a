"""The per-record score files scoring writes beside each output, one per protocol or benchmark
(``NAME.coco.scores.jsonl``, ``NAME.paper.scores.jsonl``, ``NAME.<benchmark>.scores.jsonl``), so
that two ways of scoring one output never share a file and an output is never written over."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from mcmdpo.files import beside, json_lines, write_text_atomically

SCORE_SUFFIX = ".scores.jsonl"
# Files scoring writes beside the outputs (per-record scores, an LLM judge's replies), never outputs themselves.
DERIVED_SUFFIXES = (SCORE_SUFFIX, ".judge.jsonl")


def record_scores_path(path: Path, name: str) -> Path:
    """``NAME.<name>.scores.jsonl`` beside the output ``path``; ``name`` is the protocol or the
    benchmark."""
    return beside(path, f".{name}{SCORE_SUFFIX}")


def save_record_scores(path: Path, name: str, rows: Iterable[dict[str, Any]]) -> Path:
    """Write the rows to :func:`record_scores_path`, atomically."""
    return write_text_atomically(record_scores_path(path, name), json_lines(rows))
