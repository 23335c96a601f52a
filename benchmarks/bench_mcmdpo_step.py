"""Benchmark: the upstream-style MCM-DPO step against the shared-prefix step, side by side.

    python benchmarks/bench_mcmdpo_step.py [--json OUT] [--records 2] [--steps 5]

A tiny random LLaVA with a realistic token profile (336-pixel images in 14-pixel patches: 576 image
tokens; ~100-token contexts; ~20-token answers), ``--records`` records per step:
- upstream style: 16 full sequences per record, 8 under the policy with backward, 8 under the
  reference (no grad);
- shared prefix: 2 image encodings and 4 prompts per record, both responses from each cached
  prompt, reference log-probs precomputed (no reference forward).
Reports the median of ``--steps`` timed steps after one warm-up, the speedup, the largest loss and
gradient differences, and each step's peak memory (CUDA: max allocated above what is held; CPU:
peak resident-set growth of one step, each variant in a fresh process).
Goal: speedup >= 2.5.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
from common import long_context, realistic_spec, report

from mcmdpo.data.loading import load_examples
from mcmdpo.data.preference_dataset import PreferenceCollator, PreferenceDataset
from mcmdpo.data.records import PreferenceExample
from mcmdpo.data.synthetic import write_dataset
from mcmdpo.model.loading import load_family, load_model, load_processor
from mcmdpo.model.tiny import write_tiny_checkpoint
from mcmdpo.train.losses import mcmdpo_loss
from mcmdpo.train.preference_trainer import batch_sequence_logps
from mcmdpo.train.shared_prefix import SharedPrefixCollator, shared_prefix_logps


def peak_memory_mb(step) -> float:
    """Memory one step needs above what is already held: CUDA max allocated; on a CPU the growth
    of the peak resident set (meaningful in a fresh process only, see --memory_of)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    base = psutil.Process().memory_info().rss
    step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base) / 2**20


def memory_in_fresh_process(variant: str, args: argparse.Namespace) -> float:
    """On a CPU the allocator keeps what an earlier step freed, so each variant's peak is
    measured in a process of its own."""
    command = [sys.executable, __file__, "--memory_of", variant, "--records", str(args.records),
               "--hidden_size", str(args.hidden_size), "--num_layers", str(args.num_layers)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return float(output.strip().splitlines()[-1])


def long_context_examples(data: Path, count: int) -> list[PreferenceExample]:
    """Synthetic preference records with contexts padded to about 100 tokens with filler posts."""
    examples = load_examples(data / "pref_train.json", "preference", data / "image", show_progress=False).examples[:count]
    return [PreferenceExample(e.idx, e.image, long_context(e.question), e.chosen, e.rejected, e.location) for e in examples]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--records", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--num_layers", type=int, default=4)
    parser.add_argument("--memory_of", choices=("upstream", "shared"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = str(write_tiny_checkpoint(tmp / "model", realistic_spec(args.hidden_size, args.num_layers)))
        data = write_dataset(tmp / "data", num_sft=1, num_pref_train=max(2, args.records), num_pref_test=1, num_test=1)
        processor = load_processor(checkpoint)
        examples = long_context_examples(data, args.records)
        dataset = PreferenceDataset(examples, processor, data / "image", 4096, load_family(checkpoint).inputs)
        items = [dataset[i] for i in range(len(dataset))]
        pad = processor.tokenizer.pad_token_id
        full_batch, shared_batch = PreferenceCollator(pad)(items), SharedPrefixCollator(pad)(items)
        lengths = [len(s["input_ids"]) for s in items[0]["sequences"]]
        answer = [sum(label != -100 for label in s["labels"]) for s in items[0]["sequences"]]
        policy = load_model(checkpoint).train()
        if args.memory_of == "shared":  # what the shared step holds: no reference model, cached log-probs
            reference, cached_reference = None, torch.zeros(len(items), 8)
        else:
            reference = load_model(checkpoint).eval()
            with torch.no_grad():
                cached_reference = batch_sequence_logps(reference, full_batch, 8, False)

        def upstream_step():
            with torch.no_grad():
                reference_logps = batch_sequence_logps(reference, full_batch, 8, False)
            losses, _ = mcmdpo_loss(batch_sequence_logps(policy, full_batch, 8, False), reference_logps, 0.1)
            losses.mean().backward()
            return losses.mean().item()

        def shared_step():
            losses, _ = mcmdpo_loss(shared_prefix_logps(policy, shared_batch), cached_reference, 0.1)
            losses.mean().backward()
            return losses.mean().item()

        if args.memory_of:  # a child process measuring one variant's memory, after a warm-up step
            step = upstream_step if args.memory_of == "upstream" else shared_step
            step()
            policy.zero_grad(set_to_none=True)
            print(peak_memory_mb(step))
            return 0

        def measure(step):
            policy.zero_grad(set_to_none=True)
            loss = step()
            grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
            times = []
            for _ in range(args.steps):
                policy.zero_grad(set_to_none=True)
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            policy.zero_grad(set_to_none=True)
            memory = peak_memory_mb(step) if torch.cuda.is_available() else None
            return statistics.median(times), loss, grads, memory

        up_s, up_loss, up_grads, up_mb = measure(upstream_step)
        sh_s, sh_loss, sh_grads, sh_mb = measure(shared_step)
        if up_mb is None:
            up_mb, sh_mb = memory_in_fresh_process("upstream", args), memory_in_fresh_process("shared", args)
        results = {
            "device": "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
            "records_per_step": args.records,
            "sequence_tokens": lengths,
            "answer_tokens": answer,
            "image_tokens": sum(1 for t in items[0]["sequences"][0]["input_ids"] if t == processor.image_token_id),
            "upstream_step_s": up_s,
            "shared_prefix_step_s": sh_s,
            "speedup": up_s / sh_s,
            "max_abs_loss_diff": abs(up_loss - sh_loss),
            "max_abs_grad_diff": max((up_grads[n] - sh_grads[n]).abs().max().item() for n in up_grads),
            "peak_memory_mb_upstream": up_mb,
            "peak_memory_mb_shared_prefix": sh_mb,
        }
    report(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
