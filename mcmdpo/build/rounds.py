"""The figures of on-policy rounds side by side (``scripts/iterate.sh`` runs this last):

    python -m mcmdpo.build.rounds OUTPUT_ROOT

reads ``OUTPUT_ROOT/sft`` (round 0) and every ``OUTPUT_ROOT/round<r>``: the held-out preference
metrics (``preferences.json``), the alt-text scores (``scores.json``, when the rounds wrote any)
and the pairs each round built (``build/build_report.json``); writes ``rounds.json`` and
``rounds.png`` (one panel per group of metrics, one point per round)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from mcmdpo.build.report import read_report
from mcmdpo.files import write_text_atomically

PANELS = (
    ("held-out margins: log p(anchor) - log p(negative)", ("response_margin", "image_margin", "context_margin")),
    ("held-out accuracies", ("preference_accuracy", "image_accuracy", "context_accuracy")),
    ("alt-text scores (x 100)", ("cider", "bleu4", "rougel")),
    ("pairs built", ("pairs",)),
)
SCORE_KEYS = ("cider", "bleu4", "rougel")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else {}


def round_figures(folder: Path) -> dict[str, float]:
    """One round's figures: its model's held-out metrics and scores, and the pairs its build made."""
    figures = {key: value for key, value in _read_json(folder / "preferences.json").items() if key != "num_records"}
    summaries = _read_json(folder / "scores.json")  # get_score.py --summary_json: one summary per file scored
    scores = summaries[0]["scores"] if summaries else {}
    figures.update({key: scores[key] for key in SCORE_KEYS if key in scores})
    pair = read_report(folder / "build").get("pair")
    if pair is not None:
        figures["pairs"] = float(pair["pairs"])
    return figures


def collect_rounds(root: str | Path) -> dict[int, dict[str, float]]:
    """{round: figures}, round 0 being the SFT model."""
    root = Path(root)
    rounds = {0: round_figures(root / "sft")} if (root / "sft").is_dir() else {}
    numbered = sorted((int(match.group(1)), path) for path in root.glob("round*")
                      if (match := re.fullmatch(r"round(\d+)", path.name)) and path.is_dir())
    for number, folder in numbered:
        rounds[number] = round_figures(folder)
    return rounds


def plot_rounds(rounds: dict[int, dict[str, float]], path: str | Path) -> Path:
    """One panel per group of metrics that any round has, one line per metric over the rounds."""
    from matplotlib.figure import Figure

    panels = [(title, [m for m in metrics if any(m in figures for figures in rounds.values())]) for title, metrics in PANELS]
    panels = [(title, metrics) for title, metrics in panels if metrics]
    figure = Figure(figsize=(4.2 * max(1, len(panels)), 3.4), layout="constrained")
    axes = figure.subplots(1, max(1, len(panels)), squeeze=False).ravel()
    numbers = sorted(rounds)
    for axis, (title, metrics) in zip(axes, panels):
        for metric in metrics:
            points = [(number, rounds[number][metric]) for number in numbers if metric in rounds[number]]
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=metric)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("round (0 = SFT)")
        axis.set_xticks(numbers)
        axis.legend(fontsize=7)
    path = Path(path)
    figure.savefig(path, dpi=120)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcmdpo.build.rounds", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_root", help="the OUTPUT_ROOT of scripts/iterate.sh")
    args = parser.parse_args(argv)
    rounds = collect_rounds(args.output_root)
    if not rounds:
        print(f"error: {args.output_root} holds no sft/ or round<r>/ folder", file=sys.stderr)
        return 2
    root = Path(args.output_root)
    write_text_atomically(root / "rounds.json", json.dumps({str(k): v for k, v in rounds.items()}, indent=1) + "\n")
    plot_rounds(rounds, root / "rounds.png")
    for number, figures in sorted(rounds.items()):
        shown = ", ".join(f"{key} {figures[key]:.3f}" for key in ("pairs", "preference_accuracy", "image_margin", "cider") if key in figures)
        print(f"round {number}: {shown}")
    print(f"rounds: {root / 'rounds.json'}, {root / 'rounds.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
