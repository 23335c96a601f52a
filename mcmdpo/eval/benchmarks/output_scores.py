"""Scoring one benchmark output file: check it whole, score it, write its per-record scores
beside it (:mod:`mcmdpo.eval.record_scores`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcmdpo.data.records import DataValidationError, Problem
from mcmdpo.eval.benchmarks.base import Benchmark, ScoreOptions, read_outputs
from mcmdpo.eval.record_scores import save_record_scores


def score_benchmark_file(path: Path, benchmark: Benchmark, options: ScoreOptions, write_record_scores: bool = True) -> dict[str, Any]:
    """The summary of one output file: scores (and per group), counts, units and notes. Every
    problem of the file (and of the options it needs) is reported before anything is scored."""
    records = read_outputs(path)
    problems = benchmark.check(records, options)
    failing = {problem.location for problem in problems}
    fields = {problem.field for problem in problems}
    if len(records) > 1 and failing == {location for location, _ in records} and len(fields) == 1:
        # Every record fails the same way: most likely another kind of output, so one line says it.
        problems = [Problem(str(path), f"no record has a valid '{fields.pop()}' ({problems[0].location}: {problems[0].message}): "
                                       f"is this an output of {benchmark.name}?")]
    if problems:
        raise DataValidationError(problems)
    result = benchmark.score(records, options)
    if write_record_scores and result.per_record:  # a judge-less MMHal run scores nothing: an earlier file stays
        save_record_scores(path, benchmark.name, result.per_record)
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
