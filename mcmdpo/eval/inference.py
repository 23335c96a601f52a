"""Inference over an alt-text test file or a hallucination benchmark, batched and resumable.

    python mcmdpo_inference.py --model_name CKPT --test_datasets test.jsonl --eval_output out.jsonl \\
        [--image_folder DIR] [--batch_size 8] [--num_beams 3] [--temperature 0] [--max_new_tokens 256] [--resume]
    python mcmdpo_inference.py --model_name CKPT --test_datasets pope --benchmark_dir DIR \\
        --image_folder COCO_VAL2014 --eval_output out.jsonl [--benchmark_parts random ...]

Writes one JSON line per input record: the record, every field kept (an embedded image left
out), plus ``response``. Every record and image is checked before the model is loaded. With
``--resume`` an interrupted run goes on where it stopped: a partial last line is cut away,
finished lines are never rewritten, and every record ends up exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from mcmdpo.data.loading import find_problems, verify_images
from mcmdpo.data.records import DataValidationError, Problem, TestExample
from mcmdpo.eval.benchmarks import BENCHMARKS, find_benchmark
from mcmdpo.files import AppendLog, DamagedLogError
from mcmdpo.eval.generation import GenerationSettings, generate_responses
from mcmdpo.data.templates import CONVERSATION_TEMPLATES
from mcmdpo.model.loading import DTYPES, IMAGE_ASPECT_RATIOS, CheckpointError, load_checkpoint


class OutputError(RuntimeError):
    """The output file cannot be (re)used as asked."""


def record_key(record: dict[str, Any]) -> str:
    """A record's identity in the output: its fields without ``response``."""
    return json.dumps({k: v for k, v in record.items() if k != "response"}, sort_keys=True, ensure_ascii=False)


def finished_records(log: AppendLog) -> Counter[str]:
    """Keys of the records already written (a partial last line, an interrupted write, is cut
    away; a damaged line elsewhere is an error: that file is not ours to fix)."""
    try:
        return Counter(record_key(record) for record in log.read())
    except DamagedLogError as error:
        raise OutputError(f"{error}; cannot resume into this file") from None


def pending_examples(examples: list[Any], output: Path, resume: bool, overwrite: bool) -> tuple[list[Any], int]:
    """The examples still to generate and how many were already done. With ``overwrite`` an
    existing output counts for nothing (it is replaced once the model is loaded)."""
    if not output.exists() or overwrite:
        return examples, 0
    if not resume:
        raise OutputError(f"{output} exists: pass --resume to continue it or --overwrite to start again")
    done = finished_records(AppendLog(output))
    pending = []
    for example in examples:
        key = record_key(example.record)
        if done[key] > 0:
            done[key] -= 1
        else:
            pending.append(example)
    return pending, len(examples) - len(pending)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcmdpo_inference.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name", required=True, help="HF-format checkpoint (full model or LoRA adapters)")
    parser.add_argument("--test_datasets", required=True,
                        help="test file (JSON Lines: image_path, question, ...) or a benchmark: " + ", ".join(BENCHMARKS))
    parser.add_argument("--eval_output", required=True, help="output JSON Lines file, written exactly here")
    parser.add_argument("--image_folder", default=None,
                        help="folder image paths are relative to (a benchmark's default: its --benchmark_dir)")
    parser.add_argument("--benchmark_dir", default=None, help="a benchmark's released files, as downloaded (see README)")
    parser.add_argument("--benchmark_parts", nargs="+", default=None,
                        help="only these parts of the benchmark: " + "; ".join(f"{b.name}: {' '.join(b.parts)}" for b in BENCHMARKS.values() if b.parts))
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy / beam search; > 0 samples")
    parser.add_argument("--top_p", type=float, default=None, help="nucleus sampling (with --temperature > 0)")
    parser.add_argument("--num_beams", type=int, default=3)
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seeds sampling")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="weights and activations while generating (the original decodes in fp16); default: bfloat16 on a GPU, "
                             "float32 on a CPU")
    parser.add_argument("--image_aspect_ratio", choices=IMAGE_ASPECT_RATIOS, default="auto",
                        help="image protocol; default: what the checkpoint records (training's), else pad for LLaVA")
    parser.add_argument("--conversation_template", choices=CONVERSATION_TEMPLATES, default="auto",
                        help="prompt template; default: vicuna_v1 for LLaVA (training's), else the checkpoint's")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run into --eval_output")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --eval_output")
    parser.add_argument("--skip_bad_records", action="store_true", help="skip (and count) bad records instead of stopping")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


class TestSet(NamedTuple):
    """What a run answers: the valid examples, every problem found (images decoded), the folder
    image paths are relative to, and what the progress bar calls the work."""

    examples: list[TestExample]
    problems: list[Problem]
    image_folder: str | None
    task: str


def read_test_set(args: argparse.Namespace) -> TestSet:
    """The test file or benchmark that ``--test_datasets`` names."""
    benchmark = find_benchmark(args.test_datasets)
    if benchmark is None:
        if args.benchmark_dir or args.benchmark_parts:
            raise OutputError(f"--benchmark_dir and --benchmark_parts go with a benchmark name ({', '.join(BENCHMARKS)}), "
                              f"not a test file ({args.test_datasets})")
        loaded, problems = find_problems(args.test_datasets, "test", args.image_folder, show_progress=not args.quiet)
        return TestSet(loaded.examples, problems, args.image_folder, "generating alt-text")
    if not args.benchmark_dir:
        raise OutputError(f"{benchmark.name}: pass --benchmark_dir, the folder holding its released files (see README)")
    benchmark_dir = Path(args.benchmark_dir)
    if not benchmark_dir.is_dir():
        raise OutputError(f"--benchmark_dir {benchmark_dir}: not a folder")
    unknown = sorted(set(args.benchmark_parts or ()) - set(benchmark.parts))
    if unknown:
        raise OutputError(f"--benchmark_parts: {benchmark.name} has no part {', '.join(unknown)}"
                          + (f" (its parts: {', '.join(benchmark.parts)})" if benchmark.parts else " (it has no parts)"))
    if args.image_folder and benchmark.embedded_images:
        raise OutputError(f"--image_folder: {benchmark.name}'s images are inside its question file")
    image_folder = Path(args.image_folder) if args.image_folder else None
    data = benchmark.read(benchmark_dir, image_folder, tuple(args.benchmark_parts or ()))
    for note in data.notes:
        print(f"note: {note}", file=sys.stderr)
    if not data.examples and not data.problems:
        data.problems.append(Problem(data.source, "no questions found"))
    folder = image_folder or data.image_folder or benchmark_dir
    examples, _ = verify_images(data.examples, data.source, folder, data.problems, show_progress=not args.quiet)
    return TestSet(examples, data.problems, str(folder), f"answering {benchmark.name}")


def run(args: argparse.Namespace) -> int:
    output = Path(args.eval_output)
    if output.resolve() == Path(args.test_datasets).resolve():
        raise OutputError("--eval_output must not be the input file")
    test_set = read_test_set(args)
    problems = test_set.problems
    if problems and not args.skip_bad_records:
        raise DataValidationError(problems)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    pending, done = pending_examples(test_set.examples, output, args.resume, args.overwrite)
    if not pending:
        print(f"{output}: all {done} records already done")
        return 0
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"--eval_output {output}: cannot create its folder ({error})") from None
    if not os.access(output.parent, os.W_OK):
        raise OutputError(f"--eval_output {output}: its folder is not writable")
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    checkpoint = load_checkpoint(args.model_name, image_aspect_ratio=args.image_aspect_ratio,
                                 conversation_template=args.conversation_template, padding_side="left", dtype=dtype)
    processor, inputs, model = checkpoint.processor, checkpoint.family.inputs, checkpoint.model.to(device).eval()
    settings = GenerationSettings(args.temperature, args.num_beams, args.max_new_tokens, args.top_p)
    if args.overwrite:
        output.unlink(missing_ok=True)  # only now that the model has loaded: a failed load loses nothing
    log = AppendLog(output)
    with tqdm(total=len(pending), desc=test_set.task, disable=args.quiet) as progress:
        for batch, responses in generate_responses(model, processor, inputs, pending, test_set.image_folder, settings, args.batch_size):
            log.append({**example.record, "response": response} for example, response in zip(batch, responses))
            progress.update(len(batch))
    print(
        f"{output}: {len(pending)} records written"
        + (f", {done} already there" if done else "")
        + (f", {len(problems)} bad records skipped" if problems else "")
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (DataValidationError, CheckpointError, OutputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def main_exit() -> None:
    sys.exit(main())
