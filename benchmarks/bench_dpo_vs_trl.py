"""Benchmark: our DPO training step against TRL's ``DPOTrainer`` on the same model, data and batch.

    .venv/bin/pip install trl==1.16.0        # a benchmark-only dependency (pip install -e '.[bench]')
    python benchmarks/bench_dpo_vs_trl.py [--json OUT] [--steps 6] [--batch 4] [--checkpointing on] [--profile]

The benchmark model of ``benchmarks/common.py`` (a 7B LLaVA's FLOP proportions, random weights;
576 image tokens, 35-token system prompt, ~100-token contexts, ~30-token answers), the same
preference records and batch size, both trainers timed step by step with one callback (median of
the steps after the first; on a CPU the process CPU time with one thread, so other work on the
machine does not distort the ratio), both with bf16 autocast and activation checkpointing (TRL's defaults;
``--checkpointing off`` turns it off in both). TRL runs its reference live: it refuses
``precompute_ref_log_probs`` for vision data. Ours, through the training entry point (no recipe,
so only the flags below count):
- ``ours``: the defaults, the packed step (one prefix-tree row per record: the image and the
  context run once for both answers) with reference log-probs precomputed and cached (the
  cache is filled before training, outside the timed steps);
- ``ours_plain``: ``--sequence_packing none`` (both sequences in full), cached reference;
- ``ours_live_reference``: ``--precompute_reference_logps false``, a live reference as TRL has.
``--profile`` prints where the time of one of our default steps goes (torch.profiler, by
operator and by calling code). Goal: ours >= 2x TRL.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import bench_examples, report, write_bench_checkpoint, write_bench_data
from transformers import TrainerCallback

from mcmdpo.model.loading import load_model, load_processor
from mcmdpo.train.cli import parse_arguments, run

OURS = {
    "ours": [],
    "ours_plain": ["--sequence_packing", "none"],
    "ours_live_reference": ["--precompute_reference_logps", "false"],
}


class StepTimer(TrainerCallback):
    """Time of each optimizer step: on a CPU the process CPU time (with one thread, the work done,
    whatever else runs on the machine), on a GPU the wall time. With ``profile_step``, that step
    runs under the profiler."""

    def __init__(self, profile_step: int | None = None):
        self.times: list[float] = []
        self.clock = time.perf_counter if torch.cuda.is_available() else time.process_time
        self.profile_step = profile_step
        self.profiler: Any = None
        self.table = ""

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.profile_step:
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_stack=True)
            self.profiler.__enter__()
        self.start = self.clock()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(self.clock() - self.start)
        if self.profiler is not None:
            self.profiler.__exit__(None, None, None)
            by_operator = self.profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
            by_caller = self.profiler.key_averages(group_by_stack_n=6).table(sort_by="self_cpu_time_total", row_limit=15)
            self.table = f"{by_operator}\n{by_caller}"
            self.profiler = None

    def median(self) -> float:
        return statistics.median(self.times[1:])


def ours(name: str, checkpoint: str, data: Path, images: Path, folder: Path, args: argparse.Namespace, timer: StepTimer) -> None:
    argv = [
        "--config", "none", "--stage", "dpo", "--model_name_or_path", checkpoint, "--data_path", str(data),
        "--image_folder", str(images), "--output_dir", str(folder / name), "--max_steps", str(args.steps),
        "--per_device_train_batch_size", str(args.batch), "--learning_rate", "1e-6", "--logging_steps", "1",
        "--save_strategy", "no", "--report_to", "none", "--use_cpu", str(not torch.cuda.is_available()).lower(),
        "--dataloader_num_workers", "0", "--reference_cache_dir", str(folder / "cache"), "--plot", "false",
        "--bf16", "true", "--activation_checkpointing", "true" if args.checkpointing == "on" else "false",
        "--max_length", "4096", *OURS[name],
    ]
    run(*parse_arguments(argv), callbacks=[timer])


def trl(checkpoint: str, data: Path, images: Path, folder: Path, args: argparse.Namespace, timer: StepTimer) -> None:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = [{
        "images": [e.image.open(images)],
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": e.question}]}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": e.chosen}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": e.rejected}]}],
    } for e in bench_examples(data, images)]
    config = DPOConfig(
        output_dir=str(folder / "trl"), per_device_train_batch_size=args.batch, max_steps=args.steps, learning_rate=1e-6,
        beta=0.1, logging_steps=1, report_to="none", use_cpu=not torch.cuda.is_available(), save_strategy="no",
        max_length=None, dataloader_num_workers=0, bf16=True, gradient_checkpointing=args.checkpointing == "on",
    )
    trainer = DPOTrainer(model=load_model(checkpoint), args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=load_processor(checkpoint), callbacks=[timer])
    trainer.train()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--steps", type=int, default=6, help="training steps per trainer (the first is not counted)")
    parser.add_argument("--batch", type=int, default=4, help="records per step")
    parser.add_argument("--checkpointing", choices=("on", "off"), default="on")
    parser.add_argument("--variants", nargs="+", choices=list(OURS), default=list(OURS))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: CPU-time measurements robust to other processes)")
    parser.add_argument("--profile", action="store_true", help="profile our default step (the third) and print the table")
    args = parser.parse_args()
    import trl as trl_package

    torch.set_num_threads(args.threads)
    timers = {name: StepTimer(2 if args.profile and name == "ours" else None) for name in ["trl", *args.variants]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint = str(write_bench_checkpoint(folder / "model", "llava"))
        data, images = write_bench_data(folder / "data", load_processor(checkpoint).tokenizer, args.batch * args.steps)
        for name in args.variants:
            ours(name, checkpoint, data, images, folder, args, timers[name])
        trl(checkpoint, data, images, folder, args, timers["trl"])
    trl_step = timers["trl"].median()
    results = {
        "trl_version": trl_package.__version__,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu, {args.threads} thread(s), CPU time",
        "records_per_step": args.batch,
        "activation_checkpointing": args.checkpointing,
        "trl_step_s": trl_step,
        **{f"{name}_step_s": timers[name].median() for name in args.variants},
        **{f"speedup_{name}": trl_step / timers[name].median() for name in args.variants},
    }
    if args.profile:
        print(timers["ours"].table)
    report(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
