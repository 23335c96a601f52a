"""Object HalBench (RLHF-V, Yu et al., CVPR 2024): 300 COCO val2014 images, each with a request for
a detailed description, scored by how many of the objects the description mentions are not there.

``--benchmark_dir`` holds RLAIF-V's ``eval/data`` files: ``obj_halbench_300_with_image.jsonl``
(JSON Lines: ``image_id`` (a COCO image id), ``question``, ``image`` (the JPEG as base64),
``org_idx``; other fields are kept) and, for scoring, ``synonyms_refine.txt`` (COCO's 80
classes and their synonyms). The question is asked as written, as RLAIF-V's script asks it.

Scoring (``get_score.py --benchmark object_halbench --benchmark_dir DIR --coco_annotations
COCO/annotations``) is CHAIR without a judge (see :mod:`mcmdpo.eval.benchmarks.chair`), with the
ground truth of COCO 2014's ``instances_val2014.json`` and ``captions_val2014.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcmdpo.data.records import Problem, RecordLocation, TestExample
from mcmdpo.eval.benchmarks.base import (
    Benchmark,
    BenchmarkData,
    BenchmarkScores,
    RecordFields,
    ScoreOptions,
    open_release,
    without,
)
from mcmdpo.eval.benchmarks.chair import (
    SYNONYMS_FILE,
    ChairError,
    ObjectMatcher,
    Synonyms,
    chair_metrics,
    chair_of,
    coco_problems,
    ground_truth,
    load_coco,
)

QUESTION_FILE = "obj_halbench_300_with_image.jsonl"
RELEASED_IMAGES = 300
UNITS = {"avg_word_len": "words"}
JUDGE_FREE_NOTE = (
    "Object HalBench scored with judge-free CHAIR (exact word match, RLAIF-V's eval_gpt_obj_halbench.py without "
    "--use_gpt): the RLHF-V / RLAIF-V papers extract the objects with GPT-3.5 instead, so their numbers are not "
    "directly comparable with these; CHAIRs_refine is the papers' response-level rate, CHAIRi the mention-level one"
)


def read(benchmark_dir: Path, image_folder: Path | None, parts: tuple[str, ...]) -> BenchmarkData:
    data, records = open_release(benchmark_dir, QUESTION_FILE, "Object HalBench questions, RLAIF-V's eval/data")
    for location, record in records:
        fields = RecordFields(location, record, data.problems, "image_id")
        image_id = _image_id(fields)
        question = fields.get("question", str)
        image = fields.base64_image("image")
        if fields.ok:
            data.examples.append(TestExample(image_id, image, question, (), without(record, "image"), location))
    return data


def _image_id(fields: RecordFields) -> int | None:
    """A COCO image id: an integer, or a string of digits (RLAIF-V's readers apply ``int``)."""
    value = fields.get("image_id", (int, str))
    if isinstance(value, str):
        if not value.strip().isdigit():
            fields.report("image_id", f"must be a COCO image id (an integer), found {value!r}")
            return None
        return int(value)
    return value


def _synonyms_path(options: ScoreOptions) -> Path | None:
    return options.benchmark_dir / SYNONYMS_FILE if options.benchmark_dir is not None else None


def _wordnet_problem(reader: Any) -> list[Problem]:
    if reader is not None:
        return []
    return [Problem("WordNet", "CHAIR lemmatises words with nltk's WordNet, which is not installed: install nltk's "
                               "wordnet data (python -m nltk.downloader wordnet) or Debian's wordnet-base and "
                               "wordnet-sense-index packages")]


def check(records: list[tuple[RecordLocation, dict[str, Any]]], options: ScoreOptions) -> list[Problem]:
    """Every record's ``image_id``, the synonym list, the COCO annotations (each image in them) and
    WordNet, before anything is scored."""
    from mcmdpo.eval.language_data import wordnet

    problems: list[Problem] = []
    image_ids = []
    for location, record in records:
        fields = RecordFields(location, record, problems)
        image_id = _image_id(fields)
        if image_id is not None:
            image_ids.append((location, image_id))
    synonyms = _synonyms_path(options)
    if synonyms is None:
        problems.append(Problem("--benchmark_dir", f"CHAIR needs RLAIF-V's COCO synonym list {SYNONYMS_FILE}: pass "
                                                   "--benchmark_dir, the folder holding it (RLAIF-V's eval/data)"))
    else:
        try:
            Synonyms.read(synonyms)
        except ChairError as error:
            problems.append(Problem(str(synonyms), str(error).removeprefix(f"{synonyms}: ")))
    problems += _wordnet_problem(wordnet()[0])
    found_coco = coco_problems(options.coco_annotations)
    problems += found_coco
    if not found_coco and image_ids:
        try:
            coco = load_coco(options.coco_annotations, [image_id for _, image_id in image_ids])
        except ChairError as error:
            return problems + [Problem(str(options.coco_annotations), str(error))]
        for location, image_id in image_ids:
            if image_id not in coco.found:
                problems.append(Problem(location.file, f"image {image_id} is not in the COCO 2014 annotations "
                                                       f"({', '.join(coco.files_read)} in {options.coco_annotations})",
                                        location, image_id, "image_id"))
    return problems


def score(records: list[tuple[RecordLocation, dict[str, Any]]], options: ScoreOptions) -> BenchmarkScores:
    """CHAIRs, CHAIRs_refine, CHAIRi, obj_rec (percent) and avg_word_len (words)."""
    from mcmdpo.eval.language_data import word_tokenizer, wordnet

    reader, wordnet_note = wordnet()
    if reader is None:
        raise ChairError(str(_wordnet_problem(None)[0]))
    tokenize, tokenizer_note = word_tokenizer()
    synonyms_path = _synonyms_path(options)
    if synonyms_path is None or options.coco_annotations is None:
        raise ChairError("Object HalBench scoring needs --benchmark_dir (synonyms_refine.txt) and --coco_annotations")
    matcher = ObjectMatcher(Synonyms.read(synonyms_path), tokenize, reader)
    image_ids = [int(record["image_id"]) for _, record in records]
    coco = load_coco(options.coco_annotations, image_ids)
    truths, unknown_categories = ground_truth(matcher, coco, image_ids)

    results, rows = [], []
    for (location, record), image_id in zip(records, image_ids):
        # RLAIF-V's reader: the answer with "Assistant:" removed, stripped.
        caption = record["response"].replace("Assistant:", "").strip()
        result = chair_of(matcher, caption, truths[image_id])
        results.append(result)
        rows.append({
            "line": location.number,
            "image_id": image_id,
            "hallucinated": bool(result.hallucinated),
            "mentioned_objects": [list(pair) for pair in result.mentions],
            "hallucinated_objects": [list(pair) for pair in result.hallucinated],
            "gt_objects": sorted(truths[image_id]),
            "words": result.words,
        })
    scores, counts = chair_metrics(results, [truths[image_id] for image_id in image_ids])

    notes = [JUDGE_FREE_NOTE]
    distinct = len(set(image_ids))
    if distinct != RELEASED_IMAGES:
        notes.append(f"{distinct} distinct images scored; the released Object HalBench has {RELEASED_IMAGES}")
    if unknown_categories:
        notes.append(f"COCO categories missing from {synonyms_path} counted as themselves: {', '.join(unknown_categories)}")
    if tokenizer_note:
        notes.append(f"CHAIR tokenisation: {tokenizer_note}")
    if wordnet_note:
        notes.append("CHAIR lemmatised with WordNet 3.0 from Debian's wordnet-base (the database nltk downloads)")
    return BenchmarkScores(scores, rows, counts, notes, dict(UNITS))


BENCHMARK = Benchmark(
    name="object_halbench",
    aliases=("obj_halbench_300", "obj_halbench", "Object-HalBench"),
    summary="Object HalBench: detailed descriptions of 300 COCO val2014 images; judge-free CHAIR (CHAIRs, CHAIRi, "
            "CHAIRs_refine, obj_rec)",
    parts=(),
    read=read,
    score=score,
    check=check,
    score_inputs=("benchmark_dir", "coco_annotations"),
    embedded_images=True,
)
