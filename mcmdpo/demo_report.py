"""What the demo reports over several seeds: means and ranges, verdicts that respect the spread,
the report and the plots. Pure functions of the per-seed results, so the verdict logic is tested
on hand-made summaries.

A verdict says "yes" only when the effect holds at every seed by more than the metric's noise
tolerance, "no" when it is reversed at every seed, and "not shown" otherwise.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

PerSeed = Mapping[Any, Mapping[str, Mapping[str, float]]]  # {seed: {model: {metric: value}}}

# Differences smaller than these are noise: a margin of 0.01 nats, an accuracy of one record in
# a hundred, a CIDEr point.
# CHAIR and object recall are percentages: one point.
TOLERANCE = {"chair": 1.0, "recall": 1.0, "margin": 0.01, "accuracy": 0.01, "cider": 1.0}
TABLE_METRICS = ("cider", "bleu4", "meteor", "rougel", "preference_accuracy", "image_accuracy", "image_margin", "context_margin")
HALLUCINATION_METRICS = ("chair_s", "chair_i", "object_recall")


def tolerance_of(metric: str) -> float:
    return next((value for key, value in TOLERANCE.items() if key in metric), 0.0)


def aggregate(per_seed: PerSeed) -> dict[str, dict[str, dict[str, float]]]:
    """{model: {metric: {"mean", "min", "max"}}} over seeds."""
    seeds = list(per_seed)
    models = list(per_seed[seeds[0]])
    result: dict[str, dict[str, dict[str, float]]] = {}
    for model in models:
        result[model] = {}
        for metric in per_seed[seeds[0]][model]:
            values = [per_seed[seed][model][metric] for seed in seeds]
            result[model][metric] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}
    return result


def verdict(better: Sequence[float], worse: Sequence[float], tolerance: float) -> str:
    """"yes" if ``better`` beats ``worse`` by more than ``tolerance`` at every seed, "no" if it
    loses by more than that at every seed, "not shown" otherwise."""
    differences = [b - w for b, w in zip(better, worse, strict=True)]
    if all(d > tolerance for d in differences):
        return "yes"
    if all(d < -tolerance for d in differences):
        return "no"
    return "not shown"


def claim(per_seed: PerSeed, better: str, worse: str, metric: str, text: str) -> str:
    """One "what it shows" line: the verdict and the per-seed numbers it rests on."""
    seeds = list(per_seed)
    a = [per_seed[seed][better][metric] for seed in seeds]
    b = [per_seed[seed][worse][metric] for seed in seeds]
    shown = ", ".join(f"seed {seed}: {x:.2f} vs {y:.2f}" for seed, x, y in zip(seeds, a, b))
    return f"- {text}: **{verdict(a, b, tolerance_of(metric))}** ({metric}, {better} vs {worse}; {shown})."


def format_cell(stats: Mapping[str, float], metric: str) -> str:
    digits = 3 if "accuracy" in metric else 2
    if stats["min"] == stats["max"]:
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ({stats['min']:.{digits}f}–{stats['max']:.{digits}f})"


def table(rows: Mapping[str, Mapping[str, Any]], cell: Any, metrics: Sequence[str] = TABLE_METRICS) -> list[str]:
    lines = ["| model | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for model, values in rows.items():
        lines.append(f"| {model} | " + " | ".join(cell(values[metric], metric) for metric in metrics) + " |")
    return lines


def hallucination_section(per_seed: PerSeed) -> list[str]:
    """The object-hallucination check, when the results hold it."""
    first = next(iter(per_seed.values()))
    if not all(metric in values for values in first.values() for metric in HALLUCINATION_METRICS):
        return []
    return [
        "## Hallucination check: CHAIR on the alt-text",
        "",
        "The alt-text each model writes for the first test images, scored for object hallucination through",
        "the Object HalBench path (`mcmdpo_inference.py --test_datasets object_halbench`, `get_score.py",
        "--benchmark object_halbench`) on a release the synthetic data writes: the objects are the coloured",
        "shapes, the ground truth the two in each image. `chair_s` = alt-texts that name a shape the image",
        "does not hold, `chair_i` = shape mentions that are wrong (lower is better), `object_recall` = the",
        "image's shapes mentioned; percent, mean (min–max) over seeds.",
        "",
        *table(aggregate(per_seed), format_cell, HALLUCINATION_METRICS),
        "",
        claim(per_seed, "sft", "base", "object_recall", "SFT names the objects in the image (object_recall)"),
        claim(per_seed, "dpo", "mcmdpo", "chair_i", "MCM-DPO hallucinates fewer objects than DPO (chair_i)"),
        claim(per_seed, "dpo", "mcmdpo", "chair_s", "MCM-DPO writes fewer alt-texts with a hallucinated object than DPO (chair_s)"),
        claim(per_seed, "sft", "mcmdpo", "chair_i", "MCM-DPO hallucinates fewer objects than its SFT starting point (chair_i)"),
        "",
        "In the CHAIR lines the first model named is the one whose rate would be the larger if the claim held.",
        "A model that names no coloured shape at all (the untrained one) has CHAIR 0 by definition, not by merit.",
        "Plot: `hallucination.png`.",
        "",
    ]


def app_command(output_dir: str, seed: Any, models: Sequence[str] = ("sft", "dpo", "mcmdpo")) -> str:
    """The command that opens ``models``' checkpoints of one seed side by side in the browser app."""
    return "python -m mcmdpo.app " + " ".join(f"--model {output_dir}/seed{seed}/{model}" for model in models)


def app_section(settings: Mapping[str, Any], seeds: Sequence[Any]) -> list[str]:
    """Where to try the trained checkpoints by hand: the app's command for the first seed."""
    output_dir = str(settings.get("output_dir", "OUTPUT_DIR")).rstrip("/")
    return [
        "## Try the checkpoints in the browser",
        "",
        f"SFT, DPO and MCM-DPO of seed {seeds[0]} side by side (alt-text, log-prob, image and context margins of each, the",
        "synthetic test records as examples), on http://127.0.0.1:7860:",
        "",
        f"    {app_command(output_dir, seeds[0])}",
        "",
        f"Every seed's checkpoints are in {', '.join(f'`{output_dir}/seed{seed}/`' for seed in seeds)}; "
        f"`--model {output_dir}/seed{seeds[0]}/base` adds the untrained model.",
        "",
    ]


def built_pairs_claims(per_seed: PerSeed) -> list[str]:
    """What MCM-DPO on pairs built from the SFT model's own samples shows, when the demo ran it."""
    if "mcmdpo_built" not in per_seed[next(iter(per_seed))]:
        return []
    return [
        claim(per_seed, "mcmdpo_built", "sft", "cider", "MCM-DPO on pairs built from the SFT model's own samples improves on SFT (CIDEr)"),
        claim(per_seed, "mcmdpo_built", "sft", "image_margin", "MCM-DPO on built pairs makes the model more sensitive to the image than SFT"),
        claim(per_seed, "mcmdpo_built", "mcmdpo", "cider", "built pairs train better alt-text than the given pairs (CIDEr)"),
        claim(per_seed, "mcmdpo_built", "mcmdpo", "preference_accuracy", "built pairs rank the held-out preferences better than the given pairs"),
    ]


def objective_claims(per_seed: PerSeed) -> list[str]:
    """For each other objective the demo ran (``dpo_NAME``): does it improve on SFT, and is
    MCM-DPO more sensitive to the image than it."""
    first = per_seed[next(iter(per_seed))]
    lines = []
    for model in (name for name in first if name.startswith("dpo_")):
        objective = model.removeprefix("dpo_")
        lines += [
            claim(per_seed, model, "sft", "cider", f"DPO with the {objective} objective improves on SFT (CIDEr)"),
            claim(per_seed, "mcmdpo", model, "image_margin", f"MCM-DPO makes the model more sensitive to the image than {objective}"),
            claim(per_seed, "mcmdpo", model, "cider", f"MCM-DPO writes better alt-text than {objective} (CIDEr)"),
        ]
    return lines


def render_report(per_seed: PerSeed, settings: Mapping[str, Any], timings: Mapping[str, float]) -> str:
    seeds = list(per_seed)
    summary = aggregate(per_seed)
    lines = [
        "# mcmdpo demo: the paper's pipeline on synthetic data",
        "",
        "A tiny random model, trained on the synthetic alt-text task: SFT on noisy alt-text, then DPO and",
        "MCM-DPO from the same SFT checkpoint, at each seed (model initialisation, data and training);",
        "`mcmdpo_built`: MCM-DPO from the same checkpoint on pairs built from the SFT model's own samples",
        "(the user's alt-text chosen, the SFT model's worst candidate by CIDEr-D and ROUGE-L rejected);",
        "`dpo_NAME`: DPO under another objective (`--objectives`), from the same checkpoint.",
        "Generation scores (COCO protocol, x 100) are on the test split; preference metrics on the held-out",
        "preference split, from each model's own log-probabilities: `image_margin` = mean log p(y_w | c_w, m_w)",
        "- log p(y_w | c_w, m_l) (m_l: the diffused image), `image_accuracy` the share of records where the",
        "clean image makes y_w more likely, `context_margin` the same with another record's context c_l,",
        "`preference_accuracy` the share of records where y_w is more likely than y_l.",
        "",
        f"## Over {len(seeds)} seeds ({', '.join(map(str, seeds))}): mean (min–max)",
        "",
        *table(summary, format_cell),
        "",
        "## What it shows",
        "",
        f"Each line says yes only if the effect holds at every seed by more than the noise tolerance "
        f"({', '.join(f'{k} {v:g}' for k, v in TOLERANCE.items())}), no if it is reversed at every seed, "
        "not shown otherwise.",
        "",
        claim(per_seed, "sft", "base", "cider", "SFT beats the untrained model on CIDEr"),
        claim(per_seed, "sft", "base", "image_accuracy", "SFT learns to use the image"),
        claim(per_seed, "mcmdpo", "dpo", "image_margin", "MCM-DPO makes the model more sensitive to the image than DPO does"),
        claim(per_seed, "mcmdpo", "dpo", "context_margin", "MCM-DPO makes the model more sensitive to the context than DPO does"),
        claim(per_seed, "mcmdpo", "dpo", "cider", "MCM-DPO writes better alt-text than DPO (CIDEr)"),
        claim(per_seed, "mcmdpo", "dpo", "preference_accuracy", "MCM-DPO ranks the held-out preferences better than DPO"),
        claim(per_seed, "dpo", "sft", "cider", "DPO improves on SFT (CIDEr)"),
        *built_pairs_claims(per_seed),
        *objective_claims(per_seed),
        "- Log-probabilities are summed over the answer, so shorter responses score higher: the untrained",
        "  model's response margin and preference accuracy come from length alone (the generic rejected",
        "  alt-text is long), not from understanding.",
        "",
        "Plots: `training_curves.png` (each stage's loss on its own axis, then the preference runs' margins; one line per seed), `scores.png`",
        "(generation scores per model), `margins.png` (held-out margins and accuracies per model); the bars are",
        "means over seeds, the whiskers the range, the dots the seeds.",
        "",
    ]
    lines += hallucination_section(per_seed)
    lines += app_section(settings, seeds)
    for seed in seeds:
        lines += [f"### Seed {seed}", "", *table(per_seed[seed], lambda value, metric: f"{value:.3f}" if "accuracy" in metric else f"{value:.2f}"), ""]
    lines += [
        "## Settings",
        "",
        "```json",
        json.dumps(dict(settings), indent=1),
        "```",
        "",
        "Time (s): " + ", ".join(f"{k.removesuffix('_s')} {v:.0f}" for k, v in timings.items()),

        "",
    ]
    return "\n".join(lines)


def plot_spread(per_seed: PerSeed, panels: Sequence[tuple[str, Sequence[str]]], path: str | Path, title: str = "") -> Path:
    """One panel per (title, metrics): for each metric, a bar per model at the mean over seeds,
    whiskers from the minimum to the maximum, and a dot per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = list(per_seed)
    models = list(per_seed[seeds[0]])
    summary = aggregate(per_seed)
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    width = 0.8 / len(models)
    for axis, (panel_title, metrics) in zip(axes[0], panels):
        for row, model in enumerate(models):
            xs = [i + row * width for i in range(len(metrics))]
            means = [summary[model][m]["mean"] for m in metrics]
            low = [summary[model][m]["mean"] - summary[model][m]["min"] for m in metrics]
            high = [summary[model][m]["max"] - summary[model][m]["mean"] for m in metrics]
            axis.bar(xs, means, width, yerr=[low, high], capsize=3, label=model, color=f"C{row}", alpha=0.8)
            for x, metric in zip(xs, metrics):
                axis.scatter([x] * len(seeds), [per_seed[s][model][metric] for s in seeds], s=8, color="black", zorder=3)
        axis.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(metrics))])
        axis.set_xticklabels(metrics, fontsize=8)
        axis.set_title(panel_title)
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
