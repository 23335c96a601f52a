"""The charts keep every series readable: get_score's chart gives each metric its own panel and y
axis (CIDEr near 600 beside BLEU near 75), and the training curves give each stage's loss its
own axis (SFT's 6 -> 0.4 beside a preference loss 0.69 -> 0.5). Checked on the matplotlib
figures the plotting functions build, not on pixels."""

from __future__ import annotations

import json
import math

import pytest

from mcmdpo.eval.score_plots import plot_scores, score_figure
from mcmdpo.train.plotting import demo_curves_figure, plot_demo_curves, plot_training_curves, training_curves_figure


def panels(figure) -> dict[str, object]:
    """The figure's axes by title."""
    return {axis.get_title(): axis for axis in figure.axes}


def bar_heights(axis) -> list[float]:
    return [patch.get_height() for patch in axis.patches]


COCO = [
    {"file": "runs/sft.jsonl", "protocol": "coco", "units": {},
     "scores": {"bleu1": 80.0, "bleu4": 75.0, "meteor": 50.0, "rougel": 70.0, "cider": 600.0}, "num_scored": 8},
    {"file": "runs/dpo.jsonl", "protocol": "coco", "units": {},  # no METEOR (no Java, say): no bar, not a 0
     "scores": {"bleu1": 78.0, "bleu4": 72.0, "rougel": 68.0, "cider": 580.0}, "num_scored": 8},
]


def test_each_metric_gets_its_own_panel_and_y_axis():
    figure = score_figure(COCO)
    by_title = panels(figure)
    assert list(by_title) == ["bleu1", "bleu4", "meteor", "rougel", "cider"]
    for metric, axis in by_title.items():
        largest = max(summary["scores"].get(metric, 0) for summary in COCO)
        low, high = axis.get_ylim()
        # Each axis fits its own metric: BLEU's top is near 75, not CIDEr's 600.
        assert low <= 0 and largest <= high <= 1.5 * largest, (metric, axis.get_ylim())
        assert axis.get_ylabel() == "x 100"
        assert len(axis.patches) == 2  # one bar per file
    assert by_title["cider"].get_ylim()[1] > 600 and by_title["bleu4"].get_ylim()[1] < 120
    # A metric a file lacks is NaN (drawn as nothing), never 0.
    sft, dpo = bar_heights(by_title["meteor"])
    assert sft == 50 and math.isnan(dpo)
    # One legend names the files, in the colours of their bars.
    [legend] = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == ["sft", "dpo"]
    assert figure.get_suptitle() == "coco protocol"


def test_units_label_their_panels():
    paper = [{"file": "sft.jsonl", "protocol": "paper", "units": {"edit_distance": "tokens"},
              "scores": {"bleu_1": 40.0, "rouge_l": 35.0, "cider_d": 120.0, "edit_distance": 7.25}, "num_scored": 4}]
    by_title = panels(score_figure(paper))
    assert by_title["edit_distance"].get_ylabel() == "tokens"
    assert by_title["rouge_l"].get_ylabel() == "x 100"
    assert by_title["edit_distance"].get_ylim()[1] < 12  # its own axis, not CIDEr-D's
    benchmark = [{"file": "objhal.jsonl", "benchmark": "object_halbench", "units": {"avg_word_len": "words"},
                  "scores": {"chair_s": 30.0, "chair_i": 10.0, "avg_word_len": 12.0}, "num_scored": 3}]
    figure = score_figure(benchmark)
    by_title = panels(figure)
    assert by_title["chair_s"].get_ylabel() == "%" and by_title["avg_word_len"].get_ylabel() == "words"
    assert figure.get_suptitle() == "object_halbench"


def test_a_panel_grid_for_many_metrics_and_the_png(tmp_path):
    many = [{"file": f"m{i}.jsonl", "protocol": "coco", "units": {}, "num_scored": 1,
             "scores": {f"metric{j}": float(10 ** (j % 3) * (i + 1)) for j in range(9)}} for i in range(3)]
    figure = score_figure(many, title="nine metrics")
    assert len(figure.axes) == 9 and figure.get_suptitle() == "nine metrics"  # the grid's unused cells removed
    path = plot_scores(many, tmp_path / "scores.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def write_state(path, losses, margins=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    history = []
    for step, loss in enumerate(losses, 1):
        entry = {"step": step, "epoch": step / len(losses), "loss": loss, "learning_rate": 1e-5}
        if margins is not None:
            entry.update({"rewards/margins": margins[step - 1], "margins/image": margins[step - 1] / 2})
        history.append(entry)
    history.append({"step": len(losses), "train_loss": sum(losses) / len(losses)})
    path.write_text(json.dumps({"log_history": history}))
    return path


def test_demo_curves_give_each_stage_its_loss_axis(tmp_path):
    sft = [6.0, 3.0, 1.5, 0.8, 0.4]
    dpo = [0.69, 0.65, 0.6, 0.55, 0.5]
    mcmdpo = [0.69, 0.62, 0.55, 0.5, 0.45]
    margins = [0.0, 0.1, 0.2, 0.3, 0.4]
    states = {
        "sft": [write_state(tmp_path / f"seed{s}" / "sft" / "trainer_state.json", sft) for s in (0, 1)],
        "dpo": [write_state(tmp_path / f"seed{s}" / "dpo" / "trainer_state.json", dpo, margins) for s in (0, 1)],
        "mcmdpo": [write_state(tmp_path / f"seed{s}" / "mcmdpo" / "trainer_state.json", mcmdpo, margins) for s in (0, 1)],
    }
    figure = demo_curves_figure(states)
    by_title = panels(figure)
    assert list(by_title) == ["sft loss", "dpo loss", "mcmdpo loss", "rewards/margins", "margins/image"]
    for stage, losses in (("sft", sft), ("dpo", dpo), ("mcmdpo", mcmdpo)):
        axis = by_title[f"{stage} loss"]
        low, high = axis.get_ylim()
        span = max(losses) - min(losses)
        # The axis fits this stage's loss alone: DPO's 0.5..0.69 fills it, SFT's 6 is elsewhere.
        assert min(losses) - 0.2 * span <= low <= min(losses) and max(losses) <= high <= max(losses) + 0.2 * span, (stage, low, high)
        assert len(axis.lines) == 2  # one line per seed
        assert {line.get_color() for line in axis.lines} == {f"C{list(states).index(stage)}"}
    # The margins put the preference runs together, SFT (which logs none) left out.
    assert [text.get_text() for text in by_title["rewards/margins"].get_legend().get_texts()] == ["dpo", "mcmdpo"]
    path = plot_demo_curves(states, tmp_path / "training_curves.png")
    assert path.stat().st_size > 10_000


def test_training_curves_figure_panels_and_axes(tmp_path):
    history = json.loads(write_state(tmp_path / "state.json", [0.69, 0.6, 0.5], [0.0, 0.2, 0.5]).read_text())["log_history"]
    figure = training_curves_figure(history, title="mcmdpo: run")
    by_title = panels(figure)
    assert list(by_title) == ["loss", "reward margins", "learning rate"]
    low, high = by_title["loss"].get_ylim()
    assert 0.45 <= low <= 0.5 and 0.69 <= high <= 0.75
    assert [line.get_label() for line in by_title["reward margins"].lines] == ["margins/image", "rewards/margins"]
    assert figure.get_suptitle() == "mcmdpo: run"
    assert training_curves_figure([{"epoch": 1.0, "train_runtime": 3.0}]) is None
    assert plot_training_curves([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    assert plot_training_curves(history, tmp_path / "curves.png").stat().st_size > 10_000


@pytest.mark.parametrize("missing", ["sft", "margins"])
def test_demo_curves_without_a_stage_or_margins(tmp_path, missing):
    states = {"sft": [] if missing == "sft" else [write_state(tmp_path / "sft.json", [5.0, 1.0])],
              "dpo": [write_state(tmp_path / "dpo.json", [0.69, 0.6], None if missing == "margins" else [0.0, 0.3])]}
    titles = list(panels(demo_curves_figure(states)))
    assert titles == (["dpo loss", "rewards/margins", "margins/image"] if missing == "sft" else ["sft loss", "dpo loss"])
