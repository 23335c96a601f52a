"""The tiny recipe of LLaVA-1.5 and LLaVA-1.6 (``llava``, ``llava_next``): the plain kinds carry
a BPE tokenizer trained on the synthetic vocabulary and a small pad-to-square image processor;
with ``--like`` the published checkpoint's tokenizer, processor and chat template."""

from __future__ import annotations

import tempfile
from typing import Any

import torch
from transformers import (
    AutoTokenizer,
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
)

from mcmdpo.data.templates import vicuna_v1_chat_template
from mcmdpo.tiny.bpe import build_tokenizer
from mcmdpo.tiny.published import CLIP_MEAN, CLIP_STD, PADDED_VOCAB_SIZE, PublishedCheckpoint, write_tokenizer_files
from mcmdpo.tiny.spec import TinyModelSpec


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


def llava_processor(spec: TinyModelSpec) -> LlavaProcessor | LlavaNextProcessor:
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


def llava_model(spec: TinyModelSpec, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
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


def llava(spec: TinyModelSpec) -> tuple[Any, PreTrainedModel]:
    processor = llava_processor(spec)
    return processor, llava_model(spec, processor.tokenizer)
