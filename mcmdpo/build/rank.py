"""The rank stage: every record's candidates scored by the chosen ranker
(:mod:`mcmdpo.build.rankers`). ``OUT/rank.jsonl``: the sampled record plus ``scores`` (one per
candidate, higher is better; None where the ranker could not score one), ``reference_score``
(the record's own alt-text, where the ranker scores it) and ``ranking`` (the ranker's details:
its metrics, the judge's comparisons and replies, the annotations counted)."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

from mcmdpo.build.collect import STAGE as COLLECT
from mcmdpo.build.correct import STAGE as CORRECT
from mcmdpo.build.judging import add_counts
from mcmdpo.build.options import BuildOptions
from mcmdpo.build.rankers import RANKERS, Ranker
from mcmdpo.build.sample import STAGE as SAMPLE
from mcmdpo.build.stage_files import UPSTREAM_KEY, read_chain
from mcmdpo.build.stage_run import StageRun

STAGE = "rank"
VERSION = 1


def make_ranker(options: BuildOptions) -> tuple[Ranker, list[dict[str, Any]], str]:
    """The ranker, the sampled records and the rank stage's upstream digest."""
    chain = read_chain(options.output_dir, (COLLECT, CORRECT, SAMPLE))
    ranker = RANKERS[options.ranker](options, chain[COLLECT].inputs["image_folder"])
    return ranker, chain[SAMPLE].records, chain[SAMPLE].sha256


def rank_inputs(ranker: Ranker, upstream_sha256: str) -> dict[str, Any]:
    return {"version": VERSION, UPSTREAM_KEY: upstream_sha256, "ranker": ranker.name, **ranker.inputs(),
            "provenance": ranker.provenance()}


def run_rank(options: BuildOptions) -> dict[str, Any]:
    ranker, records, upstream_sha256 = make_ranker(options)
    run = StageRun(options.output_dir, STAGE, rank_inputs(ranker, upstream_sha256), [record["key"] for record in records])
    pending = records[len(run.done):]
    if pending and ranker.whole_pool:
        # Scores that depend on the pool are computed on all records, and the missing lines written.
        scored = ranker.score(records)[len(run.done):]
        run.writer.append(_line(record, found) for record, found in zip(pending, scored))
    elif pending:
        with tqdm(total=len(records), initial=len(run.done), desc=f"ranking ({ranker.name})", disable=options.quiet) as progress:
            for start in range(0, len(pending), ranker.chunk):
                batch = pending[start:start + ranker.chunk]
                run.writer.append(_line(record, found) for record, found in zip(batch, ranker.score(batch)))
                progress.update(len(batch))
    return run.finish(rank_section(run.done, ranker.name))


def _line(record: dict[str, Any], scored: dict[str, Any]) -> dict[str, Any]:
    return {**record, "scores": scored["scores"], "reference_score": scored["reference_score"], "ranking": scored["details"]}


def rank_section(lines: list[dict[str, Any]], ranker: str) -> dict[str, Any]:
    counts: dict[str, int] = {}
    if ranker == "judge":
        counts["comparisons_asked"] = sum(line["ranking"]["asked"] for line in lines)
        for line in lines:
            add_counts(counts, line["ranking"]["counts"].items())
    if ranker == "human":
        counts["answers"] = sum(line["ranking"]["answers"] for line in lines)
        counts["stale_answers"] = sum(line["ranking"]["stale_answers"] for line in lines)
        counts["unranked_candidates"] = sum(score is None for line in lines for score in line["scores"])
    return {"status": "complete", "ranker": ranker, "records": len(lines), "counts": counts}
