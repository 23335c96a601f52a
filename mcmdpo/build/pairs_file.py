"""The pair stage: each ranked record paired (:mod:`mcmdpo.build.pair`) or skipped with its reason,
one line per record in ``OUT/pair.jsonl``, then ``OUT/pairs.json``, the training file, written
atomically. It holds nothing of the run itself (no output folder, no time), so the same inputs,
models and seed give the same bytes in any folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcmdpo.build.collect import STAGE as COLLECT
from mcmdpo.build.correct import STAGE as CORRECT
from mcmdpo.build.options import BuildOptions
from mcmdpo.build.pair import SKIP_REASONS, pairs_json, pick, preference_record
from mcmdpo.build.rank import STAGE as RANK
from mcmdpo.build.records import image_ref
from mcmdpo.build.report import grouped
from mcmdpo.build.sample import STAGE as SAMPLE
from mcmdpo.build.stage_files import UPSTREAM_KEY, StageContents, read_chain
from mcmdpo.build.stage_run import StageRun
from mcmdpo.files import write_text_atomically

STAGE = "pair"
VERSION = 1
PAIRS_FILE = "pairs.json"
SAMPLER_SETTINGS = ("num_candidates", "temperature", "top_p", "max_new_tokens", "seed")


def pairs_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / PAIRS_FILE


def shared_provenance(chain: dict[str, StageContents], pairing: str) -> dict[str, Any]:
    """What every pair of a build records: how its candidates were written and ranked (models as
    the user named them)."""
    sampled = chain[SAMPLE].inputs
    return {
        "pairing": pairing,
        "ranker": chain[RANK].inputs["provenance"],
        "sampler": {"checkpoint": sampled["sampler"], **{name: sampled[name] for name in SAMPLER_SETTINGS}},
        "corrector": chain[CORRECT].inputs["corrector"],
    }


def run_pair(options: BuildOptions) -> dict[str, Any]:
    output_dir = Path(options.output_dir)
    chain = read_chain(output_dir, (COLLECT, CORRECT, SAMPLE, RANK))
    records = chain[RANK].records
    inputs = {"version": VERSION, UPSTREAM_KEY: chain[RANK].sha256, "pairing": options.pairing, "min_margin": options.min_margin,
              "length_balance": options.length_balance}
    run = StageRun(output_dir, STAGE, inputs, [record["key"] for record in records])
    provenance = shared_provenance(chain, options.pairing)
    for record in records[len(run.done):]:
        found, skipped = pick(record, options.pairing, options.min_margin, options.length_balance)
        line: dict[str, Any] = {"key": record["key"], "id": record["id"]}
        if found is None:
            run.writer.append([{**line, "skipped": skipped[0], "detail": skipped[1]}])
            continue
        embedded = image_ref(record, output_dir).resolve(None).read_bytes() if "stored" in record["image"] else None
        run.writer.append([{**line, "pair": preference_record(record, found, provenance, embedded)}])
    pairs = [line["pair"] for line in run.done if "pair" in line]
    write_text_atomically(pairs_path(output_dir), pairs_json(pairs))
    skipped = grouped((line["skipped"], line["id"], line.get("detail")) for line in run.done if "skipped" in line)
    return run.finish({"status": "complete", "records": len(run.done), "pairs": len(pairs), "pairs_file": PAIRS_FILE,
                       "pairing": options.pairing,
                       "skipped": {reason: skipped[reason] for reason in SKIP_REASONS if reason in skipped}})
