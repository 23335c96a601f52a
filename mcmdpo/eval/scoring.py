"""Scoring generated alt-text against references.

    python get_score.py --file OUT.jsonl [MORE.jsonl FOLDER ...] [--protocol coco|paper]
        [--summary_json PATH] [--plot PATH]

``coco`` (default): corpus-level BLEU-1..4, METEOR, ROUGE-L and CIDEr with the PTB tokenizer,
computed by pycocoevalcap exactly as COCO caption evaluation does (and SPICE when its Stanford
CoreNLP models are installed). ``paper``: the metrics of the original MCM-DPO script, for
comparison with published numbers (see :mod:`mcmdpo.eval.paper_protocol`). Every score is x 100,
except the paper protocol's edit distance: a raw token count (the summary's ``units`` says so).

Each file's per-record scores go beside it, one file per protocol (``NAME.coco.scores.jsonl``,
``NAME.paper.scores.jsonl``; a benchmark's are ``NAME.<benchmark>.scores.jsonl``); a table is
printed, with each metric's unit under its name.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcmdpo.data.reading import read_raw_records
from mcmdpo.data.records import DataValidationError, Problem
from mcmdpo.files import beside, json_lines, write_text_atomically

SCORE_SUFFIX = ".scores.jsonl"
# Files get_score writes beside the outputs (per-record scores, an LLM judge's replies), never outputs themselves.
DERIVED_SUFFIXES = (SCORE_SUFFIX, ".judge.jsonl")
COCO_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougel", "cider")
PROTOCOL_UNIT = "x 100"  # an alt-text score's unit unless its summary's ``units`` names another
BENCHMARK_UNIT = "%"  # a benchmark score's unit unless its summary's ``units`` names another


@dataclass
class Predictions:
    """The scorable records of one output file: hypotheses and references by position."""

    path: Path
    hypotheses: dict[int, str] = field(default_factory=dict)
    references: dict[int, list[str]] = field(default_factory=dict)
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    without_reference: list[Any] = field(default_factory=list)  # positions of records with no `chosen`


def read_predictions(path: str | Path) -> Predictions:
    """Records with a ``response`` and a ``chosen`` (a string or a list of strings). Records with
    no reference are counted, not scored; anything else malformed is an error naming the line."""
    path = Path(path)
    raw, problems, _ = read_raw_records(path)
    predictions = Predictions(path)
    for location, record in raw:
        where = dict(file=str(path), location=location, idx=record.get("idx") if isinstance(record, dict) else None)
        if not isinstance(record, dict):
            problems.append(Problem(message="a record must be a JSON object", **where))
            continue
        response = record.get("response")
        if not isinstance(response, str):
            problems.append(Problem(message="missing or not a string (is this an inference output?)", field="response", **where))
            continue
        chosen = record.get("chosen")
        references = [chosen] if isinstance(chosen, str) else chosen
        if references is None or references == [] or references == [""]:
            predictions.without_reference.append(location.number)
            continue
        if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
            problems.append(Problem(message="must be a string or a list of strings", field="chosen", **where))
            continue
        predictions.hypotheses[location.number] = response
        predictions.references[location.number] = references
        predictions.records[location.number] = record
    if problems:
        raise DataValidationError(problems)
    if not predictions.hypotheses:
        raise DataValidationError([Problem(str(path), "no record with both a response and a reference")])
    return predictions


def spice_available() -> bool:
    """SPICE needs Stanford CoreNLP 3.6.0 and its models next to pycocoevalcap's SPICE jar."""
    from pycocoevalcap.spice import spice

    lib = Path(spice.__file__).parent / "lib"
    return all((lib / name).is_file() for name in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"))


def coco_scores(
    hypotheses: dict[Any, str], references: dict[Any, list[str]], use_spice: bool | None = None
) -> tuple[dict[str, float], dict[Any, dict[str, float]]]:
    """Corpus scores and per-record scores (x 100), computed as COCOEvalCap computes them: PTB
    tokenisation of references and hypotheses, then each pycocoevalcap scorer on the whole set."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({key: [{"caption": ref} for ref in refs] for key, refs in references.items()})
    res = tokenizer.tokenize({key: [{"caption": hypotheses[key]}] for key in references})
    scorers: list[tuple[Any, tuple[str, ...]]] = [
        (Bleu(4), ("bleu1", "bleu2", "bleu3", "bleu4")),
        (Meteor(), ("meteor",)),
        (Rouge(), ("rougel",)),
        (Cider(), ("cider",)),
    ]
    if use_spice if use_spice is not None else spice_available():
        from pycocoevalcap.spice.spice import Spice

        scorers.append((Spice(), ("spice",)))
    keys = list(gts)
    corpus: dict[str, float] = {}
    per_record: dict[Any, dict[str, float]] = {key: {} for key in keys}
    for scorer, names in scorers:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints its BLEU internals
            score, scores = scorer.compute_score(gts, res)
        if len(names) == 1:
            score, scores = [score], [scores]
        for name, value, values in zip(names, score, scores):
            corpus[name] = 100 * float(value)
            for key, record_value in zip(keys, values):
                per_record[key][name] = 100 * float(record_value["All"]["f"] if isinstance(record_value, dict) else record_value)
    return corpus, per_record


def score_file(path: Path, protocol: str, write_record_scores: bool = True) -> dict[str, Any]:
    """Score one output file; return its summary (scores, counts, notes)."""
    predictions = read_predictions(path)
    notes: list[str] = []
    units: dict[str, str] = {}  # metrics not x 100, with their unit
    if protocol == "paper":
        from mcmdpo.eval.paper_protocol import UNITS, paper_scores

        corpus, per_record, notes = paper_scores(predictions.hypotheses, predictions.references)
        units = {name: unit for name, unit in UNITS.items() if name in corpus}
    else:
        corpus, per_record = coco_scores(predictions.hypotheses, predictions.references)
        if "spice" not in corpus:
            notes.append("SPICE skipped: Stanford CoreNLP 3.6.0 models are not installed beside pycocoevalcap's SPICE jar")
    if write_record_scores:
        write_record_scores_file(predictions, per_record, protocol)
    return {
        "file": str(path),
        "protocol": protocol,
        "scores": corpus,
        "units": units,
        "num_scored": len(predictions.hypotheses),
        "num_without_reference": len(predictions.without_reference),
        "notes": notes,
    }


def record_scores_path(path: Path, protocol: str) -> Path:
    """``NAME.<protocol>.scores.jsonl`` beside the output: the two protocols never share a file."""
    return beside(path, f".{protocol}{SCORE_SUFFIX}")


def write_record_scores_file(predictions: Predictions, per_record: dict[int, dict[str, float]], protocol: str) -> Path:
    """Beside the input, never over it, one file per protocol, written atomically."""
    rows = []
    for position, scores in per_record.items():
        record = predictions.records[position]
        rows.append({"position": position, "idx": record.get("idx"), "response": predictions.hypotheses[position],
                     "references": predictions.references[position], **scores})
    return write_text_atomically(record_scores_path(predictions.path, protocol), json_lines(rows))


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


def metric_units(summaries: list[dict[str, Any]]) -> dict[str, str]:
    """Every metric of the summaries, in order, with its unit: the one its summary's ``units``
    names, else x 100 (alt-text protocols) or percent (benchmarks)."""
    units: dict[str, str] = {}
    for summary in summaries:
        default = PROTOCOL_UNIT if "protocol" in summary else BENCHMARK_UNIT
        for name in summary["scores"]:
            units.setdefault(name, summary.get("units", {}).get(name, default))
    return units


def format_table(summaries: list[dict[str, Any]]) -> str:
    """One row per file, one column per metric, each metric's unit on the line under its name."""
    units = metric_units(summaries)
    metrics = list(units)
    names = [Path(summary["file"]).name for summary in summaries]
    width = max(len("file"), *(len(n) for n in names))
    widths = [max(9, len(m), len(units[m])) for m in metrics]
    lines = [f"{'file':<{width}}  " + "  ".join(f"{m:>{w}}" for m, w in zip(metrics, widths)) + "  records",
             f"{'':<{width}}  " + "  ".join(f"{units[m]:>{w}}" for m, w in zip(metrics, widths))]
    for name, summary in zip(names, summaries):
        cells = "  ".join(
            f"{summary['scores'][m]:{w}.2f}" if m in summary["scores"] else f"{'-':>{w}}" for m, w in zip(metrics, widths)
        )
        lines.append(f"{name:<{width}}  {cells}  {summary['num_scored']:>7}")
    return "\n".join(lines)


def score_figure(summaries: list[dict[str, Any]], title: str = "") -> Any:
    """A ``matplotlib.figure.Figure`` with one small panel per metric, each on its own y axis
    labelled with the metric's unit (CIDEr near 600 leaves BLEU near 75 readable beside it), one
    bar per file in the same colour in every panel, and one legend naming the files. A metric a
    file lacks gets no bar (its height is NaN), never a 0."""
    from matplotlib.figure import Figure

    units = metric_units(summaries)
    metrics = list(units)
    columns = min(4, len(metrics))
    rows = -(-len(metrics) // columns)
    figure = Figure(figsize=(max(3.0, 0.45 * len(summaries) + 1.6) * columns, 2.6 * rows + 0.9), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    labels = [Path(summary["file"]).stem for summary in summaries]
    for axis, metric in zip(axes, metrics):
        values = [float(summary["scores"].get(metric, float("nan"))) for summary in summaries]
        bars = axis.bar(range(len(summaries)), values, 0.8, color=[f"C{i % 10}" for i in range(len(summaries))])
        axis.bar_label(bars, labels=["" if math.isnan(value) else f"{value:.4g}" for value in values], fontsize=7, padding=1)
        axis.set_title(metric, fontsize=10)
        axis.set_ylabel(units[metric], fontsize=8)
        axis.set_xticks([])
        axis.tick_params(axis="y", labelsize=7)
        axis.grid(axis="y", alpha=0.3)
        axis.margins(y=0.15)  # room for the value labels
    for axis in axes[len(metrics):]:
        figure.delaxes(axis)
    handles = [axes[0].patches[i] for i in range(len(summaries))]
    figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize=8)
    figure.suptitle(title or (f"{summaries[0]['protocol']} protocol" if "protocol" in summaries[0] else summaries[0]["benchmark"]))
    return figure


def plot_scores(summaries: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Save :func:`score_figure` as a PNG."""
    score_figure(summaries, title).savefig(path, dpi=120)
    return Path(path)


def build_parser() -> argparse.ArgumentParser:
    from mcmdpo.eval.benchmarks import BENCHMARKS

    parser = argparse.ArgumentParser(prog="get_score.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", nargs="+", required=True, help="inference outputs (JSON Lines) or folders of them")
    parser.add_argument("--protocol", choices=("coco", "paper"), default=None,
                        help="alt-text: coco = pycocoevalcap, corpus level (default); paper = the original script's metrics")
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
    from mcmdpo.eval.benchmarks.scoring import format_groups, score_benchmark_file

    benchmark = find_benchmark(args.benchmark)
    if benchmark is None:
        raise ValueError(f"--benchmark {args.benchmark}: unknown; expected one of {', '.join(BENCHMARKS)}")
    if args.protocol:
        raise ValueError("--protocol is for alt-text outputs; a benchmark is scored by its own metrics")
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
    summaries = [score_file(path, protocol, not args.no_record_scores) for path in files]
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
