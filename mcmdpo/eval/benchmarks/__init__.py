"""Hallucination benchmarks by name: their released files read for inference, their outputs scored.

``BENCHMARKS`` maps each name to a :class:`~mcmdpo.eval.benchmarks.base.Benchmark`;
:func:`find_benchmark` also knows the names the original inference script used."""

from __future__ import annotations

from mcmdpo.eval.benchmarks import amber, hallusionbench, mmhal_bench, object_halbench, pope
from mcmdpo.eval.benchmarks.base import Benchmark

BENCHMARKS: dict[str, Benchmark] = {
    module.BENCHMARK.name: module.BENCHMARK for module in (pope, object_halbench, mmhal_bench, amber, hallusionbench)
}
_BY_NAME = {alias.lower(): benchmark for benchmark in BENCHMARKS.values() for alias in (benchmark.name, *benchmark.aliases)}


def find_benchmark(name: str) -> Benchmark | None:
    """The benchmark called ``name`` (case-insensitive; the original script's names too), or None."""
    return _BY_NAME.get(name.lower())
