"""MMHal-Bench (LLaVA-RLHF, Sun et al., 2023): 96 questions on OpenImages pictures, 12 for each of
eight question types, whose answers an LLM judge rates from 0 to 6 against a reference answer and
the image's labels.

``--benchmark_dir`` holds RLAIF-V's ``mmhal-bench_with_image.jsonl`` (JSON Lines with the
official template's fields ``question_type``, ``question_topic``, ``image_id``, ``image_src``,
``image_content`` (a list of labels), ``question``, ``gt_answer``, plus ``image``, the picture
as base64; other fields are kept) and, for judging, the official ``eval_gpt4.py`` of
huggingface.co/datasets/Shengcao1006/MMHal-Bench, whose judge prompt is read from it (it is not
shipped here). The question is asked as written.

Scoring always writes ``NAME.mmhal_bench.judge_input.json``, the file ``eval_gpt4.py --response``
reads. With ``--judge_url`` the judge is asked here (see :mod:`mcmdpo.eval.benchmarks.judge`):
the official prompt, temperature 0, the official parsing (exactly one "rating: s" in the
lower-cased reply gives s, anything else 0), resumable through ``NAME.mmhal_bench.judge.jsonl``.
"""

from __future__ import annotations

import ast
import json
import string
from collections import defaultdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mcmdpo.data.records import Problem, RecordLocation, TestExample
from mcmdpo.files import beside, write_text_atomically
from mcmdpo.eval.benchmarks.base import (
    Benchmark,
    BenchmarkData,
    BenchmarkScores,
    RecordFields,
    ScoreOptions,
    open_release,
    percentage,
    without,
)
from mcmdpo.eval.benchmarks.judge import (
    JudgeCache,
    JudgeError,
    client_from_options,
    request_key,
)

QUESTION_FILE = "mmhal-bench_with_image.jsonl"
# The official judge script (Shengcao1006/MMHal-Bench), then the copies in RLAIF-V / LLaVA-RLHF (same prompt).
JUDGE_SCRIPTS = ("eval_gpt4.py", "eval_gpt_mmhal.py")
TEMPLATE_FIELDS = ("question_type", "question_topic", "image_id", "image_src", "image_content", "question", "gt_answer")
QUESTION_TYPES = ("attribute", "adversarial", "comparison", "counting", "relation", "environment", "holistic", "other")
RELEASED_QUESTIONS = 96
SCORED_FIELDS = ("question_type", "image_content", "question", "gt_answer")
UNITS = {"average_score": "points (0-6)"}


def read(benchmark_dir: Path, image_folder: Path | None, parts: tuple[str, ...]) -> BenchmarkData:
    data, records = open_release(benchmark_dir, QUESTION_FILE, "MMHal-Bench questions with their images, as RLAIF-V ships them")
    for location, record in records:
        fields = RecordFields(location, record, data.problems, "image_id")
        _scored_fields(fields)
        fields.get("question_topic", str, optional=True)
        fields.get("image_id", (str, int), optional=True)
        fields.get("image_src", str, optional=True)
        image = fields.base64_image("image")
        if fields.ok:
            data.examples.append(TestExample(location.number, image, record["question"], (record["gt_answer"],),
                                             without(record, "image"), location))
    return data


def _scored_fields(fields: RecordFields) -> None:
    """The fields the judge is given (and the type that groups the scores), problems reported."""
    fields.get("question_type", str)
    content = fields.get("image_content", list, non_empty=False)
    if content is not None and not all(isinstance(label, str) for label in content):
        fields.report("image_content", "must be a list of strings (the image's labels)")
    fields.get("question", str)
    fields.get("gt_answer", str, non_empty=False)


def official_template(benchmark_dir: Path | None) -> str:
    """The judge prompt of the official ``eval_gpt4.py`` (the string assigned to ``template``),
    with its four ``{}`` slots: image contents, question, reference answer, model answer."""
    if benchmark_dir is None:
        raise JudgeError("the MMHal-Bench judge prompt is the official one, read from its eval_gpt4.py: pass --benchmark_dir, "
                         "the folder holding it (huggingface.co/datasets/Shengcao1006/MMHal-Bench)")
    scripts = [benchmark_dir / name for name in JUDGE_SCRIPTS]
    script = next((path for path in scripts if path.is_file()), None)
    if script is None:
        raise JudgeError(f"{scripts[0]}: file not found; the MMHal-Bench judge prompt is read from the official eval_gpt4.py "
                         "(huggingface.co/datasets/Shengcao1006/MMHal-Bench), which is not shipped here: put it in --benchmark_dir")
    try:
        tree = ast.parse(script.read_text(encoding="utf-8"), str(script))
    except (SyntaxError, UnicodeDecodeError, ValueError) as error:
        raise JudgeError(f"{script}: not readable as Python ({error})") from None
    templates = [node.value.value for node in tree.body
                 if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                 and any(isinstance(target, ast.Name) and target.id == "template" for target in node.targets)]
    if not templates:
        raise JudgeError(f"{script}: no string assigned to `template` (the judge prompt) at the top level")
    template = templates[0]
    try:
        slots = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise JudgeError(f"{script}: its template is not a format string ({error})") from None
    if slots != [""] * 4:
        raise JudgeError(f"{script}: its template must have 4 {{}} slots (image contents, question, answer, response), "
                         f"found {len(slots)}: {slots}")
    return template


def judge_prompt(template: str, record: dict[str, Any]) -> str:
    """As the official script fills it: labels comma-joined, question, reference, our response."""
    return template.format(", ".join(record["image_content"]), record["question"], record["gt_answer"], record["response"])


def official_rating(reply: str) -> int | None:
    """The rating s when "rating: s" (0 to 6) occurs for exactly one s in the lower-cased reply,
    else None (the official script then counts 0)."""
    lowered = reply.lower()
    found = [s for s in range(7) if f"rating: {s}" in lowered]
    return found[0] if len(found) == 1 else None


def judge_input_path(output: Path) -> Path:
    return beside(output, ".mmhal_bench.judge_input.json")


def judge_cache_path(output: Path) -> Path:
    return beside(output, ".mmhal_bench.judge.jsonl")


def write_judge_input(path: Path, records: list[dict[str, Any]]) -> None:
    """The official ``response_template.json`` layout: its keys in its order, ``model_answer`` ours."""
    rows = [{**{name: record[name] for name in TEMPLATE_FIELDS if name in record}, "model_answer": record["response"]}
            for record in records]
    write_text_atomically(path, json.dumps(rows, indent=4, ensure_ascii=False) + "\n")


def check(records: list[tuple[RecordLocation, dict[str, Any]]], options: ScoreOptions) -> list[Problem]:
    """The fields the judge needs in every record, and with --judge_url the official prompt."""
    problems: list[Problem] = []
    for location, record in records:
        _scored_fields(RecordFields(location, record, problems, "image_id"))
    if options.judge_url:
        try:
            official_template(options.benchmark_dir)
        except JudgeError as error:
            problems.append(Problem("--benchmark_dir", str(error)))
        if options.judge_retries < 1:
            problems.append(Problem("--judge_retries", f"must be at least 1, found {options.judge_retries}"))
        if options.judge_timeout <= 0:
            problems.append(Problem("--judge_timeout", f"must be positive, found {options.judge_timeout}"))
    return problems


def score(records: list[tuple[RecordLocation, dict[str, Any]]], options: ScoreOptions) -> BenchmarkScores:
    """average_score (0-6), hallucination_rate (ratings below 3, percent) and RLAIF-V's
    informativeness (percent), overall and per question type."""
    output = Path(records[0][0].file)
    judge_input = judge_input_path(output)
    write_judge_input(judge_input, [record for _, record in records])
    notes = [f"wrote {judge_input}, the file the official eval_gpt4.py reads (--response)"]
    if not options.judge_url:
        notes.append(f"MMHal-Bench is scored by an LLM judge, and none was given: pass --judge_url (an OpenAI-compatible "
                     f"endpoint), or run the official script: python eval_gpt4.py --response {judge_input} "
                     f"--evaluation {beside(output, '.mmhal_bench.evaluation.json')} --api-key KEY")
        return BenchmarkScores({}, [], {"responses": len(records)}, notes)

    template = official_template(options.benchmark_dir)
    client = client_from_options(options.judge_url, options.judge_model, options.judge_api_key_env,
                                 options.judge_timeout, options.judge_retries)
    cache = JudgeCache(judge_cache_path(output))
    keys = [request_key(client.model, judge_prompt(template, record)) for _, record in records]
    pending = list(dict.fromkeys(key for key in keys if cache.get(key) is None))
    from_cache = sum(cache.get(key) is not None for key in keys)
    prompts = {key: judge_prompt(template, record) for key, (_, record) in zip(keys, records)}
    lines = {key: location.number for key, (location, _) in zip(keys, records)}
    with tqdm(total=len(pending), desc=f"judging {output.name} ({client.model})", disable=not options.show_progress) as progress:
        for key in pending:
            try:
                reply = client.reply(prompts[key])
            except JudgeError as error:
                judged = sum(cache.get(k) is not None for k in keys)
                raise JudgeError(f"{error}. {judged} of {len(keys)} records are judged and kept in "
                                 f"{cache.log.path}: run get_score again to judge the rest") from None
            cache.add({"key": key, "model": client.model, "line": lines[key], "rating": official_rating(reply), "reply": reply})
            progress.update(1)

    rows = []
    by_type: dict[str, list[int]] = defaultdict(list)
    for key, (location, record) in zip(keys, records):
        reply = cache.get(key)["reply"]
        rating = official_rating(reply)
        value = 0 if rating is None else rating
        by_type[record["question_type"]].append(value)
        rows.append({"line": location.number, "image_id": record.get("image_id"), "question_type": record["question_type"],
                     "question_topic": record.get("question_topic"), "score": value, "parsed": rating is not None,
                     "hallucination": value < 3, "judge_reply": reply})
    scores = [row["score"] for row in rows]
    unparsed = sum(not row["parsed"] for row in rows)
    order = [t for t in QUESTION_TYPES if t in by_type] + sorted(set(by_type) - set(QUESTION_TYPES))
    groups = {question_type: _metrics(by_type[question_type]) for question_type in order}
    notes.append(f"judged by {client.model} at {client.endpoint} with the official prompt and temperature 0 (the official "
                 "judge is gpt-4-0314, RLAIF-V's gpt-4-1106-preview)")
    if unparsed:
        notes.append(f"{unparsed} judge reply(ies) held no single \"rating: s\" and count as 0, as the official script counts them")
    if len(records) != RELEASED_QUESTIONS:
        notes.append(f"{len(records)} responses scored; the released MMHal-Bench has {RELEASED_QUESTIONS}")
    if client.api_key is None:
        notes.append(f"${options.judge_api_key_env} is not set: the judge was asked without an API key")
    counts = {"responses": len(records), "judge_calls": len(pending), "from_cache": from_cache,
              "unparsed": unparsed}
    return BenchmarkScores(_metrics(scores), rows, counts, notes, dict(UNITS), groups)


def _metrics(scores: list[int]) -> dict[str, float]:
    return {
        "average_score": sum(scores) / len(scores) if scores else 0.0,
        "hallucination_rate": percentage(sum(score < 3 for score in scores), len(scores)),
        # RLAIF-V's summarize_gpt_mmhal_review.py: a rating's informativeness part (3 to 6 -> 0 to 3), over 3.
        "informativeness": percentage(sum(score - 3 if score >= 3 else score for score in scores), 3 * len(scores)),
    }


BENCHMARK = Benchmark(
    name="mmhal_bench",
    aliases=("MMHal-Bench", "mmhal"),
    summary="MMHal-Bench: 96 questions on OpenImages pictures rated 0-6 by an LLM judge; average score, hallucination "
            "rate, informativeness",
    parts=(),
    read=read,
    score=score,
    check=check,
    score_inputs=("benchmark_dir", "judge"),
    embedded_images=True,
)
