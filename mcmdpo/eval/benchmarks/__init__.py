"""TEMPORARY registry while the benchmark modules are being written (imports the ones present)."""

from __future__ import annotations

import importlib
from pathlib import Path

from mcmdpo.eval.benchmarks.base import Benchmark

_MODULES = [importlib.import_module(f"mcmdpo.eval.benchmarks.{name}") for name in ("pope", "object_halbench", "mmhal_bench", "amber", "hallusionbench")
            if (Path(__file__).parent / f"{name}.py").exists()]
BENCHMARKS: dict[str, Benchmark] = {module.BENCHMARK.name: module.BENCHMARK for module in _MODULES if hasattr(module, "BENCHMARK")}
_BY_NAME = {alias.lower(): benchmark for benchmark in BENCHMARKS.values() for alias in (benchmark.name, *benchmark.aliases)}


def find_benchmark(name: str) -> Benchmark | None:
    return _BY_NAME.get(name.lower())
