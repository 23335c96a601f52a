"""Peak memory of one training step, above what the process holds before it.

On CUDA: ``torch.cuda.max_memory_allocated`` (the caching allocator's live tensors) minus what
was allocated before the step.

On a CPU two figures, which answer different questions:
- peak resident-set growth: the kernel's high-water mark of the process (VmHWM, reset before
  the step through /proc/self/clear_refs) minus its resident set before the step. It is what the
  machine must have, but it also counts memory the C allocator keeps after tensors are freed
  (glibc returns large blocks to the kernel, smaller ones stay in its arenas), oneDNN's scratch
  buffers and thread stacks, and it misses pages of a tensor that were never touched;
- allocator-level peak: the largest total of live tensor bytes during the step, from the
  profiler's memory events (``profile_memory``). This is what a GPU's allocator would have to
  find (up to fragmentation), so it is the figure comparable with ``max_memory_allocated``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_rss_growth_mb(step: Callable[[], object]) -> float | None:
    """VmHWM after ``step`` minus VmRSS before it, the high-water mark reset first (Linux only:
    None where it cannot be reset)."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return None
    before = rss_mb()
    step()
    return _status_mb("VmHWM") - before


def allocator_peak_mb(step: Callable[[], object]) -> float:
    """The largest sum of live CPU tensor bytes allocated during ``step`` (relative to its start),
    from the profiler's memory events; the step runs under the profiler, so it is not timed."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0]
    return max([0, *totals]) / 2**20


def cuda_peak_mb(step: Callable[[], object]) -> tuple[float, float]:
    """(peak allocated above what was allocated before ``step``, peak allocated in all)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return (peak - before) / 2**20, peak / 2**20
