"""Loading any LLaVA-family checkpoint in Hugging Face format through the Auto classes."""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel

class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read: a missing folder, a hub name offline, damaged files."""


DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_processor(model_name_or_path: str, padding_side: str = "right") -> Any:
    """The checkpoint's processor (tokenizer + image processor + chat template)."""
    try:
        processor = AutoProcessor.from_pretrained(model_name_or_path)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot load a processor from {model_name_or_path}: {error}") from error
    tokenizer = processor.tokenizer
    if tokenizer.pad_token is None:
        # Vicuna-based checkpoints may ship without a pad token; padding is masked anyway.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    tokenizer.padding_side = padding_side
    if getattr(processor, "chat_template", None) is None:
        from mcmdpo.model.chat_template import VICUNA_V1_CHAT_TEMPLATE

        processor.chat_template = VICUNA_V1_CHAT_TEMPLATE
    return processor


def load_model(model_name_or_path: str, dtype: str = "float32", attn_implementation: str | None = None) -> PreTrainedModel:
    """A LLaVA (1.5), LLaVA-NeXT (1.6) or other image-text-to-text checkpoint, with all its
    weights, a trained vision tower included."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype]}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        return AutoModelForImageTextToText.from_pretrained(model_name_or_path, **kwargs)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot load a model from {model_name_or_path}: {error}") from error
