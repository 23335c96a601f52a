"""The benchmarks keep working: the prepared GPU check runs the same code on a tiny shape on a
CPU; the builder's benchmark runs at tiny settings and prints its tables and writes its JSON; the
generation FLOP count that benchmark scales by."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT


@pytest.mark.slow  # benchmarks/gpu_check.sh in a process of its own
def test_gpu_check_runs_on_a_cpu_and_prints_its_table():
    result = subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "CPU: a tiny shape" in out  # says it is not the real check
    rows = [line for line in out.splitlines() if line.startswith("| sdpa |")]
    assert [row.split("|")[2].strip() for row in rows] == ["plain", "packed"]
    # The packed step runs fewer tokens for the same scored ones, and its loss is the plain step's.
    run_plain, scored_plain = (int(x) for x in rows[0].split("|")[3].split("/"))
    run_packed, scored_packed = (int(x) for x in rows[1].split("|")[3].split("/"))
    assert scored_plain == scored_packed and run_packed < run_plain
    difference = float(out.split("|loss difference| ")[1].split()[0])
    assert difference < 1e-4


def _flops():
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        import flops
    finally:
        sys.path.remove(str(REPO_ROOT / "benchmarks"))
    return flops


def test_a_candidates_flops_are_two_per_weight_a_token_plus_attention():
    flops = _flops()
    shape, prompt, new = flops.LLAVA_7B, 721, 32
    macs = flops.candidate_macs(shape, prompt, 576, 1, new)
    weights = flops.language_weights(shape)
    attention = sum(shape.attention_macs(1, prompt + t) for t in range(1, new))
    assert macs["decode"] == pytest.approx((new - 1) * weights + attention)
    assert macs["prefill"] == pytest.approx(prompt * shape.decoder_macs + shape.attention_macs(prompt, (prompt + 1) / 2)
                                            + shape.head_macs)
    # Weights dominate at the 7B: each decode token costs ~2 x 6.6 billion FLOPs, attention a few percent.
    assert 2 * macs["decode_step"] == pytest.approx(2 * weights, rel=0.05)
    total = flops.candidate_flops(shape, prompt, 576, 1, new)
    assert total == pytest.approx(2 * (macs["vision"] + macs["prefill"] + macs["decode"]))


@pytest.mark.slow  # benchmarks/bench_build.py in a process of its own
def test_the_builder_benchmark_prints_its_tables_and_writes_its_json(tmp_path):
    out = tmp_path / "build.json"
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_build.py"), "--json", str(out), "--num_candidates", "2", "3",
               "--sample_records", "1", "--max_new_tokens", "3", "--rank_records", "4", "--judge_records", "1",
               "--rank_candidates", "2", "--repeats", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=280, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out_text = result.stdout
    assert "| N | builder: one call of N rows | one call per candidate |" in out_text
    assert [line.split("|")[1].strip() for line in out_text.splitlines() if line.startswith("| 2 |") or line.startswith("| 3 |")] == [
        "2", "3", "2", "3"]  # the sampling table, then the estimate's
    for ranker in ("reference", "clip", "judge, local VLM", "judge, endpoint", "human"):
        assert f"| {ranker}" in out_text
    assert "ESTIMATE (not a measurement)" in out_text and "load average" in out_text

    results = json.loads(out.read_text())
    assert set(results) >= {"settings", "sampling", "ranking", "estimate", "load_before", "load_after", "torch_threads"}
    assert list(results["sampling"]) == ["2", "3"]
    for count, entry in results["sampling"].items():
        for way in ("builder", "one_at_a_time"):
            assert entry[way]["candidates_per_s"] > 0
            assert entry[way]["new_tokens_per_candidate"] == 3  # every candidate runs to --max_new_tokens
            assert entry[way]["image_tokens"] == 576
        assert entry["builder"]["calls"] == 1 and entry["one_at_a_time"]["calls"] == int(count)  # one call of N rows, or N of one
        assert entry["speedup"] == pytest.approx(entry["builder"]["candidates_per_s"] / entry["one_at_a_time"]["candidates_per_s"])
    ranking = results["ranking"]
    assert list(ranking) == ["reference", "clip", "judge_local", "judge_endpoint", "human"]
    assert all(entry["records_per_s"] > 0 for entry in ranking.values())
    assert ranking["judge_local"]["comparisons"] == 2 and ranking["judge_endpoint"]["comparisons"] == 8  # 2 orders a record
    assert ranking["judge_endpoint"]["unparsable"] == 0
    assert 0 < ranking["human"]["answers_used"] < ranking["human"]["answers"] == 4 * 3  # 3 texts a record; skips not counted
    estimate = results["estimate"]
    assert estimate["label"] == "estimate, not a measurement" and estimate["formula"] in out_text
    for entry in estimate["per_n"].values():
        assert entry["flop_ratio_7b_over_bench"] > 100
        assert entry["gpu_hours_one_at_a_time"] > entry["gpu_hours_builder_call_shape"] >= entry["gpu_hours_flop_bound"] > 0
