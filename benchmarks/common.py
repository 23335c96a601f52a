"""What the benchmarks share: a benchmark model with a 7B LLaVA's proportions, records with a real
token profile, and how results are reported.

The model (:data:`BENCH_SHAPE`) is small enough for a 2-core CPU yet spends its FLOPs where
LLaVA-1.5-7B does (``benchmarks/flops.py`` prints both): the decoder's MLP is 2.69x its hidden
size as LLaMA's, so attention projections are a third of the decoder; the output head is 2.6% of
the decoder (7B: 2.0%); the vision tower (CLIP's 336-pixel, 14-pixel-patch geometry, 577 tokens a
tile) costs 5-6% of what the language model spends on the image tokens (7B: 5-6%). The tiny
tokenizer is trained to the model's vocabulary (its synthetic corpus saturates at 642 tokens; a
larger vocabulary would be padded past that, as LLaVA pads LLaMA's 32000 to 32064). What cannot
match at this hidden size is the attention scores' share (see ``bench_mcmdpo_step.py``).

The records: the Vicuna v1 template with a 35-token system prompt (the real one is ~35 LLaMA
tokens; our small BPE splits it finer, so it is cut to 35 of ours), ~100-token contexts and
~30-token answers, as the Twitter and Pinterest records run; 1024x768 photos, which LLaVA-1.6's
anyres turns into 2x2 tiles plus the base image: 2,340 image tokens, against 576 under pad.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from flops import ModelShape, RecordShape
from PIL import Image

from mcmdpo.data.conversation import IGNORE_INDEX
from mcmdpo.data.loading import load_examples
from mcmdpo.data.records import PreferenceExample
from mcmdpo.data.synthetic import FILLERS, write_dataset
from mcmdpo.data.templates import VICUNA_V1_SYSTEM, vicuna_v1_chat_template
from mcmdpo.tiny.checkpoints import TinyModelSpec, build_processor_and_model

# Hidden 256 x 4 layers (a 2-core CPU runs the whole comparison in minutes): the head's 2% would
# need 0.24 x layers x hidden = 250 vocabulary rows, fewer than byte-level BPE's 256 bytes, so the
# tokenizer is trained to 320 (2.6%). The vision tower, 48 wide and 2 layers deep at CLIP's 577
# tokens a tile, costs 6% of the language model's work on the image tokens (the 7B: 5%).
BENCH_SHAPE = ModelShape(hidden=256, layers=4, intermediate=688, vocab=320,
                         vision_hidden=48, vision_layers=2, vision_intermediate=192, vision_tokens=577)
IMAGE_TOKENS = {576: "llava", 2340: "llava_next"}  # image tokens -> the architecture (and protocol) that gives them
PROTOCOL = {"llava": "pad", "llava_next": "anyres"}
SYSTEM_TOKENS, CONTEXT_TOKENS, ANSWER_TOKENS = 35, 100, 30
PHOTO_SIZE = (1024, 768)


def bench_spec(architecture: str, shape: ModelShape = BENCH_SHAPE) -> TinyModelSpec:
    """The tiny-checkpoint spec of ``shape`` (heads of 64, or one narrower head) at CLIP-336's geometry."""
    return TinyModelSpec(
        architecture=architecture, vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_layers=shape.layers, num_heads=max(1, shape.hidden // 64), vision_hidden_size=shape.vision_hidden,
        vision_intermediate_size=shape.vision_intermediate, vision_layers=shape.vision_layers,
        vision_heads=max(1, shape.vision_hidden // 64), image_size=336, patch_size=14, max_position_embeddings=4096,
    )


def fit_to_tokens(tokenizer: Any, text: str, tokens: int) -> str:
    """``text`` cut (by words) or lengthened (with the synthetic posts' filler words) to about
    ``tokens`` tokens of ``tokenizer``."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    pieces = text.split(" ")
    while len(pieces) > 1 and count(" ".join(pieces)) > tokens:
        pieces.pop()
    filler = itertools.cycle(" ".join(FILLERS).split())
    while count(" ".join(pieces)) < tokens:
        pieces.append(next(filler))
    return " ".join(pieces)


def write_bench_checkpoint(folder: str | Path, architecture: str, shape: ModelShape = BENCH_SHAPE) -> Path:
    """The benchmark model (random weights, seeded) with the plain tiny processor, its template's
    system prompt cut to 35 tokens and its vocabulary padded to ``shape.vocab``."""
    processor, model = build_processor_and_model(bench_spec(architecture, shape))
    system = fit_to_tokens(processor.tokenizer, VICUNA_V1_SYSTEM, SYSTEM_TOKENS)
    processor.chat_template = vicuna_v1_chat_template(system_prompt=system)
    if shape.vocab < len(processor.tokenizer):
        raise ValueError(f"a vocabulary of {shape.vocab} is smaller than the tokenizer's {len(processor.tokenizer)}")
    model.resize_token_embeddings(shape.vocab, mean_resizing=False)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)


def write_bench_data(folder: str | Path, tokenizer: Any, records: int) -> tuple[Path, Path]:
    """``records`` synthetic preference records with the real token profile and photo-sized
    images; returns (data file, image folder)."""
    folder = Path(folder)
    data = write_dataset(folder, num_sft=1, num_pref_train=max(2, records), num_pref_test=1, num_test=1)
    raw = json.loads((data / "pref_train.json").read_text())
    for record in raw:
        text = json.loads(record["text"])
        text["question"] = fit_to_tokens(tokenizer, text["question"], CONTEXT_TOKENS)
        for key in ("chosen", "rejected"):  # the end-of-turn token makes the answer's last
            text[key] = fit_to_tokens(tokenizer, text[key], ANSWER_TOKENS - 1)
        record["text"] = json.dumps(text)
        path = data / "image" / record["image"]["path"]
        Image.open(path).convert("RGB").resize(PHOTO_SIZE).save(path)
    path = data / "pref_bench.json"
    path.write_text(json.dumps(raw))
    return path, data / "image"


def bench_examples(data_path: Path, image_folder: Path) -> list[PreferenceExample]:
    return load_examples(data_path, "preference", image_folder, show_progress=False).examples


def record_shape(item: dict[str, Any], image_token_id: int, tiles: int) -> RecordShape:
    """The token profile of one dataset item (MCM-DPO's 8 sequences: c_w m_w y_w first) as
    :mod:`flops` counts it."""
    first = item["sequences"][0]
    answer_start = next(i for i, label in enumerate(first["labels"]) if label != IGNORE_INDEX)
    last_image = max(i for i, t in enumerate(first["input_ids"]) if t == image_token_id)
    image_tokens = first["input_ids"].count(image_token_id)
    answers = [sum(label != IGNORE_INDEX for label in s["labels"]) for s in item["sequences"]]
    prefix = last_image + 2  # the image and the newline after it
    return RecordShape(prefix=prefix, image_tokens=image_tokens, tiles=tiles, context=answer_start - prefix,
                       answer=round(sum(answers) / len(answers)))


def report(results: dict[str, Any], json_path: str | None, omit: tuple[str, ...] = ()) -> None:
    """Print the results (less ``omit``, e.g. what a table showed already) and write them all to ``json_path``."""
    print(json.dumps({k: v for k, v in results.items() if k not in omit}, indent=1))
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1) + "\n")


