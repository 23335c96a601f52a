"""Scores as a figure: one small bar panel per metric, comparing the scored files (matplotlib,
imported only when a figure is drawn)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mcmdpo.eval.score_tables import metric_units


def score_figure(summaries: list[dict[str, Any]], title: str = "") -> Any:
    """A ``matplotlib.figure.Figure`` with one small panel per metric, each on its own y axis
    labelled with the metric's unit (CIDEr near 600 leaves BLEU near 75 readable beside it), one
    bar per file in the same colour in every panel, and one legend naming the files. A metric a
    file lacks gets no bar (its height is NaN), never a 0."""
    from matplotlib.figure import Figure

    units = metric_units(summaries)
    metrics = list(units)
    columns = min(4, len(metrics))
    rows = -(-len(metrics) // columns)
    figure = Figure(figsize=(max(3.0, 0.45 * len(summaries) + 1.6) * columns, 2.6 * rows + 0.9), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    labels = [Path(summary["file"]).stem for summary in summaries]
    for axis, metric in zip(axes, metrics):
        values = [float(summary["scores"].get(metric, float("nan"))) for summary in summaries]
        bars = axis.bar(range(len(summaries)), values, 0.8, color=[f"C{i % 10}" for i in range(len(summaries))])
        axis.bar_label(bars, labels=["" if math.isnan(value) else f"{value:.4g}" for value in values], fontsize=7, padding=1)
        axis.set_title(metric, fontsize=10)
        axis.set_ylabel(units[metric], fontsize=8)
        axis.set_xticks([])
        axis.tick_params(axis="y", labelsize=7)
        axis.grid(axis="y", alpha=0.3)
        axis.margins(y=0.15)  # room for the value labels
    for axis in axes[len(metrics):]:
        figure.delaxes(axis)
    handles = [axes[0].patches[i] for i in range(len(summaries))]
    figure.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize=8)
    figure.suptitle(title or (f"{summaries[0]['protocol']} protocol" if "protocol" in summaries[0] else summaries[0]["benchmark"]))
    return figure


def plot_scores(summaries: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Save :func:`score_figure` as a PNG."""
    score_figure(summaries, title).savefig(path, dpi=120)
    return Path(path)
