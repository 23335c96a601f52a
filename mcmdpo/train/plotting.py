"""Training curves drawn from the Trainer's log history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = (("loss", "loss"), ("margin", "reward margins"), ("accuracies", "preference accuracies"), ("learning_rate", "learning rate"))


def plot_training_curves(log_history: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """One panel per kind of logged value (losses, margins, accuracies, learning rate), each
    series against the global step. Returns None when nothing was logged."""
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
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for axis, (name, label) in zip(axes[0], panels):
        for key, (steps, values) in sorted(series[name].items()):
            axis.plot(steps, values, label=key, marker="." if len(steps) < 30 else None)
        axis.set_title(label)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_demo_curves(states: dict[str, list[Path]], path: str | Path) -> Path:
    """Training curves of several runs side by side: each run's loss, and the preference runs'
    margins (response; image and context where logged); one line per seed of each run."""
    import json

    histories = {name: [json.loads(Path(state).read_text())["log_history"] for state in paths] for name, paths in states.items()}
    colors = {name: f"C{i}" for i, name in enumerate(histories)}  # one colour per run in every panel
    panels = [("loss", "loss")] + [(key, key) for key in ("rewards/margins", "margins/image", "margins/context")]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for axis, (key, title) in zip(axes[0], panels):
        for name, runs in histories.items():
            for seed_number, history in enumerate(runs):
                points = [(entry["step"], entry[key]) for entry in history if key in entry and "step" in entry]
                if points:
                    axis.plot(*zip(*points), label=name if seed_number == 0 else None, color=colors[name], alpha=0.8, linewidth=1)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
