"""Write a tiny, randomly initialised checkpoint of any declared family that loads through the
Auto classes.

    python -m mcmdpo.tiny --output_dir DIR [--architecture NAME]
    python -m mcmdpo.tiny --like llava-v1.6-vicuna-7b --output_dir DIR

``NAME``: ``llava``, ``llava_next``, ``qwen2_5_vl``, ``qwen3_vl``, ``gemma3``, ``smolvlm``,
``llava_onevision``. The plain LLaVA kinds hold a byte-level BPE tokenizer trained offline on the
synthetic alt-text vocabulary, a small pad-to-square image processor and the Vicuna v1 chat
template: fast, for the demo and most tests. ``--like`` copies everything but the weights from a
published LLaVA checkpoint (:mod:`mcmdpo.tiny.published`: the real LLaMA-2 tokenizer, CLIP-L/336
at patch 14, the chat template). Every other family always copies its published checkpoint's
processor settings (patching, merge size, tiles, image token counts), chat template and, where a
registry package ships one, its real tokenizer (Qwen2.5, Qwen3, Gemma 3; LLaVA-OneVision's Qwen2
one is Qwen2.5's vocabulary with llava-hf's tokens; SmolVLM's SmolLM2 vocabulary is in no package,
so a BPE trained offline carries SmolVLM's real special tokens). Only the weights are tiny and
random. Nothing is downloaded from a model hub.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from mcmdpo.data.conversation import end_of_turn_ids
from mcmdpo.model.families import ARCHITECTURES
from mcmdpo.tiny.family_recipes import RECIPES, seeded
from mcmdpo.tiny.published import PUBLISHED, write_tokenizer_files
from mcmdpo.tiny.spec import TinyModelSpec


def build_processor_and_model(spec: TinyModelSpec) -> tuple[Any, PreTrainedModel]:
    """The family's tiny recipe: its processor and a model with tiny random weights (seeded)."""
    processor, model = seeded(RECIPES[spec.architecture], spec)
    # Generation stops where the chat template closes an answer, as the published
    # generation configs say (e.g. Qwen's [<|im_end|>, <|endoftext|>]).
    tokenizer = processor.tokenizer
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = end_of_turn_ids(processor)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return processor, model


def write_tiny_checkpoint(output_dir: str | Path, spec: TinyModelSpec | None = None) -> Path:
    """Build and save a complete tiny checkpoint (model + processor) in ``output_dir``."""
    spec = spec or TinyModelSpec()
    output_dir = Path(output_dir)
    processor, model = build_processor_and_model(spec)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    if spec.published is not None:
        # save_pretrained writes transformers' own layout; keep the files as the checkpoint ships them.
        write_tokenizer_files(output_dir, spec.published)
    return output_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mcmdpo.tiny", description="Write a tiny random checkpoint of a model family.")
    parser.add_argument("--output_dir", required=True)
    for name, default in asdict(TinyModelSpec()).items():
        choices = {"architecture": ARCHITECTURES, "like": ["", *PUBLISHED]}.get(name)
        help_text = {
            "like": "copy tokenizer, processor and chat template from this published LLaVA checkpoint",
            "image_size": "plain llava / llava_next only (every other family has its published image settings)",
            "patch_size": "plain llava / llava_next only",
            "vocab_size": "trained tokenizers only (plain llava / llava_next, smolvlm)",
        }.get(name)
        parser.add_argument(f"--{name}", type=type(default), default=default, choices=choices, help=help_text)
    args = vars(parser.parse_args(argv))
    output_dir = args.pop("output_dir")
    spec = TinyModelSpec(**args)
    path = write_tiny_checkpoint(output_dir, spec)
    print(f"tiny {spec.architecture} checkpoint written to {path}")


if __name__ == "__main__":
    main()
