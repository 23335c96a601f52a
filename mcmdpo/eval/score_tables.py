"""Scores as text: one table row per scored file and one column per metric, each metric's unit
under its name, and the per-group scores of benchmarks (POPE's splits, AMBER's dimensions...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROTOCOL_UNIT = "x 100"  # an alt-text score's unit unless its summary's ``units`` names another
BENCHMARK_UNIT = "%"  # a benchmark score's unit unless its summary's ``units`` names another


def metric_units(summaries: list[dict[str, Any]]) -> dict[str, str]:
    """Every metric of the summaries, in order, with its unit: the one its summary's ``units``
    names, else x 100 (alt-text protocols) or percent (benchmarks)."""
    units: dict[str, str] = {}
    for summary in summaries:
        default = PROTOCOL_UNIT if "protocol" in summary else BENCHMARK_UNIT
        for name in summary["scores"]:
            units.setdefault(name, summary.get("units", {}).get(name, default))
    return units


def format_table(summaries: list[dict[str, Any]]) -> str:
    """One row per file, one column per metric, each metric's unit on the line under its name."""
    units = metric_units(summaries)
    metrics = list(units)
    names = [Path(summary["file"]).name for summary in summaries]
    width = max(len("file"), *(len(n) for n in names))
    widths = [max(9, len(m), len(units[m])) for m in metrics]
    lines = [f"{'file':<{width}}  " + "  ".join(f"{m:>{w}}" for m, w in zip(metrics, widths)) + "  records",
             f"{'':<{width}}  " + "  ".join(f"{units[m]:>{w}}" for m, w in zip(metrics, widths))]
    for name, summary in zip(names, summaries):
        cells = "  ".join(
            f"{summary['scores'][m]:{w}.2f}" if m in summary["scores"] else f"{'-':>{w}}" for m, w in zip(metrics, widths)
        )
        lines.append(f"{name:<{width}}  {cells}  {summary['num_scored']:>7}")
    return "\n".join(lines)


def format_groups(summaries: list[dict[str, Any]]) -> str:
    """Per-group scores (POPE's splits, AMBER's dimensions...): one line per file and group."""
    lines = []
    for summary in summaries:
        for group, scores in summary.get("groups", {}).items():
            cells = "  ".join(f"{name} {value:.2f}" for name, value in scores.items())
            lines.append(f"{Path(summary['file']).name}  [{group}]  {cells}")
    return "\n".join(lines)
