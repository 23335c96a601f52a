"""The sample stage: ``--num_candidates`` alt-texts per record from ``--sampler_model``, written by
the inference code (:func:`mcmdpo.eval.generation.generate_batch`: the checkpoint's recorded image
protocol and conversation template, the prompt exactly as training tokenises it).

**Seeded per record.** Each record's candidates are one ``generate`` call on N copies of its
prompt and image, under ``torch.manual_seed(record_seed(seed, key))`` inside a forked random
state: they depend on the seed, the record and the model only, never on which records ran before
it, on a resume or on the sharding.

**Sharded and resumable.** Process r of w (torchrun: RANK, WORLD_SIZE) takes the records at
positions r, r + w, ... and appends each one's line, synced, to
``OUT/sample.parts/shard-r-of-w.jsonl``; a rerun skips every record already in any part written
for the same inputs (whatever the number of processes then), so a killed run loses at most the
records in flight. Once all have finished, the first process merges the parts in record order into
``OUT/sample.jsonl`` and removes them."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mcmdpo.build.collect import STAGE as COLLECT
from mcmdpo.build.correct import STAGE as CORRECT
from mcmdpo.build.fingerprints import checkpoint_fingerprint
from mcmdpo.build.models import device_of_process, dtype_for, load_generator
from mcmdpo.build.options import BuildOptions
from mcmdpo.build.records import open_image
from mcmdpo.build.report import write_section
from mcmdpo.build.sharding import barrier, process_rank
from mcmdpo.build.stage_files import (
    HEADER_KEY,
    UPSTREAM_KEY,
    BuildError,
    StageWriter,
    fingerprint,
    read_chain,
    read_stage,
    stage_path,
    write_complete,
)
from mcmdpo.eval.generation import GenerationSettings, generate_batch

STAGE = "sample"
VERSION = 1
PARTS = "sample.parts"


def record_seed(seed: int, key: str) -> int:
    """The seed of one record's candidates: from the run's seed and the record's key alone."""
    return int(hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()[:15], 16)


def sample_inputs(options: BuildOptions, upstream_sha256: str) -> dict[str, Any]:
    return {
        "version": VERSION,
        UPSTREAM_KEY: upstream_sha256,
        "sampler": options.sampler_model,
        "sampler_files": checkpoint_fingerprint(options.sampler_model),
        "num_candidates": options.num_candidates,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "max_new_tokens": options.max_new_tokens,
        "seed": options.seed,
        "image_aspect_ratio": options.image_aspect_ratio,
        "conversation_template": options.conversation_template,
        "dtype": dtype_for(device_of_process(), options.dtype),
    }


def settings_of(options: BuildOptions) -> GenerationSettings:
    return GenerationSettings(temperature=options.temperature, num_beams=1, max_new_tokens=options.max_new_tokens,
                              top_p=options.top_p)


def sample_record(model: Any, checkpoint: Any, question: str, image: Any, key: str, options: BuildOptions) -> list[str]:
    """``--num_candidates`` candidates for one record, seeded by the record."""
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(record_seed(options.seed, key))
        count = options.num_candidates
        return generate_batch(model, checkpoint.processor, checkpoint.family.inputs, [question] * count, [image] * count,
                              settings_of(options))


def shard_path(output_dir: str | Path, rank: int, world_size: int) -> Path:
    return Path(output_dir) / PARTS / f"shard-{rank}-of-{world_size}.jsonl"


def _read_without_cutting(path: Path) -> list[dict[str, Any]]:
    """A part's whole lines, read without touching the file (another process may be writing it);
    nothing when a line is damaged."""
    data = path.read_bytes()
    lines = []
    for raw in data[: data.rfind(b"\n") + 1].splitlines():
        try:
            lines.append(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return []
    return lines


def sampled_in_parts(output_dir: str | Path, sample_fingerprint: str) -> dict[str, dict[str, Any]]:
    """Every record already sampled for these inputs, in any part, by key."""
    done: dict[str, dict[str, Any]] = {}
    for path in sorted((Path(output_dir) / PARTS).glob("shard-*.jsonl")):
        lines = _read_without_cutting(path)
        if not lines or lines[0].get(HEADER_KEY) != STAGE or lines[0].get("inputs", {}).get("sample") != sample_fingerprint:
            continue
        for line in lines[1:]:
            if "candidates" in line:
                done.setdefault(line["key"], line)
    return done


def _complete_output(output_dir: Path, inputs: dict[str, Any]) -> list[dict[str, Any]] | None:
    try:
        contents = read_stage(output_dir, STAGE)
    except BuildError:
        return None
    return contents.records if fingerprint(contents.inputs) == fingerprint(inputs) else None


def _upstream(options: BuildOptions) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    upstream = read_chain(options.output_dir, (COLLECT, CORRECT))[CORRECT]
    return upstream.records, sample_inputs(options, upstream.sha256)


def sample_shard(options: BuildOptions, rank: int = 0, world_size: int = 1) -> int:
    """Sample this process's share of the records not sampled yet; how many it sampled."""
    output_dir = Path(options.output_dir)
    records, inputs = _upstream(options)
    if _complete_output(output_dir, inputs) is not None:
        return 0
    stage_path(output_dir, STAGE).unlink(missing_ok=True)  # sampled for other inputs: no later stage may read it now
    sample_fingerprint = fingerprint(inputs)
    done = sampled_in_parts(output_dir, sample_fingerprint)
    mine = [record for position, record in enumerate(records) if position % world_size == rank and record["key"] not in done]
    writer = StageWriter(shard_path(output_dir, rank, world_size), STAGE, {"sample": sample_fingerprint, "shard": [rank, world_size]})
    if not mine:
        writer.finish()
        return 0
    checkpoint, model = load_generator(options.sampler_model, options.dtype, options.image_aspect_ratio,
                                       options.conversation_template)
    image_folder = read_chain(output_dir, (COLLECT,))[COLLECT].inputs["image_folder"]
    shown = f"sampling candidates ({rank + 1}/{world_size})" if world_size > 1 else "sampling candidates"
    with tqdm(total=len(mine), desc=shown, disable=options.quiet) as progress:
        for record in mine:
            image = open_image(record, image_folder, output_dir)
            candidates = sample_record(model, checkpoint, record["question"], image, record["key"], options)
            writer.append([{**record, "candidates": candidates}])
            progress.update(1)
    writer.finish()
    return len(mine)


def merge_shards(options: BuildOptions) -> dict[str, Any]:
    """Merge the parts in record order into ``OUT/sample.jsonl`` (once every record is there) and
    remove them; the stage's report section."""
    output_dir = Path(options.output_dir)
    records, inputs = _upstream(options)
    lines = _complete_output(output_dir, inputs)
    up_to_date = lines is not None
    if lines is None:
        done = sampled_in_parts(output_dir, fingerprint(inputs))
        missing = [record["key"] for record in records if record["key"] not in done]
        if missing:
            raise BuildError(f"{len(missing)} record(s) not sampled yet (e.g. {', '.join(missing[:5])}): run the sample stage "
                             "again, it continues where it stopped")
        lines = [done[record["key"]] for record in records]
        write_complete(stage_path(output_dir, STAGE), STAGE, inputs, lines)
    shutil.rmtree(output_dir / PARTS, ignore_errors=True)
    return {"status": "complete", "fingerprint": fingerprint(inputs), "up_to_date": up_to_date, "records": len(lines),
            "num_candidates": options.num_candidates, "sampler": options.sampler_model, "seed": options.seed,
            "empty_candidates": sum(not text.strip() for line in lines for text in line["candidates"]),
            "distinct_candidates": sum(len(set(line["candidates"])) for line in lines)}


def run_sample(options: BuildOptions) -> dict[str, Any] | None:
    """The sample stage on every process of the launch (one without torchrun): each samples its
    share, then the first merges; the report section (None on the other processes)."""
    started = time.monotonic()
    rank, world_size = process_rank()
    output_dir = Path(options.output_dir)
    if rank == 0:
        _, inputs = _upstream(options)
        redone = _complete_output(output_dir, inputs) is None and not sampled_in_parts(output_dir, fingerprint(inputs))
        write_section(output_dir, STAGE, {"status": "running", "fingerprint": fingerprint(inputs)}, redone=redone)
    sample_shard(options, rank, world_size)
    barrier()
    if rank != 0:
        return None
    section = merge_shards(options)
    section.update(processes=world_size, seconds=round(time.monotonic() - started, 3))
    write_section(output_dir, STAGE, section)
    return section
