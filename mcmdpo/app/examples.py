"""The examples the page offers: records of a data file (test or preference format), or, by
default, a few records of the project's synthetic data written into a temporary folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mcmdpo.data.loading import find_problems
from mcmdpo.data.records import DataValidationError, PreferenceExample, TestExample
from mcmdpo.data.synthetic import INSTRUCTION, write_dataset

CONTEXT_MARKER = "Context:"


@dataclass(frozen=True)
class Example:
    """One example: its image file, the instruction and post its question splits into, and a
    reference (or chosen) alt-text to score."""

    image_path: Path
    instruction: str
    post: str
    alt_text: str


def split_question(question: str, default_instruction: str = INSTRUCTION) -> tuple[str, str]:
    """(instruction, post) of a record's question: the instruction runs through the last
    "Context:" line break (the released data's and the synthetic data's form); a question without
    one is all post, under ``default_instruction``."""
    at = question.rfind(CONTEXT_MARKER)
    if at < 0:
        return default_instruction, question
    end = at + len(CONTEXT_MARKER)
    if question[end:end + 1] == "\n":
        end += 1
    return question[:end], question[end:]


def examples_from_file(path: str | Path, image_folder: str | Path | None, limit: int, embedded_dir: Path) -> list[Example]:
    """The first ``limit`` records with an image of a test or preference file (every record and
    image checked as inference checks them). Embedded images are written into ``embedded_dir``."""
    loaded, problems = find_problems(path, None, image_folder, show_progress=False)
    if problems:
        raise DataValidationError(problems)
    examples = []
    for number, record in enumerate(loaded.examples):
        if len(examples) >= limit:
            break
        if isinstance(record, PreferenceExample):
            alt_text = record.chosen
        elif isinstance(record, TestExample):
            alt_text = record.references[0] if record.references else ""
        else:
            raise ValueError(f"{path}: examples come from a test or preference file, not a {loaded.kind} file")
        if record.image is None:
            continue
        if record.image.data is not None:
            image_path = embedded_dir / f"example_{number}.png"
            record.image.open(None).save(image_path)
        else:
            image_path = record.image.resolve(image_folder).resolve()
        examples.append(Example(image_path, *split_question(record.question), alt_text))
    return examples


def synthetic_examples(folder: Path, count: int = 4, seed: int = 0) -> list[Example]:
    """``count`` records of the synthetic test split (the task the demo's checkpoints learn),
    written into ``folder`` and read back as any test file is."""
    write_dataset(folder, seed=seed, num_sft=0, num_pref_train=0, num_pref_test=0, num_test=count)
    return examples_from_file(folder / "test.jsonl", folder / "image", count, folder)


def unrelated_post(examples: list[Example], position: int, fallback: str = "Happy Friday everyone, off to the beach!") -> str:
    """The unrelated post that goes with example ``position`` for its context margin: the next
    example's (as the evaluation lends a record another record's question)."""
    if len(examples) < 2:
        return fallback
    return examples[(position + 1) % len(examples)].post
