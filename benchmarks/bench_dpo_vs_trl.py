"""Benchmark: our DPO training step against TRL's ``DPOTrainer`` on the same model, data and batch.

    pip install trl   # a benchmark extra: pip install -e .[bench]
    python benchmarks/bench_dpo_vs_trl.py [--json OUT] [--steps 6] [--batch 4]

A tiny random LLaVA with a realistic token profile (576 image tokens, ~100-token contexts, short
answers), the same preference records and batch size, both trainers timed step by step with one
callback (median after the first step). TRL runs with its live reference model: it refuses
``precompute_ref_log_probs`` for vision datasets. Ours uses its default, reference log-probs
precomputed and cached, so a step runs the policy only; with ``--shared_prefix true`` (the image
and prompt run once for both responses); and, for a like-for-like comparison, with
``--precompute_reference_logps false`` (a live reference, as TRL). Goal: >= 1.3x.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import long_context, realistic_spec, report
from transformers import TrainerCallback

from mcmdpo.data.loading import load_examples
from mcmdpo.data.synthetic import write_dataset
from mcmdpo.model.loading import load_model, load_processor
from mcmdpo.model.tiny import write_tiny_checkpoint
from mcmdpo.train.cli import parse_arguments, run


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.start)

    def median(self) -> float:
        return statistics.median(self.times[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = str(write_tiny_checkpoint(tmp / "model", realistic_spec()))
        records = args.batch * args.steps
        data = write_dataset(tmp / "data", num_sft=1, num_pref_train=records, num_pref_test=1, num_test=1)
        raw = json.loads((data / "pref_train.json").read_text())
        for record in raw:
            text = json.loads(record["text"])
            record["text"] = json.dumps({**text, "question": long_context(text["question"])})
        (data / "pref_long.json").write_text(json.dumps(raw))

        timers = {"ours": StepTimer(), "ours_shared_prefix": StepTimer(), "ours_live_reference": StepTimer()}
        argv = [
            "--stage", "dpo", "--model_name_or_path", checkpoint, "--data_path", str(data / "pref_long.json"),
            "--image_folder", str(data / "image"), "--output_dir", str(tmp / "ours"), "--max_steps", str(args.steps),
            "--per_device_train_batch_size", str(args.batch), "--learning_rate", "1e-6", "--logging_steps", "1",
            "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true", "--dataloader_num_workers", "0",
            "--reference_cache_dir", str(tmp / "cache"), "--plot", "false",
        ]
        for name, extra in (("ours", []), ("ours_shared_prefix", ["--shared_prefix", "true"]),
                            ("ours_live_reference", ["--precompute_reference_logps", "false"])):
            variant = [*argv, *extra]
            variant[variant.index("--output_dir") + 1] = str(tmp / name)
            run(*parse_arguments(variant), callbacks=[timers[name]])

        examples = load_examples(data / "pref_long.json", "preference", data / "image", show_progress=False).examples
        rows = [{
            "images": [e.image.open(data / "image")],
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": e.question}]}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": e.chosen}]}],
            "rejected": [{"role": "assistant", "content": [{"type": "text", "text": e.rejected}]}],
        } for e in examples]
        timer = StepTimer()
        config = DPOConfig(
            output_dir=str(tmp / "trl"), per_device_train_batch_size=args.batch, max_steps=args.steps, learning_rate=1e-6,
            beta=0.1, logging_steps=1, report_to="none", use_cpu=True, save_strategy="no", max_length=None,
            dataloader_num_workers=0,
        )
        trainer = DPOTrainer(model=load_model(checkpoint), args=config, train_dataset=Dataset.from_list(rows),
                             processing_class=load_processor(checkpoint), callbacks=[timer])
        trainer.train()
        trl_step = timer.median()

    import trl

    results = {
        "trl_version": trl.__version__,
        "records_per_step": args.batch,
        "trl_step_s": trl_step,
        **{f"{name}_step_s": timer.median() for name, timer in timers.items()},
        **{f"speedup_{name}": trl_step / timer.median() for name, timer in timers.items()},
    }
    report(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
