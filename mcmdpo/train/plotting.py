"""Training curves drawn from the Trainer's log history.

Each figure is built by a function that returns it (``training_curves_figure``,
``demo_curves_figure``: a ``matplotlib.figure.Figure``, no pyplot state) and saved by another
(``plot_training_curves``, ``plot_demo_curves``). Every panel has its own y axis: a loss on one
scale (SFT's, from about 6 down) never flattens another (a preference loss near log 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

PANELS = (("loss", "loss"), ("margin", "reward margins"), ("accuracies", "preference accuracies"), ("learning_rate", "learning rate"))
# The demo's second row: the preference runs' margins (response; image and context where logged).
DEMO_MARGINS = ("rewards/margins", "margins/image", "margins/context")


def training_curves_figure(log_history: list[dict[str, Any]], title: str = "") -> Figure | None:
    """One panel per kind of logged value (losses, margins, accuracies, learning rate), each on
    its own y axis, each series against the global step. None when nothing was logged."""
    series: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        for key, value in entry.items():
            if not isinstance(value, (int, float)) or key in ("step", "epoch") or key.startswith("train_"):
                continue
            panel = next((name for name, _ in PANELS if name in key), None)
            if panel is None:
                continue
            steps, values = series.setdefault(panel, {}).setdefault(key, ([], []))
            steps.append(step)
            values.append(float(value))
    panels = [(name, label) for name, label in PANELS if name in series]
    if not panels:
        return None
    figure = Figure(figsize=(5 * len(panels), 3.6), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, (name, label) in zip(axes, panels):
        for key, (steps, values) in sorted(series[name].items()):
            axis.plot(steps, values, label=key, marker="." if len(steps) < 30 else None)
        axis.set_title(label)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    return figure


def plot_training_curves(log_history: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Save :func:`training_curves_figure` as a PNG. Returns None (and writes nothing) when
    nothing was logged."""
    figure = training_curves_figure(log_history, title)
    if figure is None:
        return None
    path = Path(path)
    figure.savefig(path, dpi=120)
    return path


def demo_curves_figure(states: dict[str, list[Path]]) -> Figure:
    """Training curves of several runs (``states``: run name -> its seeds' trainer_state.json).
    First row: each run's loss on its own axis (SFT's loss from 6 would flatten a preference loss
    near 0.69 on a shared one). Second row: the preference runs' margins, runs together (they
    share a scale). One line per seed of each run; one colour per run in every panel."""
    histories = {name: [json.loads(Path(state).read_text())["log_history"] for state in paths] for name, paths in states.items()}
    colors = {name: f"C{i}" for i, name in enumerate(histories)}

    def points(history: list[dict[str, Any]], key: str) -> list[tuple[Any, float]]:
        return [(entry["step"], entry[key]) for entry in history if key in entry and "step" in entry]

    losses = [name for name, runs in histories.items() if any(points(history, "loss") for history in runs)]
    margins = [key for key in DEMO_MARGINS if any(points(history, key) for runs in histories.values() for history in runs)]
    rows = [row for row in ([("loss", name) for name in losses], [(key, None) for key in margins]) if row]
    if not rows:
        rows = [[("loss", None)]]  # nothing logged: one empty panel rather than no figure
    columns = max(len(row) for row in rows)
    figure = Figure(figsize=(4.5 * columns, 3.6 * len(rows)), layout="constrained")
    grid = figure.subplots(len(rows), columns, squeeze=False)
    for row_axes, row in zip(grid, rows):
        for axis, (key, only) in zip(row_axes, row):
            for name, runs in histories.items():
                if only is not None and name != only:
                    continue
                for seed_number, history in enumerate(runs):
                    if points(history, key):
                        axis.plot(*zip(*points(history, key)), label=name if seed_number == 0 else None,
                                  color=colors[name], alpha=0.8, linewidth=1)
            axis.set_title(f"{only} {key}" if only is not None else key)
            axis.set_xlabel("step")
            axis.grid(alpha=0.3)
            if axis.get_legend_handles_labels()[0]:
                axis.legend(fontsize=8)
        for axis in row_axes[len(row):]:
            figure.delaxes(axis)
    return figure


def plot_demo_curves(states: dict[str, list[Path]], path: str | Path) -> Path:
    """Save :func:`demo_curves_figure` as a PNG."""
    demo_curves_figure(states).savefig(path, dpi=120)
    return Path(path)
