"""The end-to-end demo: the paper's pipeline on a laptop CPU, start to finish.

    python -m mcmdpo.demo --output_dir runs/quickstart [--seeds 0 1 2] [--architecture NAME] [--sft_steps 800] ...

At each seed (model initialisation, data and training):
1. a tiny random model (LLaVA by default; ``--architecture`` picks any declared family, e.g.
   ``qwen2_5_vl``, with its real tokenizer and processor) and the synthetic alt-text data;
2. SFT on the (noisy) SFT split;
3. DPO and MCM-DPO, both from the same SFT checkpoint, on the preference split;
3b. preference pairs built from the SFT model's own samples (``python -m mcmdpo.build`` on the
   first ``--build_records`` records of the SFT split: the user's noisy alt-text as chosen, the
   SFT model's lowest-ranked candidate by the reference ranker as rejected), and MCM-DPO trained on
   them from the same SFT checkpoint (``mcmdpo_built``; ``--build_records 0`` leaves it out);
3c. with ``--objectives NAME ...``, DPO under each of those objectives from the same SFT
   checkpoint (``dpo_NAME``; :mod:`mcmdpo.preference.objectives`), side by side with the others;
4. inference on the test split with every model, and COCO scoring;
5. held-out preference evaluation on pref_test.json;
6. a hallucination check: the alt-text of the first ``--num_objhal_images`` test images scored
   for object hallucination (CHAIR: does it mention a coloured shape the image does not hold?)
   through the Object HalBench reader and scorer, on a release the synthetic data writes;
then over the seeds: summary.json, report.md and plots, with means, ranges and verdicts that
hold at every seed (:mod:`mcmdpo.demo_report`).

Every step is the same code the command lines run (training entry point, inference, scoring).
Run as a program, the demo computes on the CPU kernels :data:`PINNED_KERNELS` names, so that its
figures are the same on any x86-64 machine with AVX2 (docs/demo.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mcmdpo.build import BuildOptions, build, pairs_path
from mcmdpo.data import load_examples
from mcmdpo.data.synthetic import write_dataset
from mcmdpo.demo_report import aggregate, plot_spread, render_report
from mcmdpo.eval import inference
from mcmdpo.eval.benchmarks import BENCHMARKS
from mcmdpo.eval.benchmarks.base import ScoreOptions
from mcmdpo.eval.benchmarks.output_scores import score_benchmark_file
from mcmdpo.eval.preferences import evaluate_preferences
from mcmdpo.eval.alt_text_scores import score_file
from mcmdpo.model.families import ARCHITECTURES
from mcmdpo.preference.dataset import unpaired_records
from mcmdpo.preference.objectives import OBJECTIVES, PRESETS, parse_objective
from mcmdpo.tiny import TinyModelSpec, write_tiny_checkpoint
from mcmdpo.train import cli as train_cli
from mcmdpo.train.plotting import plot_demo_curves

# ATen's vectorised kernels, oneDNN and MKL otherwise take the widest instructions the CPU has
# (AVX-512 on one machine, AVX2 on another), which round differently; over 800 SFT steps that
# changes the figures. AVX2 is on every x86-64 CPU of the last decade.
PINNED_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
MODELS = ("base", "sft", "dpo", "mcmdpo", "mcmdpo_built")  # then dpo_NAME per --objectives
SCORE_NAMES = {"cider": "cider", "bleu4": "bleu4", "meteor": "meteor", "rougel": "rougel"}


@dataclass
class DemoConfig:
    output_dir: str = "runs/quickstart"
    architecture: str = "llava"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    num_sft: int = 2000
    num_pref_train: int = 1000
    num_pref_test: int = 200
    num_test: int = 200
    sft_noise: float = 0.25
    num_objhal_images: int = 50
    sft_steps: int = 800
    sft_lr: float = 2e-3
    pref_steps: int = 60
    pref_lr: float = 5e-5
    pref_batch: int = 8
    beta: float = 0.1
    num_beams: int = 3
    max_new_tokens: int = 32
    build_records: int = 500
    build_candidates: int = 4
    objectives: list[str] = field(default_factory=list)


def train(stage: str, model: Path, data: Path, output: Path, steps: int, lr: float, batch: int, config: DemoConfig, seed: int,
          image_folder: Path | None = None, objective: str | None = None) -> None:
    argv = [
        "--stage", stage, "--model_name_or_path", str(model), "--data_path", str(data),
        "--image_folder", str(image_folder or data.parent / "image"),
        "--output_dir", str(output), "--max_steps", str(steps), "--learning_rate", str(lr),
        "--per_device_train_batch_size", str(batch), "--lr_scheduler_type", "cosine", "--warmup_steps", "0.03",
        "--logging_steps", str(max(1, steps // 30)), "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true",
        "--dataloader_num_workers", "0", "--seed", str(seed),
        # The tiny random model's recipe: its vision tower stays frozen and gradients are clipped
        # (the paper's recipe, for real checkpoints, trains the tower and clips nothing).
        "--train_vision_tower", "false", "--max_grad_norm", "1.0",
    ]
    if stage != "sft":
        reads = parse_objective(objective).reads if objective else {"beta", "reference_cache_dir"}
        argv += ["--objective", objective] if objective else []
        argv += ["--beta", str(config.beta)] if "beta" in reads else []
        argv += ["--reference_cache_dir", str(output.parent / "reference_cache")] if "reference_cache_dir" in reads else []
    if train_cli.main(argv) != 0:
        raise RuntimeError(f"{stage} training failed")


def run_seed(config: DemoConfig, seed: int, out: Path) -> tuple[dict[str, dict[str, float]], dict[str, Path], dict[str, float]]:
    """The whole pipeline at one seed (model initialisation, data, training): per model, its
    scores and held-out preference metrics; the checkpoints; the time each step took."""
    timings: dict[str, float] = {}
    start = time.perf_counter()

    # 1. Model and data.
    checkpoints = {"base": write_tiny_checkpoint(out / "base", TinyModelSpec(architecture=config.architecture, seed=seed))}
    data = write_dataset(
        out / "data", seed=seed, num_sft=config.num_sft, num_pref_train=config.num_pref_train,
        num_pref_test=config.num_pref_test, num_test=config.num_test, sft_noise=config.sft_noise,
        num_objhal_images=min(config.num_objhal_images, config.num_test),
    )
    timings["setup_s"] = time.perf_counter() - start

    # 2-3. SFT, then DPO and MCM-DPO from the same SFT checkpoint.
    for stage, source, split, steps, lr, batch in (
        ("sft", "base", "sft_train.json", config.sft_steps, config.sft_lr, 16),
        ("dpo", "sft", "pref_train.json", config.pref_steps, config.pref_lr, config.pref_batch),
        ("mcmdpo", "sft", "pref_train.json", config.pref_steps, config.pref_lr, config.pref_batch),
    ):
        began = time.perf_counter()
        checkpoints[stage] = out / stage
        train(stage, checkpoints[source], data / split, checkpoints[stage], steps, lr, batch, config, seed)
        timings[f"{stage}_s"] = time.perf_counter() - began

    # 3b. Pairs from the SFT model's own samples of the SFT split's alt-text, then MCM-DPO on them.
    if config.build_records:
        began = time.perf_counter()
        checkpoints["mcmdpo_built"] = out / "mcmdpo_built"
        pairs = build_pairs(checkpoints["sft"], data, out / "build", config, seed)
        train("mcmdpo", checkpoints["sft"], pairs, checkpoints["mcmdpo_built"], config.pref_steps, config.pref_lr, config.pref_batch,
              config, seed, image_folder=data / "image")
        timings["build_and_mcmdpo_built_s"] = time.perf_counter() - began

    # 3c. DPO under each other objective, from the same SFT checkpoint.
    for objective in config.objectives:
        began = time.perf_counter()
        name = f"dpo_{objective}"
        checkpoints[name] = out / name
        split = data / "pref_train.json"
        if parse_objective(objective).unpaired:  # kto: each alt-text alone, labelled
            examples = load_examples(split, "preference", data / "image", show_progress=False).examples
            split = out / "data" / "unpaired_train.json"
            split.write_text(json.dumps(unpaired_records(examples)))
        train("dpo", checkpoints["sft"], split, checkpoints[name], config.pref_steps, config.pref_lr, config.pref_batch, config, seed,
              image_folder=data / "image", objective=objective)
        timings[f"{name}_s"] = time.perf_counter() - began

    # 4-5. Inference and scoring on the test split; preference evaluation on pref_test.
    summary: dict[str, dict[str, float]] = {}
    began = time.perf_counter()
    for name in checkpoints:
        predictions = out / "predictions" / f"{name}.jsonl"
        argv = [
            "--model_name", str(checkpoints[name]), "--test_datasets", str(data / "test.jsonl"), "--eval_output", str(predictions),
            "--image_folder", str(data / "image"), "--num_beams", str(config.num_beams),
            "--max_new_tokens", str(config.max_new_tokens), "--batch_size", "8", "--overwrite", "--quiet",
        ]
        if inference.main(argv) != 0:
            raise RuntimeError(f"inference with {name} failed")
        scores = score_file(predictions, "coco")
        preferences = evaluate_preferences(checkpoints[name], data / "pref_test.json", data / "image", show_progress=False)
        summary[name] = {key: scores["scores"][source] for key, source in SCORE_NAMES.items()}
        summary[name].update({key: value for key, value in preferences.items() if key != "num_records"})
        if config.num_objhal_images:
            summary[name].update(hallucination_check(checkpoints[name], data, out / "predictions" / "objhal" / f"{name}.jsonl", config))
    timings["evaluation_s"] = time.perf_counter() - began
    return summary, checkpoints, timings


def build_pairs(sft: Path, data: Path, output: Path, config: DemoConfig, seed: int) -> Path:
    """``python -m mcmdpo.build`` as a user runs it on their own alt-text: the first
    ``build_records`` records of the SFT split, candidates sampled from the SFT checkpoint, ranked
    against the (noisy) user alt-text by CIDEr-D and ROUGE-L, the worst one rejected."""
    records = json.loads((data / "sft_train.json").read_text())[: config.build_records]
    subset = output / "user_alt_text.json"
    output.mkdir(parents=True, exist_ok=True)
    subset.write_text(json.dumps(records, indent=1) + "\n")
    build(BuildOptions(
        data_path=str(subset), image_folder=str(data / "image"), output_dir=str(output), sampler_model=str(sft),
        num_candidates=config.build_candidates, max_new_tokens=config.max_new_tokens, seed=seed, quiet=True,
    ), echo=None)
    if not json.loads(pairs_path(output).read_text()):
        raise RuntimeError(f"the build made no pairs (see {output / 'build_report.json'}): the SFT model's candidates all tie")
    return pairs_path(output)


def hallucination_check(checkpoint: Path, data: Path, predictions: Path, config: DemoConfig) -> dict[str, float]:
    """Object HalBench on the synthetic release: ``mcmdpo_inference.py --test_datasets
    object_halbench`` and ``get_score.py --benchmark object_halbench``, as a user runs them, with
    the alt-text decoding settings. CHAIRs (alt-texts naming an absent object), CHAIRi (object
    mentions that are absent) and the objects covered, in percent."""
    argv = [
        "--model_name", str(checkpoint), "--test_datasets", "object_halbench", "--benchmark_dir", str(data / "objhal"),
        "--eval_output", str(predictions), "--num_beams", str(config.num_beams), "--max_new_tokens", str(config.max_new_tokens),
        "--batch_size", "8", "--overwrite", "--quiet",
    ]
    if inference.main(argv) != 0:
        raise RuntimeError(f"Object HalBench inference with {checkpoint} failed")
    options = ScoreOptions(benchmark_dir=data / "objhal", coco_annotations=data / "coco", show_progress=False)
    scores = score_benchmark_file(predictions, BENCHMARKS["object_halbench"], options)["scores"]
    return {"chair_s": scores["CHAIRs"], "chair_i": scores["CHAIRi"], "object_recall": scores["obj_rec"]}


def run(config: DemoConfig) -> dict[str, Any]:
    """Every seed, then summary.json ({model: {metric: mean over seeds}} and ``per_seed``),
    report.md and the plots, which show the spread over seeds."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    per_seed: dict[int, dict[str, dict[str, float]]] = {}
    curves: dict[str, list[Path]] = {stage: [] for stage in ("sft", "dpo", "mcmdpo")}
    timings: dict[str, float] = {}
    for seed in config.seeds:
        print(f"== seed {seed} ==", flush=True)
        per_seed[seed], checkpoints, seed_timings = run_seed(config, seed, out / f"seed{seed}")
        for stage in curves:
            curves[stage].append(checkpoints[stage] / "trainer_state.json")
        for key, value in seed_timings.items():
            timings[key] = timings.get(key, 0.0) + value
    timings["total_s"] = time.perf_counter() - start

    summary: dict[str, Any] = {model: {metric: stats["mean"] for metric, stats in metrics.items()}
                               for model, metrics in aggregate(per_seed).items()}
    summary["per_seed"] = {str(seed): values for seed, values in per_seed.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot_spread(per_seed, [("CIDEr, test split (x 100)", ("cider",)),
                           ("BLEU-4, METEOR, ROUGE-L, test split (x 100)", ("bleu4", "meteor", "rougel"))], out / "scores.png")
    plot_spread(
        per_seed,
        [("held-out margins: log p(anchor) - log p(negative)", ("response_margin", "image_margin", "context_margin")),
         ("held-out accuracies", ("preference_accuracy", "image_accuracy", "context_accuracy"))],
        out / "margins.png",
    )
    if config.num_objhal_images:
        plot_spread(
            per_seed,
            [("object hallucination in the alt-text (CHAIR, %; lower is better)", ("chair_s", "chair_i")),
             ("objects of the image mentioned (%)", ("object_recall",))],
            out / "hallucination.png",
        )
    plot_demo_curves(curves, out / "training_curves.png")
    # The kernels and threads the figures were computed with, beside the settings.
    machine = {"cpu_kernels": {name: os.environ.get(name, "native") for name in PINNED_KERNELS}, "torch_threads": torch.get_num_threads()}
    (out / "report.md").write_text(render_report(per_seed, {**asdict(config), **machine}, timings))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcmdpo.demo", description=__doc__.split("\n\n")[0])
    for name, default in asdict(DemoConfig()).items():
        if name == "objectives":
            parser.add_argument("--objectives", nargs="+", default=default, choices=sorted({*OBJECTIVES, *PRESETS} - {"sigmoid"}),
                                help="also train DPO under each of these objectives (dpo_NAME), side by side")
        elif isinstance(default, list):
            parser.add_argument(f"--{name}", type=int, nargs="+", default=default)
        else:
            choices = ARCHITECTURES if name == "architecture" else None
            parser.add_argument(f"--{name}", type=type(default), default=default, choices=choices)
    config = DemoConfig(**vars(parser.parse_args(argv)))
    summary = run(config)
    print(json.dumps({model: values for model, values in summary.items() if model != "per_seed"}, indent=1))
    print(f"report: {Path(config.output_dir) / 'report.md'}")
    return 0


def with_pinned_kernels() -> None:
    """Start again under :data:`PINNED_KERNELS` unless they are set (they are read when torch
    loads); on a CPU that is not x86-64 there is nothing to pin, and the figures are that CPU's."""
    if platform.machine().lower() not in ("x86_64", "amd64") or all(os.environ.get(k) == v for k, v in PINNED_KERNELS.items()):
        return
    os.execve(sys.executable, [sys.executable, "-m", "mcmdpo.demo", *sys.argv[1:]], {**os.environ, **PINNED_KERNELS})


if __name__ == "__main__":
    with_pinned_kernels()
    sys.exit(main())
