"""What every stage does around its own work: open its file for the records it will write (resumed
when the file holds the first of them under the same inputs, started anew otherwise), say in the
report that it runs, and once its records are all written, close the file and write its section
with the fingerprint, whether it was already up to date, and how long it took."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mcmdpo.build.report import write_section
from mcmdpo.build.stage_files import StageWriter, stage_path


class StageRun:
    """One run of a stage over records with ``keys`` (in order): ``writer.done`` the lines already
    written, ``up_to_date`` whether the stage had finished under these inputs."""

    def __init__(self, output_dir: str | Path, stage: str, inputs: dict[str, Any], keys: list[str]):
        self.started = time.monotonic()
        self.output_dir = Path(output_dir)
        self.stage = stage
        self.writer = StageWriter(stage_path(output_dir, stage), stage, inputs)
        if [line.get("key") for line in self.writer.done] != keys[: len(self.writer.done)]:
            self.writer.restart()  # not the lines of these records: start again
        self.up_to_date = self.writer.complete
        write_section(output_dir, stage, {"status": "running", "fingerprint": self.writer.fingerprint},
                      redone=not self.writer.resumed)

    @property
    def done(self) -> list[dict[str, Any]]:
        return self.writer.done

    def finish(self, section: dict[str, Any]) -> dict[str, Any]:
        """Close the file and write the stage's ``section`` (completed here); return it."""
        self.writer.finish()
        section.update(fingerprint=self.writer.fingerprint, up_to_date=self.up_to_date,
                       seconds=round(time.monotonic() - self.started, 3))
        write_section(self.output_dir, self.stage, section)
        return section
