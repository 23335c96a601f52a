"""Benchmark: one MCM-DPO training step three ways, side by side, with the FLOP ratios they should
show at the benchmark model's shape and at the real 7B shape.

    python benchmarks/bench_mcmdpo_step.py [--json OUT]        # everything: ~11 min on one core
    python benchmarks/bench_mcmdpo_step.py --image_tokens 576 --checkpointing on --steps 2   # ~1 min

Steps (``benchmarks/step_variants.py``): ``upstream`` (16 full sequences per record: 8 policy with
backward, 8 live reference without), ``plain`` (8 policy sequences, cached reference),
``packed`` (2 prefix-tree rows per record, cached reference: the default). (The KV-cache
shared-prefix step it replaced was measured beside them at commit bdc9657, then removed: the packed
step beat it everywhere; the README keeps those figures.) Each with activation
checkpointing on and off (non-reentrant, inputs requiring grad, as training sets it), at 576 image
tokens (LLaVA-1.5 architecture, pad protocol) and 2,340 (LLaVA-1.6, anyres: 1024x768 photos, 2x2
tiles and the base image), one record per step (``--records``): the median of ``--steps`` (5)
timed steps after one warm-up, each variant in a process of its own (memory).

The model (``benchmarks/common.py``) has the 7B's FLOP proportions at hidden size 256 and 4
layers, in bf16, except one: attention scores grow with tokens / hidden size, so at 576 image
tokens they are 25% of the decoder's FLOPs here against 1.5% at the 7B's hidden size 4096 (82%
against 5% at 2,340). That favours the upstream-style and plain steps (a tree row is longer than a
sequence and its mask has no causal half to skip): ``flop_ratio_bench`` is the ratio this model
should show, ``flop_ratio_7b`` the one the 7B would (``benchmarks/flops.py``);
``benchmarks/gpu_check.sh`` measures the real shape on a GPU.

Time: on CUDA the wall time; on a CPU the process CPU time of the step with one thread
(``--threads``). The CPU this was written on is shared with test runs: with two threads every
parallel operator waits for the other thread to be scheduled again (milliseconds each, so step
times follow the operator count, not the work), while one thread's CPU time is the work done
whatever else runs (the wall time is reported beside it).

Memory (``benchmarks/memory.py``): on CUDA the step's peak ``max_memory_allocated`` above what was
allocated before it; on a CPU the profiler's allocator-level peak of live tensors (the figure a GPU
allocator would need) and the peak resident-set growth of the first step (what the process took
from the machine: the C allocator's cached blocks, oneDNN's scratch buffers and untouched pages
make it differ), both measured on the warm-up step. The cached steps' reference log-probs are
placeholders there (their values change no work; computing them would run a pass before the
measured one). ``held_mb``: the weights the step keeps (policy, and for upstream the reference).

Exactness, in float32 at 576 image tokens with checkpointing on: the packed step against the
upstream-style step's policy half on the same batch with the same reference log-probs (the
reference's weights perturbed, so the loss is not log 2): ``max_abs_loss_diff`` (per-record
losses) and ``max_abs_grad_diff`` (every parameter), beside ``max_abs_grad``.

``--json OUT`` writes ``speedup`` and ``peak_memory_ratio`` (allocator level; ``peak_rss_ratio``
beside it) of the packed step against the upstream-style one at 576 image tokens, checkpointing on,
the exactness figures and every variant's. Goals (issue 11): speedup >= 3.5, memory ratio <= 0.5.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from common import BENCH_SHAPE, IMAGE_TOKENS, PROTOCOL, bench_examples, record_shape, report, write_bench_checkpoint, write_bench_data
from flops import LLAVA_7B, RecordShape, llava_7b_record, shares, step_flops
from memory import allocator_peak_mb, cuda_peak_mb, peak_rss_growth_mb
from step_variants import VARIANTS, build_step, enable_checkpointing, upstream_logps

from mcmdpo.preference.dataset import PreferenceDataset
from mcmdpo.preference.layout import MCMDPO_LAYOUT
from mcmdpo.model.loading import load_family, load_model, load_processor

DEFAULT_TOKENS, DEFAULT_CHECKPOINTING = 576, "on"


@dataclass
class Setting:
    """One image-token count: its checkpoint, data and token profile."""

    image_tokens: int
    checkpoint: str
    data: str
    images: str
    record: RecordShape

    def paths(self) -> dict[str, Any]:
        """What a child process needs to rebuild the batch (JSON)."""
        return {k: v for k, v in asdict(self).items() if k != "record"}


def load_items(setting: dict[str, Any], records: int) -> tuple[Any, list[dict[str, Any]]]:
    protocol = PROTOCOL[IMAGE_TOKENS[setting["image_tokens"]]]
    processor = load_processor(setting["checkpoint"], image_aspect_ratio=protocol)
    examples = bench_examples(Path(setting["data"]), Path(setting["images"]))
    inputs = load_family(setting["checkpoint"], protocol).inputs
    dataset = PreferenceDataset(examples, processor, setting["images"], 8192, inputs, layout=MCMDPO_LAYOUT)
    return processor, [dataset[i] for i in range(records)]


def prepare(folder: Path, image_tokens: int, records: int) -> Setting:
    architecture = IMAGE_TOKENS[image_tokens]
    checkpoint = write_bench_checkpoint(folder / "model", architecture)
    processor = load_processor(str(checkpoint), image_aspect_ratio=PROTOCOL[architecture])
    data, images = write_bench_data(folder / "data", processor.tokenizer, records)
    setting = {"image_tokens": image_tokens, "checkpoint": str(checkpoint), "data": str(data), "images": str(images)}
    processor, (item,) = load_items(setting, 1)
    pixels = item["sequences"][0]["pixel_values"]
    tiles = pixels.shape[1] if pixels.dim() == 5 else 1  # LLaVA-NeXT: [images, tiles, 3, H, W]
    record = record_shape(item, processor.image_token_id, tiles)
    if record.image_tokens != image_tokens:
        raise RuntimeError(f"the {architecture} benchmark records have {record.image_tokens} image tokens, not {image_tokens}")
    return Setting(**setting, record=record)


def load_policy(setting: dict[str, Any], dtype: str, device: str) -> torch.nn.Module:
    protocol = PROTOCOL[IMAGE_TOKENS[setting["image_tokens"]]]
    model = load_model(setting["checkpoint"], dtype, image_aspect_ratio=protocol).to(device)
    model.config.use_cache = False
    return model


def held_mb(*models: torch.nn.Module | None) -> float:
    return sum(p.numel() * p.element_size() for m in models if m is not None for p in m.parameters()) / 2**20


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Child process: time and measure one variant."""
    torch.manual_seed(0)
    torch.set_num_threads(spec["threads"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    processor, items = load_items(spec["setting"], spec["records"])
    policy = load_policy(spec["setting"], spec["dtype"], device).train()
    if spec["checkpointing"]:
        enable_checkpointing(policy)
    reference = None
    if spec["variant"] == "upstream":
        reference = load_policy(spec["setting"], spec["dtype"], device).eval().requires_grad_(False)
    # Placeholder reference log-probs for the cached steps: their values change no work, and
    # computing real ones here would run a pass before the measured ones (the exactness check
    # uses real ones).
    placeholder = torch.full((len(items), len(MCMDPO_LAYOUT.triples)), -100.0)
    step = build_step(spec["variant"], processor, items, policy, reference, placeholder)
    times: list[float] = []
    cpu_times: list[float] = []

    def timed() -> None:
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)

    result: dict[str, Any] = {"held_mb": held_mb(policy, reference)}
    policy.zero_grad(set_to_none=True)
    if device == "cuda":
        step()  # the warm-up
    else:
        # The warm-up, under the profiler (live tensor bytes), and the resident set it adds: the
        # first step from the loaded model (later ones reuse what the C allocator kept). The
        # profiler's own records are a few MB.
        peaks: list[float] = []
        result["peak_rss_growth_mb"] = peak_rss_growth_mb(lambda: peaks.append(allocator_peak_mb(step)))
        result["peak_allocated_mb"] = peaks[0]
    cuda_peaks = []
    for _ in range(spec["steps"]):
        policy.zero_grad(set_to_none=True)
        if device == "cuda":
            cuda_peaks.append(cuda_peak_mb(timed))
        else:
            timed()
    # On a CPU the step's time is its process CPU time: with one thread it is the work done, and
    # other processes on the machine do not add to it as they add to the wall time.
    result.update(step_s=statistics.median(times if device == "cuda" else cpu_times), wall_s=statistics.median(times),
                  wall_times_s=times, cpu_times_s=cpu_times)
    if device == "cuda":
        result.update(peak_allocated_mb=max(p[0] for p in cuda_peaks), peak_allocated_total_mb=max(p[1] for p in cuda_peaks))
    return result


def exactness(spec: dict[str, Any]) -> dict[str, Any]:
    """Child process: the packed step against the upstream-style step's policy half, float32."""
    torch.manual_seed(0)
    torch.set_num_threads(spec["threads"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    processor, items = load_items(spec["setting"], spec["records"])
    policy = load_policy(spec["setting"], "float32", device).train()
    if spec["checkpointing"]:
        enable_checkpointing(policy)
    reference = load_policy(spec["setting"], "float32", device).eval().requires_grad_(False)
    with torch.no_grad():  # a reference that differs from the policy, as after SFT
        for parameter in reference.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01 * parameter.std().nan_to_num())
    runs = {}
    for variant in ("upstream", "packed"):
        step = build_step(variant, processor, items, policy, reference)
        if variant == "upstream":
            with torch.no_grad():
                cached = upstream_logps(reference, step.batch).float()
        else:
            step.cached = cached
        policy.zero_grad(set_to_none=True)
        losses = step()
        runs[variant] = losses, {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    (up_losses, up_grads), (packed_losses, packed_grads) = runs["upstream"], runs["packed"]
    if up_grads.keys() != packed_grads.keys():
        raise RuntimeError("the two steps give gradients to different parameters")
    return {
        "loss": up_losses.mean().item(),
        "max_abs_loss_diff": (up_losses - packed_losses).abs().max().item(),
        "max_abs_grad_diff": max((up_grads[n] - packed_grads[n]).abs().max().item() for n in up_grads),
        "max_abs_grad": max(g.abs().max().item() for g in up_grads.values()),
    }


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` measured in a fresh process (each variant's memory on its own)."""
    command = [sys.executable, __file__, "--child", json.dumps(spec)]
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode:
        raise RuntimeError(f"{spec.get('variant', 'exactness')} failed:\n{completed.stderr[-3000:]}")
    return {**json.loads(completed.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - start}


def analytic(record: RecordShape, variant: str, checkpointing: bool) -> tuple[float, float]:
    """(upstream / variant FLOPs at the benchmark shape, as run here: every batch carries an
    attention mask, so sdpa computes full squares; the same at the 7B shape with causal kernels)."""
    seven_b = llava_7b_record(record.image_tokens, record.tiles)
    return tuple(
        step_flops(shape, rec, "upstream", checkpointing, attention) / step_flops(shape, rec, variant, checkpointing, attention)
        for shape, rec, attention in ((BENCH_SHAPE, record, "dense"), (LLAVA_7B, seven_b, "causal"))
    )


def add_ratios(rows: list[dict[str, Any]], records: dict[int, RecordShape]) -> None:
    """Speedup, memory ratios and FLOP ratios of each row against the upstream-style row of the
    same image tokens and checkpointing."""
    for row in rows:
        if "step_s" not in row:
            continue
        upstream = next((r for r in rows if r["variant"] == "upstream" and "step_s" in r
                         and (r["image_tokens"], r["checkpointing"]) == (row["image_tokens"], row["checkpointing"])), None)
        row["flop_ratio_bench"], row["flop_ratio_7b"] = analytic(records[row["image_tokens"]], row["variant"], row["checkpointing"])
        if upstream is not None:
            row["speedup"] = upstream["step_s"] / row["step_s"]
            for key in ("peak_allocated_mb", "peak_rss_growth_mb"):
                if key in row and key in upstream:
                    row[key.replace("_mb", "_ratio")] = row[key] / upstream[key]


def _with_ratio(row: dict[str, Any], key: str) -> str:
    if key not in row:
        return "-"
    ratio = row.get(key.replace("_mb", "_ratio"))
    return f"{row[key]:.0f}" + (f" ({ratio:.2f})" if ratio is not None else "")


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n| image tokens | checkpointing | step | s/step (wall) | speedup | FLOP ratio bench / 7B | peak allocated MB (ratio) "
          "| peak RSS growth MB (ratio) | held MB |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        head = f"| {r['image_tokens']} | {'on' if r['checkpointing'] else 'off'} | {r['variant']}"
        print(f"{head} | {r['step_s']:.2f} ({r['wall_s']:.2f}) | {r.get('speedup', float('nan')):.2f}x "
              f"| {r['flop_ratio_bench']:.2f} / {r['flop_ratio_7b']:.2f} | {_with_ratio(r, 'peak_allocated_mb')} "
              f"| {_with_ratio(r, 'peak_rss_growth_mb')} | {r['held_mb']:.0f} |")


def print_shares(records: dict[int, RecordShape]) -> dict[str, Any]:
    """Where a full sequence's forward FLOPs go, benchmark model beside the 7B."""
    out = {}
    for tokens, record in records.items():
        bench, seven_b = shares(BENCH_SHAPE, record), shares(LLAVA_7B, llava_7b_record(tokens, record.tiles))
        print(f"\nFLOP shares, {tokens} image tokens ({record}):")
        for name in bench:
            print(f"  {name}: benchmark {bench[name]:.3f}, 7B {seven_b[name]:.3f}")
        out[str(tokens)] = {"benchmark": bench, "7b": seven_b, "record": asdict(record)}
    return out


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--image_tokens", type=int, nargs="+", choices=sorted(IMAGE_TOKENS), default=sorted(IMAGE_TOKENS))
    parser.add_argument("--checkpointing", nargs="+", choices=("on", "off"), default=["on", "off"])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--records", type=int, default=1, help="records per step")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant, after one warm-up")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per step (1: timings robust to other processes on the machine; see the docstring)")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="weights and compute of the timed steps")
    parser.add_argument("--exactness", choices=("on", "off"), default="on", help="the float32 packed-vs-upstream check")
    parser.add_argument("--table", default=None, metavar="JSON", help="print the table of an earlier run's --json output and stop")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.table:
        retable(args.table, args.json)
        return 0
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(exactness(spec) if spec.get("exactness") else measure(spec)))
        return 0
    started, load_before = time.perf_counter(), os.getloadavg()
    rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
        "dtype": args.dtype, "threads": args.threads, "records_per_step": args.records, "timed_steps": args.steps,
        "model": asdict(BENCH_SHAPE),
    }
    with tempfile.TemporaryDirectory() as tmp:
        settings = {tokens: prepare(Path(tmp) / str(tokens), tokens, args.records) for tokens in args.image_tokens}
        results["flop_shares"] = print_shares({tokens: setting.record for tokens, setting in settings.items()})
        for tokens, setting in settings.items():
            for checkpointing in (c == "on" for c in args.checkpointing):
                for variant in args.variants:
                    row = {"image_tokens": tokens, "checkpointing": checkpointing, "variant": variant}
                    spec = {**row, "setting": setting.paths(), "records": args.records, "steps": args.steps, "dtype": args.dtype,
                            "threads": args.threads}
                    row.update(run_child(spec))
                    print(f"{tokens} image tokens, checkpointing {'on' if checkpointing else 'off'}, {variant}: "
                          f"{row['step_s']:.2f} s/step", flush=True)
                    rows.append(row)
        if args.exactness == "on" and DEFAULT_TOKENS in settings:
            results.update(run_child({"exactness": True, "setting": settings[DEFAULT_TOKENS].paths(), "records": args.records,
                                      "checkpointing": DEFAULT_CHECKPOINTING in args.checkpointing, "threads": args.threads}))
    add_ratios(rows, {tokens: setting.record for tokens, setting in settings.items()})
    summarise(results, rows)
    results.update(wall_s=time.perf_counter() - started, load_average_before=load_before, load_average_after=os.getloadavg())
    print_table(rows)
    report(results, args.json, omit=("variants", "flop_shares"))
    return 0


def summarise(results: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """The headline figures (packed against upstream-style at the default settings) and every row."""
    default = next((r for r in rows if (r["variant"], r["image_tokens"], r["checkpointing"]) == ("packed", DEFAULT_TOKENS, True)), {})
    for key, source in (("speedup", "speedup"), ("peak_memory_ratio", "peak_allocated_ratio"), ("peak_rss_ratio", "peak_rss_growth_ratio")):
        if source in default:
            results[key] = default[source]
    results["variants"] = rows


def retable(path: str, json_path: str | None) -> None:
    """The table of an earlier run's results, its FLOP ratios counted again by this code."""
    results = json.loads(Path(path).read_text())
    records = {int(tokens): RecordShape(**shares["record"]) for tokens, shares in results["flop_shares"].items()}
    results["flop_shares"] = print_shares(records)
    rows = [{k: v for k, v in row.items() if not k.startswith("flop_ratio")} for row in results["variants"]]
    add_ratios(rows, records)
    summarise(results, rows)
    print_table(rows)
    report(results, json_path, omit=("variants", "flop_shares"))


if __name__ == "__main__":
    sys.exit(main())
