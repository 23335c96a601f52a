"""Each stage's file: JSON Lines, a header line naming the stage and the fingerprint of its
inputs, one line per record appended and synced as it is made, and a footer line once the stage is
complete.

Opening a stage file for writing (:class:`StageWriter`) resumes it when its header carries the
same fingerprint (a partial last line, a write cut short, is cut away: at most the record in
flight is lost) and starts it anew otherwise, so a stage whose inputs changed is redone, never
mixed. Every stage's inputs include the sha256 of the previous stage's file, so reading a stage's
input (:func:`read_chain`) also checks that each earlier file is the one the next was built from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from mcmdpo.caching import description_key
from mcmdpo.files import AppendLog, DamagedLogError, file_sha256, json_lines, write_text_atomically

HEADER_KEY = "mcmdpo_build_stage"
FOOTER_KEY = "mcmdpo_build_complete"
UPSTREAM_KEY = "upstream_sha256"


class BuildError(ValueError):
    """A build cannot go on: a stage's input is missing, incomplete or stale."""


def stage_path(output_dir: str | Path, stage: str) -> Path:
    return Path(output_dir) / f"{stage}.jsonl"


def fingerprint(inputs: dict[str, Any]) -> str:
    return description_key(inputs)


def _lines(path: Path) -> list[dict[str, Any]] | None:
    """The lines of a stage file (a partial last line cut away); None when it is damaged."""
    try:
        return AppendLog(path).read()
    except DamagedLogError:
        return None


class StageWriter:
    """A stage file opened to be written: ``done`` holds the records already there when it
    resumes, ``complete`` whether the stage had finished."""

    def __init__(self, path: str | Path, stage: str, inputs: dict[str, Any]):
        self.path = Path(path)
        self.stage = stage
        self.inputs = inputs
        self.fingerprint = fingerprint(inputs)
        self.done: list[dict[str, Any]] = []
        self.complete = False
        self.resumed = False
        lines = _lines(self.path) if self.path.exists() else None
        header = lines[0] if lines else {}
        if header.get(HEADER_KEY) == stage and header.get("fingerprint") == self.fingerprint:
            body = lines[1:]
            if body and FOOTER_KEY in body[-1]:
                self.complete = True
                body = body[:-1]
            self.done, self.resumed = body, True
        else:
            self.restart()

    @property
    def header(self) -> dict[str, Any]:
        return {HEADER_KEY: self.stage, "fingerprint": self.fingerprint, "inputs": self.inputs}

    def restart(self) -> None:
        """Start the file anew: the header alone."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.path, json_lines([self.header]))
        self.done, self.complete, self.resumed = [], False, False

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        records = list(records)
        AppendLog(self.path).append(records)
        self.done.extend(records)

    def finish(self) -> None:
        if not self.complete:
            AppendLog(self.path).append([{FOOTER_KEY: self.stage, "records": len(self.done)}])
            self.complete = True


def write_complete(path: str | Path, stage: str, inputs: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """A whole stage file at once, replaced atomically (merged shards)."""
    header = {HEADER_KEY: stage, "fingerprint": fingerprint(inputs), "inputs": inputs}
    write_text_atomically(Path(path), json_lines([header, *records, {FOOTER_KEY: stage, "records": len(records)}]))


@dataclass
class StageContents:
    """A complete stage file: its header's inputs, its records and its file's sha256."""

    stage: str
    inputs: dict[str, Any]
    records: list[dict[str, Any]]
    sha256: str


def read_stage(output_dir: str | Path, stage: str) -> StageContents:
    """A complete stage file, or a :class:`BuildError` saying what to run."""
    path = stage_path(output_dir, stage)
    if not path.exists():
        raise BuildError(f"{path}: not found; run the {stage} stage first (--stages {stage} ...)")
    lines = _lines(path)
    if not lines or lines[0].get(HEADER_KEY) != stage:
        raise BuildError(f"{path}: not a {stage} stage file written by mcmdpo.build; run the {stage} stage again")
    if FOOTER_KEY not in lines[-1]:
        raise BuildError(f"{path}: incomplete (interrupted?); run the {stage} stage again, it continues where it stopped")
    return StageContents(stage, lines[0].get("inputs", {}), lines[1:-1], file_sha256(path))


def read_chain(output_dir: str | Path, stages: tuple[str, ...]) -> dict[str, StageContents]:
    """The complete files of ``stages`` (in pipeline order), each checked to be built from the
    file before it as it is now."""
    chain: dict[str, StageContents] = {}
    previous: StageContents | None = None
    for stage in stages:
        contents = read_stage(output_dir, stage)
        if previous is not None and contents.inputs.get(UPSTREAM_KEY) != previous.sha256:
            raise BuildError(f"{stage_path(output_dir, stage)} was built from another {previous.stage}.jsonl than the one "
                             f"there now; run the {stage} stage again")
        chain[stage] = contents
        previous = contents
    return chain
