"""Scoring one benchmark output file: check it whole, score it, write its per-record scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mcmdpo.data.records import DataValidationError
from mcmdpo.eval.benchmarks.base import Benchmark, ScoreOptions, read_outputs


def record_scores_path(path: Path, benchmark: str) -> Path:
    """``NAME.<benchmark>.scores.jsonl`` beside the output."""
    return path.with_name(path.name.removesuffix(".jsonl").removesuffix(".json") + f".{benchmark}.scores.jsonl")


def write_jsonl_atomically(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Written whole to a temporary file, then renamed: a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    tmp.replace(path)
    return path


def score_benchmark_file(path: Path, benchmark: Benchmark, options: ScoreOptions, write_record_scores: bool = True) -> dict[str, Any]:
    """The summary of one output file: scores (and per group), counts, units and notes. Every
    problem of the file (and of the options it needs) is reported before anything is scored."""
    records = read_outputs(path, ())
    problems = benchmark.check(records, options)
    if problems:
        raise DataValidationError(problems)
    result = benchmark.score(records, options)
    if write_record_scores:
        write_jsonl_atomically(record_scores_path(path, benchmark.name), result.per_record)
    return {
        "file": str(path),
        "benchmark": benchmark.name,
        "scores": result.scores,
        "groups": result.groups,
        "counts": result.counts,
        "units": result.units,
        "notes": result.notes,
        "num_scored": len(records),
    }


def format_groups(summaries: list[dict[str, Any]]) -> str:
    """Per-group scores (POPE's splits, AMBER's dimensions...): one line per file and group."""
    lines = []
    for summary in summaries:
        for group, scores in summary.get("groups", {}).items():
            cells = "  ".join(f"{name} {value:.2f}" for name, value in scores.items())
            lines.append(f"{Path(summary['file']).name}  [{group}]  {cells}")
    return "\n".join(lines)
