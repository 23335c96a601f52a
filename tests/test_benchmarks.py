"""The prepared GPU check keeps working: on a CPU it runs the same code on a tiny shape."""

from __future__ import annotations

import subprocess

from conftest import REPO_ROOT


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
