"""One MCM-DPO training step at LLaVA-1.5-7B's real shape on one GPU: the plain step against the
packed one, activation checkpointing on, random bf16 weights (built on the GPU from a config:
nothing is downloaded). Run through ``benchmarks/gpu_check.sh``.

Vicuna-7B's shape (hidden 4096, 32 layers, MLP 11008, vocabulary 32000) on CLIP ViT-L/14-336
(576 image tokens), the repo's tiny tokenizer and processor (token ids fit any vocabulary) and
the benchmark records (35-token system prompt, ~100-token contexts, ~30-token answers). Reports
per attention implementation and step: step time (median after a warm-up), sequence tokens per
second (the tokens of the 8 sequences each record is scored on: the same work for both steps, so
the ratio is the speedup), ``torch.cuda.max_memory_allocated`` over the step (weights included;
"step" above what was held before it), and the loss difference between the two steps. sdpa runs
both steps; flash-attention 2 (where installed) the plain step only: the packed rows need a 4-D
attention mask, which its kernels do not take.

On a machine without CUDA the same code runs a tiny shape (hidden 64, 2 layers) in float32, in
seconds, so CI can check that the script works; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import bench_examples, fit_to_tokens, write_bench_data
from flops import LLAVA_7B, ModelShape
from memory import cuda_peak_mb
from step_variants import build_step, enable_checkpointing
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from mcmdpo.preference.dataset import PreferenceDataset
from mcmdpo.data.templates import VICUNA_V1_SYSTEM, vicuna_v1_chat_template
from mcmdpo.preference.layout import MCMDPO_LAYOUT
from mcmdpo.model.loading import load_family, load_processor
from mcmdpo.tiny import TinyModelSpec, write_tiny_checkpoint

TINY = ModelShape(hidden=64, layers=2, intermediate=172, vocab=1024, vision_hidden=32, vision_layers=2,
                  vision_intermediate=64, vision_tokens=577)
STEPS = ("plain", "packed")


def llava_config(shape: ModelShape, processor: Any) -> LlavaConfig:
    """LLaVA-1.5's architecture at ``shape``: CLIP at 336 pixels in 14-pixel patches, the
    second-to-last vision layer, a two-layer GELU projector, a LLaMA language model."""
    tokenizer = processor.tokenizer
    vision = CLIPVisionConfig(
        hidden_size=shape.vision_hidden, intermediate_size=shape.vision_intermediate, num_hidden_layers=shape.vision_layers,
        num_attention_heads=max(1, shape.vision_hidden // 64), image_size=336, patch_size=14, projection_dim=shape.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=max(shape.vocab, len(tokenizer)), hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=max(1, shape.hidden // 128), max_position_embeddings=4096,
        rms_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=processor.image_token_id, vision_feature_layer=-2,
                       vision_feature_select_strategy="default", projector_hidden_act="gelu")


def build_model(config: LlavaConfig, dtype: torch.dtype, device: str) -> LlavaForConditionalGeneration:
    """Random weights, initialised where they will live (a 7B never passes through host memory)."""
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.config.use_cache = False
    return model.train()


def prepare_items(folder: Path, records: int) -> tuple[Any, list[dict[str, Any]]]:
    """The tiny processor (336-pixel images: 576 image tokens) with the 35-token system prompt
    and ``records`` benchmark records, as dataset items."""
    checkpoint = write_tiny_checkpoint(folder / "processor", TinyModelSpec(image_size=336, patch_size=14))
    processor = load_processor(str(checkpoint))
    processor.chat_template = vicuna_v1_chat_template(system_prompt=fit_to_tokens(processor.tokenizer, VICUNA_V1_SYSTEM, 35))
    data, images = write_bench_data(folder / "data", processor.tokenizer, records)
    dataset = PreferenceDataset(bench_examples(data, images), processor, images, 8192, load_family(str(checkpoint)).inputs)
    return processor, [dataset[i] for i in range(records)]


def attentions_to_run(cuda: bool) -> list[str]:
    return ["sdpa"] + (["flash_attention_2"] if cuda and importlib.util.find_spec("flash_attn") else [])


def time_step(model: Any, step: Any, steps: int, cuda: bool) -> dict[str, float]:
    times, peaks = [], []
    model.zero_grad(set_to_none=True)
    losses = step()  # warm-up
    for _ in range(steps):
        model.zero_grad(set_to_none=True)

        def timed() -> None:
            start = time.perf_counter()
            step()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)

        if cuda:
            peaks.append(cuda_peak_mb(timed))
        else:
            timed()
    model.zero_grad(set_to_none=True)
    memory = {"step_gb": max(p[0] for p in peaks) / 1024, "total_gb": max(p[1] for p in peaks) / 1024} if cuda else {}
    return {"step_s": statistics.median(times), "loss": losses.mean().item(), **memory}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=None, help="records per step (default: 4 on a GPU, 1 on a CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps after one warm-up (default: 3 on a GPU, 1 on a CPU)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(1)  # a shared CI machine: no waiting on a descheduled second thread
    device, dtype, shape = ("cuda", torch.bfloat16, LLAVA_7B) if cuda else ("cpu", torch.float32, TINY)
    records, steps = args.records or (4 if cuda else 1), args.steps or (3 if cuda else 1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        processor, items = prepare_items(Path(tmp), records)
    model = build_model(llava_config(shape, processor), dtype, device)
    enable_checkpointing(model)
    parameters = sum(p.numel() for p in model.parameters())
    where = torch.cuda.get_device_name() if cuda else "CPU: a tiny shape to check the script runs; the figures mean nothing"
    print(f"{where}\nLLaVA-1.5 shape: hidden {shape.hidden}, {shape.layers} layers, vocabulary {model.config.text_config.vocab_size}, "
          f"vision {shape.vision_hidden} x {shape.vision_layers} layers; {parameters / 1e6:,.1f}M parameters, {dtype}, "
          f"activation checkpointing on; {records} record(s) per step, median of {steps} steps after a warm-up", flush=True)
    sequence_tokens = sum(len(s["input_ids"]) for item in items for s in item["sequences"])
    placeholder = torch.full((records, len(MCMDPO_LAYOUT.triples)), -100.0)
    rows, losses = [], {}
    for attention in attentions_to_run(cuda):
        try:
            model.set_attn_implementation(attention)
        except (ImportError, ValueError) as error:  # flash_attn present but not usable here
            rows.append((attention, "plain", 0, {"error": str(error).splitlines()[0]}))
            continue
        for name in STEPS if attention == "sdpa" else ("plain",):
            step = build_step(name, processor, items, model, cached=placeholder)
            row_tokens = step.batch["input_ids"].numel()
            result = time_step(model, step, steps, cuda)
            losses[attention, name] = result["loss"]
            rows.append((attention, name, row_tokens, result))
            del step
            if cuda:
                torch.cuda.empty_cache()
    if not cuda:
        note = "flash-attention 2 needs CUDA"
    elif "flash_attention_2" not in attentions_to_run(cuda):
        note = "flash-attention 2 not installed"
    else:
        note = "flash-attention 2: plain step only (the packed rows need a 4-D attention mask, which its kernels do not take)"
    print("\n| attention | step | tokens run / scored | s/step | scored tokens/s | max allocated GB (step) |\n|---|---|---|---|---|---|")
    for attention, name, row_tokens, r in rows:
        if "error" in r:
            print(f"| {attention} | {name} | not run: {r['error']} ||||")
            continue
        print(f"| {attention} | {name} | {row_tokens} / {sequence_tokens} | {r['step_s']:.3f} | {sequence_tokens / r['step_s']:.0f} | "
              + (f"{r['total_gb']:.1f} ({r['step_gb']:.1f}) |" if "total_gb" in r else "n/a on a CPU |"))
    plain, packed = losses.get(("sdpa", "plain")), losses.get(("sdpa", "packed"))
    speedup = next(r["step_s"] for a, n, _, r in rows if (a, n) == ("sdpa", "plain")) / next(
        r["step_s"] for a, n, _, r in rows if (a, n) == ("sdpa", "packed"))
    print(f"\npacked vs plain (sdpa): {speedup:.2f}x faster; |loss difference| {abs(plain - packed):.2e} ({dtype}); {note}. "
          f"{time.perf_counter() - started:.0f} s in all.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
