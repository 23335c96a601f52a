"""Scoring generated alt-text against references.

    python get_score.py --file OUT.jsonl [MORE.jsonl FOLDER ...] [--protocol coco|paper]
        [--clip_model CLIP --image_folder DIR] [--summary_json PATH] [--plot PATH]
    python get_score.py --benchmark NAME --file OUT.jsonl [--benchmark_dir DIR ...]

The command line of ``get_score.py`` and ``mcmdpo-score``. Alt-text outputs are scored under a
protocol (:mod:`mcmdpo.eval.alt_text_scores`): ``coco`` (default), pycocoevalcap's corpus-level
BLEU-1..4, METEOR, ROUGE-L and CIDEr (:mod:`mcmdpo.eval.caption_metrics`), or ``paper``, the
metrics of the original MCM-DPO script for comparison with published numbers
(:mod:`mcmdpo.eval.paper_protocol`); ``--clip_model`` adds CLIPScore, image–alt-text and
alt-text–post (:mod:`mcmdpo.eval.clip_score`). A hallucination benchmark's outputs are scored by
its own metrics (:mod:`mcmdpo.eval.benchmarks`).

Each file's per-record scores go beside it, one file per protocol or benchmark
(:mod:`mcmdpo.eval.record_scores`); a table is printed, with each metric's unit under its name
(:mod:`mcmdpo.eval.score_tables`), and ``--plot`` draws the scores
(:mod:`mcmdpo.eval.score_plots`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mcmdpo.data.records import DataValidationError
from mcmdpo.eval.alt_text_scores import read_predictions, score_file
from mcmdpo.eval.record_scores import DERIVED_SUFFIXES
from mcmdpo.eval.score_plots import plot_scores
from mcmdpo.eval.score_tables import format_groups, format_table
from mcmdpo.files import write_text_atomically


def expand_inputs(paths: list[str]) -> list[Path]:
    """Files as given; folders give their *.jsonl files (not the files get_score writes)."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.glob("*.jsonl") if not p.name.endswith(DERIVED_SUFFIXES))
        else:
            files.append(path)
    return files


def build_parser() -> argparse.ArgumentParser:
    from mcmdpo.eval.benchmarks import BENCHMARKS

    parser = argparse.ArgumentParser(prog="get_score.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", nargs="+", required=True, help="inference outputs (JSON Lines) or folders of them")
    parser.add_argument("--protocol", choices=("coco", "paper"), default=None,
                        help="alt-text: coco = pycocoevalcap, corpus level (default); paper = the original script's metrics")
    parser.add_argument("--clip_model", default=None,
                        help="alt-text: also score CLIPScore (0-2.5) with this CLIP checkpoint: clip_score (image and "
                             "alt-text) and clip_context_score (alt-text and post)")
    parser.add_argument("--image_folder", default=None, help="with --clip_model: the folder the records' image_path is relative to")
    parser.add_argument("--benchmark", default=None, help="score a hallucination benchmark's outputs: " + ", ".join(BENCHMARKS))
    parser.add_argument("--benchmark_dir", default=None,
                        help="the benchmark's released files that scoring reads (AMBER's annotations, Object HalBench's "
                             "synonyms, MMHal-Bench's official judge script)")
    parser.add_argument("--coco_annotations", default=None,
                        help="Object HalBench: folder with COCO 2014 instances_*.json and captions_*.json")
    parser.add_argument("--judge_url", default=None,
                        help="MMHal-Bench: an OpenAI-compatible endpoint (e.g. https://api.openai.com/v1) to call as judge")
    parser.add_argument("--judge_model", default="gpt-4-0314", help="MMHal-Bench judge model (the official script's)")
    parser.add_argument("--judge_api_key_env", default="OPENAI_API_KEY", help="environment variable holding the judge's API key")
    parser.add_argument("--judge_timeout", type=float, default=60.0, help="seconds per judge request")
    parser.add_argument("--judge_retries", type=int, default=5, help="attempts per judge request")
    parser.add_argument("--summary_json", default=None, help="write the scores of every file here")
    parser.add_argument("--plot", default=None, help="draw a bar chart comparing the files (PNG)")
    parser.add_argument("--no_record_scores", action="store_true", help="do not write the per-record scores file")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def score_benchmark(args: argparse.Namespace, files: list[Path]) -> list[dict[str, Any]]:
    from mcmdpo.eval.benchmarks import BENCHMARKS, find_benchmark
    from mcmdpo.eval.benchmarks.base import ScoreOptions
    from mcmdpo.eval.benchmarks.output_scores import score_benchmark_file

    benchmark = find_benchmark(args.benchmark)
    if benchmark is None:
        raise ValueError(f"--benchmark {args.benchmark}: unknown; expected one of {', '.join(BENCHMARKS)}")
    if args.protocol:
        raise ValueError("--protocol is for alt-text outputs; a benchmark is scored by its own metrics")
    if args.clip_model or args.image_folder:
        raise ValueError("--clip_model and --image_folder are for alt-text outputs; a benchmark is scored by its own metrics")
    unused = [flag for flag, needs in given_benchmark_flags(args).items() if needs not in benchmark.score_inputs]
    if unused:
        raise ValueError(f"{', '.join(unused)}: {benchmark.name} scoring does not read "
                         + ("them" if len(unused) > 1 else "it") + f" (it reads: {', '.join(benchmark.score_inputs) or 'the output only'})")
    options = ScoreOptions(
        benchmark_dir=Path(args.benchmark_dir) if args.benchmark_dir else None,
        coco_annotations=Path(args.coco_annotations) if args.coco_annotations else None,
        judge_url=args.judge_url, judge_model=args.judge_model, judge_api_key_env=args.judge_api_key_env,
        judge_timeout=args.judge_timeout, judge_retries=args.judge_retries, show_progress=not args.quiet,
    )
    summaries = [score_benchmark_file(path, benchmark, options, not args.no_record_scores) for path in files]
    units = {name: unit for summary in summaries for name, unit in summary["units"].items()}
    print(f"{benchmark.summary}; scores in percent" + "".join(f", {name} in {unit}" for name, unit in units.items()))
    if any(summary["scores"] for summary in summaries):
        print(format_table(summaries))
    groups = format_groups(summaries)
    if groups:
        print(groups)
    return summaries


def given_benchmark_flags(args: argparse.Namespace) -> dict[str, str]:
    """The benchmark-scoring flags given on the command line, each with what it feeds."""
    parser = build_parser()
    given = {"--benchmark_dir": "benchmark_dir", "--coco_annotations": "coco_annotations", "--judge_url": "judge"}
    flags = {flag: needs for flag, needs in given.items() if getattr(args, flag.removeprefix("--")) is not None}
    for name in ("judge_model", "judge_api_key_env", "judge_timeout", "judge_retries"):
        if getattr(args, name) != parser.get_default(name):
            if args.judge_url is None:
                raise ValueError(f"--{name} needs --judge_url")
            flags[f"--{name}"] = "judge"
    return flags


def score_alt_text(args: argparse.Namespace, files: list[Path]) -> list[dict[str, Any]]:
    given = given_benchmark_flags(args)
    if given:
        raise ValueError(f"{', '.join(given)}: only with --benchmark")
    protocol = args.protocol or "coco"
    clip = None
    if args.clip_model:
        from mcmdpo.eval.clip_score import ClipMetrics

        # Every file read and every image checked before anything is scored.
        clip = ClipMetrics.prepare([read_predictions(path) for path in files], args.clip_model, args.image_folder,
                                   show_progress=not args.quiet)
    elif args.image_folder:
        raise ValueError("--image_folder: only with --clip_model (no other alt-text metric reads the images)")
    summaries = [score_file(path, protocol, not args.no_record_scores, clip) for path in files]
    units = {name: unit for summary in summaries for name, unit in summary["units"].items()}
    print(f"{protocol} protocol" + (" (the original MCM-DPO script's metrics)" if protocol == "paper" else
                                     " (pycocoevalcap, PTB tokenizer, corpus level)") + ", scores x 100"
          + "".join(f", {name} in {unit} (not x 100)" for name, unit in units.items()))
    print(format_table(summaries))
    for summary in summaries:
        if summary["num_without_reference"]:
            print(f"{summary['file']}: {summary['num_without_reference']} record(s) without a reference were not scored")
    return summaries


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    files = expand_inputs(args.file)
    if not files:
        print("error: no .jsonl file found in " + ", ".join(args.file), file=sys.stderr)
        return 2
    try:
        summaries = score_benchmark(args, files) if args.benchmark else score_alt_text(args, files)
    except (DataValidationError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for note in dict.fromkeys(note for summary in summaries for note in summary["notes"]):
        print(f"note: {note}")
    if args.summary_json:
        write_text_atomically(Path(args.summary_json), json.dumps(summaries, indent=1) + "\n")
    if args.plot and any(summary["scores"] for summary in summaries):
        plot_scores(summaries, args.plot)
    return 0


def main_exit() -> None:
    sys.exit(main())
