"""HallusionBench (Guan et al., CVPR 2024): yes/no questions on charts, tables, maps, illusions and
more, each asked about an original figure, an edited one, and for the visual-supplement (VS) part
also without any figure.

``--benchmark_dir`` holds the released ``HallusionBench.json`` (a JSON array; every field a
string, ``filename`` ``./VD/illusion/0_1.png`` or null when there is no figure) and the figures
as the released zip unpacks them (``hallusion_bench/VD/...``; ``--image_folder`` overrides).
The question gets the original script's suffix "Answer the question using a single word: Yes or
No."; a question without a figure is asked text-only (the original script stops on those).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from mcmdpo.data.records import ImageRef, Problem, RecordLocation, TestExample
from mcmdpo.eval.benchmarks.answers import strict_yes_no
from mcmdpo.eval.benchmarks.base import (
    YES_NO_SUFFIX,
    Benchmark,
    BenchmarkData,
    BenchmarkScores,
    RecordFields,
    ScoreOptions,
    json_array_records,
    percentage,
)

QUESTION_FILE = "HallusionBench.json"
FIGURE_FOLDER = "hallusion_bench"  # what the released figure zip unpacks to
KEY_FIELDS = ("category", "subcategory", "visual_input", "set_id", "figure_id", "question_id")
ANSWERS = {"1": "yes", "0": "no"}
ALLOWED = {"category": ("VD", "VS"), "visual_input": ("0", "1", "2")}
NUMBERED = ("set_id", "figure_id", "question_id")
# What the official GPT-4 judge calls "unclear": the model declines to answer. Read by rule, and
# before any yes or no ("There is no chart, so I cannot tell" declines; it does not answer no).
UNCERTAIN = re.compile(
    r"\b(not sure|uncertain|unclear|(?:cannot|can ?not|can't|unable to|impossible to|not possible to) "
    r"(?:tell|determine|be determined|answer|say|know|confirm|verify)|(?:do not|don't) know|"
    r"not enough (?:information|context|data)|no (?:chart|figure|image|table|map|graph|picture|data) "
    r"(?:is |was )?(?:provided|given|shown|available|attached))\b")


def read(benchmark_dir: Path, image_folder: Path | None, parts: tuple[str, ...]) -> BenchmarkData:
    path = benchmark_dir / QUESTION_FILE
    figures = benchmark_dir / FIGURE_FOLDER
    data = BenchmarkData(str(path), image_folder=figures if figures.is_dir() else benchmark_dir)
    for location, record in json_array_records(path, data.problems):
        fields = RecordFields(location, record, data.problems, "question_id")
        _key_fields(fields)
        question = fields.get("question", str)
        _answer(fields)
        filename = fields.get("filename", str, optional=True)
        if fields.ok and (filename is None) != (record["visual_input"] == "0"):
            fields.report("filename", "must be null exactly when visual_input is \"0\" (a question without a figure)")
        if not fields.ok:
            continue
        image = ImageRef(path=filename.removeprefix("./"), source_field="filename") if filename else None
        # The original script numbers the questions in file order (``idx``); the output keeps it.
        data.examples.append(TestExample(location.number, image, question + YES_NO_SUFFIX, (), {**record, "idx": location.number}, location))
    return data


def _key_fields(fields: RecordFields) -> None:
    """The fields the groups are keyed by: strings, the ids numbers, category and visual_input known."""
    for name in KEY_FIELDS:
        value = fields.get(name, str)
        if value is None:
            continue
        if name in ALLOWED and value not in ALLOWED[name]:
            fields.report(name, f"must be one of {', '.join(ALLOWED[name])}, found {value!r}")
        if name in NUMBERED and not value.isdigit():
            fields.report(name, f"must be a number (as a string), found {value!r}")


def _answer(fields: RecordFields) -> str | None:
    answer = fields.get("gt_answer", str)
    if answer is not None and answer not in ANSWERS:
        fields.report("gt_answer", f'must be "1" (yes) or "0" (no), found {answer!r}')
        return None
    return ANSWERS.get(answer) if answer else None


def check(records: list[tuple[RecordLocation, dict[str, Any]]], options: ScoreOptions) -> list[Problem]:
    problems: list[Problem] = []
    for location, record in records:
        fields = RecordFields(location, record, problems, "idx")
        _key_fields(fields)
        _answer(fields)
    return problems


UNPARSED = -1


def _judgement(response: str, truth: str) -> int:
    """The official scale, 1 correct, 0 wrong, 2 uncertain (the model declined: "I cannot tell"),
    and UNPARSED for an answer that is none of these (empty, both yes and no...): wrong."""
    if UNCERTAIN.search(response.lower().replace("\u2019", "'")):
        return 2
    answer = strict_yes_no(response)
    return UNPARSED if answer is None else int(answer == truth)


def _is_correct(record: dict[str, Any], judgement: int) -> bool:
    """As the official evaluation assigns correctness: an uncertain answer is right only for a VS
    question asked without its figure (nothing to read the answer from), else wrong."""
    no_figure = record["category"] == "VS" and int(record["figure_id"]) == 0
    return judgement == 1 or (no_figure and judgement == 2)


def _all_correct_share(rows: Iterable[tuple[tuple[str, ...], bool]]) -> tuple[float | None, int]:
    """The share of groups whose every member is correct (None without any group), and the
    number of groups."""
    groups: dict[tuple[str, ...], bool] = defaultdict(lambda: True)
    for key, correct in rows:
        groups[key] &= correct
    return (percentage(sum(groups.values()), len(groups)) if groups else None), len(groups)


def score(records: list[tuple[RecordLocation, dict[str, Any]]], options: ScoreOptions) -> BenchmarkScores:
    """aAcc (questions), qAcc (a question across its figures, all right), fAcc (a figure's
    questions, all right; VS questions without a figure left out) and the easy (original figure
    or none) and hard (edited figure) question accuracies, with rule-based yes/no extraction."""
    rows, correct_flags = [], []
    for location, record in records:
        truth = ANSWERS[record["gt_answer"]]
        judgement = _judgement(record["response"], truth)
        correct = _is_correct(record, judgement)
        correct_flags.append(correct)
        rows.append({"line": location.number, "idx": record.get("idx"), **{name: record[name] for name in KEY_FIELDS},
                     "gt_answer": truth, "judgement": judgement, "correct": correct})

    def question_key(row: dict[str, Any]) -> tuple[str, ...]:
        return row["category"], row["subcategory"], row["set_id"], row["question_id"]

    question_accuracy, questions = _all_correct_share((question_key(row), row["correct"]) for row in rows)
    figure_accuracy, figures = _all_correct_share(
        ((row["category"], row["subcategory"], row["set_id"], row["figure_id"]), row["correct"])
        for row in rows if not (row["category"] == "VS" and int(row["figure_id"]) == 0))
    easy, easy_groups = _all_correct_share((question_key(row), row["correct"]) for row in rows if row["visual_input"] != "2")
    hard, hard_groups = _all_correct_share((question_key(row), row["correct"]) for row in rows if row["visual_input"] == "2")
    uncertain = sum(row["judgement"] == 2 for row in rows)
    unparsed = sum(row["judgement"] == UNPARSED for row in rows)
    scores = {
        "qAcc": question_accuracy,
        "fAcc": figure_accuracy,
        "easy_qAcc": easy,
        "hard_qAcc": hard,
        "aAcc": percentage(sum(correct_flags), len(rows)),
        "uncertain": percentage(uncertain, len(rows)),
        "unparsed": percentage(unparsed, len(rows)),
    }
    left_out = [name for name, value in scores.items() if value is None]
    notes = ["HallusionBench: answers read by rule (yes or no when exactly one of the words appears; \"uncertain\" when "
             "the model declines, e.g. \"I cannot tell\", which counts as right only for VS questions asked without their "
             "figure; anything else unparsed and wrong), where the official evaluation asks GPT-4 to compare each answer "
             "with gt_answer_details"]
    if left_out:
        notes.append(f"HallusionBench: {', '.join(left_out)} left out: no question of that kind in the file")
    counts = {"questions": len(rows), "question_groups": questions, "figures": figures, "easy_groups": easy_groups,
              "hard_groups": hard_groups, "uncertain": uncertain, "unparsed": unparsed}
    return BenchmarkScores({name: value for name, value in scores.items() if value is not None}, rows, counts, notes)


BENCHMARK = Benchmark(
    name="hallusionbench",
    aliases=("HallusionBench",),
    summary="HallusionBench: yes/no questions with and without (edited) figures; qAcc, fAcc, aAcc",
    parts=(),
    read=read,
    score=score,
    check=check,
)
