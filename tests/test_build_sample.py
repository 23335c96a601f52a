"""The builder's sample stage: candidates seeded by (seed, record) alone, so a rerun in another
folder, another record order (shards run in reverse) and a resume give the same ones; a cut part
resumed without sampling a record twice; changed settings redo the stage and make the later files
stale; every model family samples; and, in the slow tier, SIGKILL mid-stage then a rerun, and
torchrun with two processes, each giving every record exactly once with the same candidates."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from build_support import copy_stages, prepared, quick_options, read_stage_lines, sft_records, write_json
from conftest import REPO_ROOT
from mcmdpo.build import BuildError, build, run_pair, run_rank, run_sample
from mcmdpo.build.sample import PARTS, merge_shards, sample_inputs, sample_shard, shard_path
from mcmdpo.build.stage_files import fingerprint, read_stage
from mcmdpo.eval.generation import GenerationSettings, generate_batch
from mcmdpo.model import ARCHITECTURES
from mcmdpo.model.loading import load_checkpoint
from mcmdpo.tiny import TinyModelSpec, write_tiny_checkpoint

# Large image-token counts (as in test_families.py), and Qwen3-VL beside Qwen2.5-VL: the slow tier.
SLOW_FAMILIES = ("gemma3", "smolvlm", "llava_onevision", "qwen3_vl", "qwen2_5_vl")


def sampled(folder: Path) -> list[dict]:
    return read_stage_lines(folder / "sample.jsonl")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, tiny_checkpoint, synthetic_dir) -> Path:
    return prepared(tmp_path_factory, tiny_checkpoint, synthetic_dir, count=4)


@pytest.fixture(scope="module")
def reference_run(upstream, tiny_checkpoint, synthetic_dir, tmp_path_factory) -> Path:
    """The sample stage run once, uninterrupted, one process."""
    folder = copy_stages(upstream, tmp_path_factory.mktemp("reference_run"), "collect", "correct")
    run_sample(options_for(folder, tiny_checkpoint))
    return folder


def options_for(folder: Path, tiny_checkpoint: Path, **settings) -> object:
    """Sampling in a folder whose collect and correct stages are done."""
    return quick_options(None, None, folder, tiny_checkpoint, **{"stages": ["sample"], **settings})


def test_candidates_depend_on_the_seed_and_the_record_only(reference_run, upstream, tiny_checkpoint, synthetic_dir, tmp_path):
    lines = sampled(reference_run)
    assert [line["key"] for line in lines] == [line["key"] for line in read_stage_lines(upstream / "correct.jsonl")]
    assert all(len(line["candidates"]) == 3 and all(isinstance(c, str) for c in line["candidates"]) for line in lines)
    assert any(len(set(line["candidates"])) > 1 for line in lines)  # sampled, not greedy
    assert not (reference_run / PARTS).exists()

    # The documented scheme, computed here: one generate call on 3 copies, under a seed from (seed, key).
    checkpoint = load_checkpoint(tiny_checkpoint, padding_side="left")
    record = lines[2]
    from PIL import Image

    image = Image.open(synthetic_dir / "image" / record["image"]["path"]).convert("RGB")
    torch.manual_seed(int(hashlib.sha256(f"0\0{record['key']}".encode()).hexdigest()[:15], 16))
    expected = generate_batch(checkpoint.model.eval(), checkpoint.processor, checkpoint.family.inputs, [record["question"]] * 3,
                              [image] * 3, GenerationSettings(temperature=1.0, num_beams=1, max_new_tokens=6, top_p=0.9))
    assert record["candidates"] == expected

    # Another folder, the records in another order (shard 1 of 2 first, then shard 0), then merged:
    # the same file, byte for byte.
    other = copy_stages(upstream, tmp_path / "sharded", "collect", "correct")
    options = options_for(other, tiny_checkpoint)
    assert sample_shard(options, rank=1, world_size=2) == 2
    assert [line["key"] for line in read_stage_lines(shard_path(other, 1, 2))] == [line["key"] for line in lines[1::2]]
    assert sample_shard(options, rank=0, world_size=2) == 2
    section = merge_shards(options)
    assert (other / "sample.jsonl").read_bytes() == (reference_run / "sample.jsonl").read_bytes()
    assert section["records"] == 4 and not (other / PARTS).exists()

    # Another seed: other candidates.
    reseeded = copy_stages(upstream, tmp_path / "reseeded", "collect", "correct")
    run_sample(options_for(reseeded, tiny_checkpoint, seed=1))
    assert all(a["candidates"] != b["candidates"] for a, b in zip(sampled(reseeded), lines))


def test_a_cut_part_resumes_without_sampling_a_record_twice(reference_run, upstream, tiny_checkpoint, synthetic_dir, tmp_path):
    folder = copy_stages(upstream, tmp_path / "cut", "collect", "correct")
    options = options_for(folder, tiny_checkpoint)
    inputs = sample_inputs(options, read_stage(folder, "correct").sha256)
    done = [line | {"marker": "sampled before the interruption"} for line in sampled(reference_run)[:2]]
    header = {"mcmdpo_build_stage": "sample", "fingerprint": fingerprint({"sample": fingerprint(inputs), "shard": [0, 1]}),
              "inputs": {"sample": fingerprint(inputs), "shard": [0, 1]}}
    part = shard_path(folder, 0, 1)
    part.parent.mkdir()
    third = json.dumps(sampled(reference_run)[2])
    part.write_text("".join(json.dumps(line) + "\n" for line in [header, *done]) + third[: len(third) // 2])
    section = run_sample(options)
    lines = sampled(folder)
    assert [line.get("marker") for line in lines] == ["sampled before the interruption"] * 2 + [None] * 2
    assert [{k: v for k, v in line.items() if k != "marker"} for line in lines] == sampled(reference_run)
    assert section["records"] == 4 and not section["up_to_date"]
    assert run_sample(options)["up_to_date"]


def test_changed_settings_redo_the_stage_and_later_files_become_stale(reference_run, upstream, tiny_checkpoint, synthetic_dir,
                                                                      tmp_path):
    folder = copy_stages(reference_run, tmp_path / "changed", "collect", "correct", "sample")
    options = options_for(folder, tiny_checkpoint, stages=["sample", "rank", "pair"])
    build(options, echo=None)
    assert run_sample(options)["up_to_date"]
    fewer = options_for(folder, tiny_checkpoint, num_candidates=2)
    section = run_sample(fewer)
    assert not section["up_to_date"] and all(len(line["candidates"]) == 2 for line in sampled(folder))
    with pytest.raises(BuildError, match="rank.jsonl was built from another sample.jsonl"):
        run_pair(options)
    run_rank(options)
    assert run_pair(options)["records"] == 4


@pytest.mark.parametrize("architecture", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_FAMILIES else name
                                          for name in ARCHITECTURES])
def test_every_family_samples_the_same_candidates_twice(architecture, synthetic_dir, tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / "model", TinyModelSpec(architecture=architecture))
    data = write_json(tmp_path / "sft.json", sft_records(synthetic_dir, 2))
    runs = []
    for name in ("first", "second"):
        options = quick_options(data, synthetic_dir / "image", tmp_path / name, checkpoint, num_candidates=2, max_new_tokens=4,
                                stages=["collect", "correct", "sample"])
        build(options, echo=None)
        runs.append(sampled(tmp_path / name))
    assert runs[0] == runs[1] and len(runs[0]) == 2
    assert all(len(line["candidates"]) == 2 for line in runs[0])


# ---------------------------------------------------------------- processes (slow tier)

def build_command(folder: Path, tiny_checkpoint: Path) -> list[str]:
    return ["--output_dir", str(folder), "--sampler_model", str(tiny_checkpoint), "--num_candidates", "3", "--max_new_tokens", "6",
            "--quiet"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_while_sampling_then_a_rerun_gives_every_record_once(tmp_path_factory, tiny_checkpoint, synthetic_dir, tmp_path):
    upstream = prepared(tmp_path_factory, tiny_checkpoint, synthetic_dir, count=12)
    killed = copy_stages(upstream, tmp_path / "killed", "collect", "correct")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "mcmdpo.build", *build_command(killed, tiny_checkpoint), "--stages", "sample"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    part = shard_path(killed, 0, 1)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if part.exists() and part.read_bytes().count(b"\n") >= 4:  # the header and at least 3 records
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed:\n" + process.stdout.read()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    before = part.read_bytes().count(b"\n") - 1
    assert 3 <= before < 12 and not (killed / "sample.jsonl").exists()

    run_sample(options_for(killed, tiny_checkpoint))
    lines = sampled(killed)
    keys = [line["key"] for line in lines]
    assert keys == [line["key"] for line in read_stage_lines(upstream / "correct.jsonl")] and len(set(keys)) == 12

    whole = copy_stages(upstream, tmp_path / "whole", "collect", "correct")
    run_sample(options_for(whole, tiny_checkpoint))
    assert [line["candidates"] for line in lines] == [line["candidates"] for line in sampled(whole)]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_torchrun_shares_sampling_out_and_merges_in_record_order(reference_run, upstream, tiny_checkpoint, synthetic_dir, tmp_path):
    """Every stage under torchrun: the first process collects and corrects while the other waits,
    both sample, the first merges, ranks and pairs."""
    folder = tmp_path / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    stages = ["--data_path", str(upstream.parent / "sft.json"), "--image_folder", str(synthetic_dir / "image"),
              "--stages", "collect", "correct", "sample", "rank", "pair"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "mcmdpo.build",
               *build_command(folder, tiny_checkpoint), *stages]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=500)
    finally:
        if process.poll() is None:  # the launcher and both workers: their own process group
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, output[-5000:]
    assert (folder / "collect.jsonl").read_bytes() == (upstream / "collect.jsonl").read_bytes()
    assert (folder / "sample.jsonl").read_bytes() == (reference_run / "sample.jsonl").read_bytes()
    report = json.loads((folder / "build_report.json").read_text())
    assert list(report) == ["collect", "correct", "sample", "rank", "pair"]
    assert report["sample"]["processes"] == 2 and report["sample"]["records"] == 4
    assert output.count("sample (done)") == 1 and output.count("collect (done)") == 1  # the first process reports
    assert (folder / "pairs.json").exists() and not (folder / "sample.parts").exists()
