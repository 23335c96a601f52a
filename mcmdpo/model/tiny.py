"""Write a tiny, randomly initialised checkpoint of any declared family that loads through the
Auto classes.

    python -m mcmdpo.model.tiny --output_dir DIR [--architecture NAME]
    python -m mcmdpo.model.tiny --like llava-v1.6-vicuna-7b --output_dir DIR

``NAME``: ``llava``, ``llava_next``, ``qwen2_5_vl``, ``qwen3_vl``, ``gemma3``, ``smolvlm``,
``llava_onevision``. The plain LLaVA kinds hold a byte-level BPE tokenizer trained offline on the
synthetic alt-text vocabulary, a small pad-to-square image processor and the Vicuna v1 chat
template: fast, for the demo and most tests. ``--like`` copies everything but the weights from a
published LLaVA checkpoint (:mod:`mcmdpo.model.published`: the real LLaMA-2 tokenizer, CLIP-L/336
at patch 14, the chat template). Every other family always copies its published checkpoint's
processor settings (patching, merge size, tiles, image token counts), chat template and, where a
registry package ships one, its real tokenizer (Qwen2.5, Qwen3, Gemma 3; LLaVA-OneVision's Qwen2
one is Qwen2.5's vocabulary with llava-hf's tokens; SmolVLM's SmolLM2 vocabulary is in no package,
so a BPE trained offline carries SmolVLM's real special tokens). Only the weights are tiny and
random. Nothing is downloaded from a model hub.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaImageProcessorPil,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaProcessor,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    AutoTokenizer,
)

from mcmdpo.data.conversation import end_of_turn_ids
from mcmdpo.data.synthetic import tokenizer_corpus
from mcmdpo.data.templates import vicuna_v1_chat_template
from mcmdpo.model.families import ARCHITECTURES
from mcmdpo.model.published import CLIP_MEAN, CLIP_STD, PADDED_VOCAB_SIZE, PUBLISHED, PublishedCheckpoint, write_tokenizer_files

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]


@dataclass
class TinyModelSpec:
    architecture: str = "llava"  # a family name of mcmdpo.model.families (llava: LLaVA-1.5, llava_next: LLaVA-1.6, ...)
    vocab_size: int = 1024
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    image_size: int = 32
    patch_size: int = 8
    max_position_embeddings: int = 2048
    seed: int = 0
    like: str = ""  # a key of PUBLISHED: its tokenizer, processor and chat template, tiny weights

    def __post_init__(self) -> None:
        if self.like:
            if self.like not in PUBLISHED:
                raise ValueError(f"--like must be one of {sorted(PUBLISHED)}, got {self.like!r}")
            published = PUBLISHED[self.like]
            if self.architecture not in ("llava", published.architecture):  # "llava" is the default
                raise ValueError(f"--like {self.like} is a {published.architecture} checkpoint, not {self.architecture}")
            self.architecture = published.architecture
            self.image_size, self.patch_size = published.image_size, published.patch_size
            self.max_position_embeddings = max(self.max_position_embeddings, 4096)
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; expected one of {ARCHITECTURES}")

    @property
    def published(self) -> PublishedCheckpoint | None:
        return PUBLISHED[self.like] if self.like else None


def train_bpe(vocab_size: int, special_tokens: list[str]) -> Tokenizer:
    """Byte-level BPE (never an unknown character) trained on the synthetic vocabulary, with
    ``special_tokens`` first."""
    backend = Tokenizer(models.BPE(unk_token=special_tokens[0]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    return backend


def build_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """The plain tiny LLaVA's tokenizer: :func:`train_bpe` with LLaMA's special tokens and a BOS."""
    backend = train_bpe(vocab_size, SPECIAL_TOKENS)
    bos_id = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        model_max_length=2048,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


def _grid_pinpoints(spec: TinyModelSpec) -> list[list[int]]:
    """LLaVA-1.6's tile layouts (1x2, 2x1, 2x2, 3x1, 1x3), scaled to the tiny image size."""
    if spec.published is not None:
        return [list(pair) for pair in spec.published.grid_pinpoints]
    side = spec.image_size
    return [[side, 2 * side], [2 * side, side], [2 * side, 2 * side], [3 * side, side], [side, 3 * side]]


def published_tokenizer(published: PublishedCheckpoint) -> PreTrainedTokenizerFast:
    """The published checkpoint's tokenizer, loaded from its files as transformers loads them."""
    with tempfile.TemporaryDirectory() as folder:
        write_tokenizer_files(folder, published)
        return AutoTokenizer.from_pretrained(folder)


def build_processor(spec: TinyModelSpec) -> LlavaProcessor | LlavaNextProcessor:
    published = spec.published
    tokenizer = published_tokenizer(published) if published else build_tokenizer(spec.vocab_size)
    # The plain tiny model's Vicuna v1 template has no system prompt: with a 30-token constant
    # prefix its 2 layers did not learn to read the context within the demo's SFT steps (held-out
    # context margin 0.002 against 0.76 without it, 300 steps).
    chat_template = published.chat_template if published else vicuna_v1_chat_template(system_prompt="")
    sizes = {
        "size": {"shortest_edge": spec.image_size},
        "crop_size": {"height": spec.image_size, "width": spec.image_size},
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
    }
    if spec.architecture == "llava_next":
        return LlavaNextProcessor(
            image_processor=LlavaNextImageProcessorPil(image_grid_pinpoints=_grid_pinpoints(spec), **sizes),
            tokenizer=tokenizer,
            patch_size=spec.patch_size,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=chat_template,
        )
    # The plain tiny model pads to a square with the mean colour (LLaVA's "pad"); llava-hf's
    # LLaVA-1.5 processor resizes and centre-crops (CLIP's own preprocessing).
    image_processor = LlavaImageProcessorPil(do_pad=published is None, **sizes)
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token, dropped by the "default" strategy
        chat_template=chat_template,
    )


def build_model(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    vision_config = CLIPVisionConfig(
        hidden_size=spec.vision_hidden_size,
        intermediate_size=spec.vision_intermediate_size,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden_size,
    )
    text_config = LlamaConfig(
        vocab_size=PADDED_VOCAB_SIZE if spec.published else len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    common = {
        "vision_config": vision_config,
        "text_config": text_config,
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -2,
        "projector_hidden_act": "gelu",
    }
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    torch.manual_seed(spec.seed)
    if spec.architecture == "llava_next":
        config = LlavaNextConfig(**common, image_token_index=image_token_id, image_grid_pinpoints=_grid_pinpoints(spec))
        model = LlavaNextForConditionalGeneration(config)
    else:
        model = LlavaForConditionalGeneration(LlavaConfig(**common, image_token_id=image_token_id))
    return model


def build_processor_and_model(spec: TinyModelSpec) -> tuple[Any, PreTrainedModel]:
    """The family's tiny recipe: its processor and a model with tiny random weights (seeded)."""
    from mcmdpo.model.tiny_families import RECIPES, seeded

    if spec.architecture in RECIPES:
        processor, model = seeded(RECIPES[spec.architecture], spec)
    else:
        processor = build_processor(spec)
        model = build_model(spec, processor.tokenizer)
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
    parser = argparse.ArgumentParser(prog="python -m mcmdpo.model.tiny", description="Write a tiny random checkpoint of a model family.")
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
