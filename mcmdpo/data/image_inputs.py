"""One image as a model takes it: the processor's tensors for it and the text its placeholder
becomes, through transformers' unified processor API (``processor(text, images)`` with
``return_text_replacement_offsets``), so every family's own patching, tiling and token expansion is
used as is and nothing here knows a model by name.

What differs between families and cannot be read from the processor is declared once per family
(:class:`ImageInputs`, held by :mod:`mcmdpo.model.families`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image


@dataclass(frozen=True)
class ImageInputs:
    """How a family's processor hands one image to its model.

    ``keys``: the processor outputs that ride along with the pixels (``pixel_values`` and, e.g.,
    ``image_sizes``, ``image_grid_thw``, ``pixel_attention_mask``); each has the image (or its
    patches) as its first dimension, so a batch concatenates them. ``token_type_key``: the
    text-side input that flags image tokens, where the model needs it (Qwen's 3-D positions,
    Gemma's bidirectional image attention). ``zero_image_is_padding``: the model
    drops an all-zero image as batch padding (Idefics3 / SmolVLM), so a blank negative cannot be
    exact zeros."""

    keys: tuple[str, ...] = ("pixel_values",)
    token_type_key: str | None = None
    zero_image_is_padding: bool = False


def frames_per_patch(processor: Any) -> int:
    """How many identical frames each patch of the pixel tensor holds ([3 channels, frames, ...]:
    Qwen's temporal patches, an image being a one-frame video), 1 for plain images."""
    return int(getattr(processor.image_processor, "temporal_patch_size", None) or 1)


@dataclass
class EncodedImage:
    """The model inputs of one image (``tensors``, each with the image as first dimension) and the
    text its placeholder expands into (``replacement``)."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    replacement: str = ""

    def with_pixels(self, pixel_values: torch.Tensor) -> "EncodedImage":
        return EncodedImage({**self.tensors, "pixel_values": pixel_values}, self.replacement)


def encode_image(processor: Any, image: Image.Image, inputs: ImageInputs) -> EncodedImage:
    """What the processor makes of ``image`` when it meets the image placeholder in a text."""
    encoded = processor(
        text=[processor.image_token], images=[image.convert("RGB")], return_text_replacement_offsets=True, return_tensors="pt"
    )
    missing = [key for key in inputs.keys if key not in encoded]
    if missing:
        raise ValueError(f"{type(processor).__name__} gives no {missing} for an image; the model family declares them")
    (replacement,) = encoded["text_replacement_offsets"][0]
    return EncodedImage({key: torch.as_tensor(encoded[key]) for key in inputs.keys}, replacement["replacement"])


def mean_colour_image(processor: Any, size: tuple[int, int]) -> Image.Image:
    """An image of (height, width) in the processor's mean colour (the colour LLaVA pads with)."""
    mean_colour = tuple(round(x * 255) for x in processor.image_processor.image_mean)
    height, width = size
    return Image.new("RGB", (width, height), mean_colour)


def image_replacement(processor: Any, size: tuple[int, int], inputs: ImageInputs) -> str:
    """The text the placeholder becomes for an image of (height, width): every family here
    expands by the image's size alone, so a blank image of that size stands in for it."""
    return encode_image(processor, mean_colour_image(processor, size), inputs).replacement


def replacement_ids(processor: Any, replacement: str) -> list[int]:
    """Token ids of an image's replacement text on its own (no BOS)."""
    return processor.tokenizer(replacement, add_special_tokens=False)["input_ids"]


def concat_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along the first dimension, zero-padding the others where they differ (LLaVA-NeXT
    and OneVision give each image its own number of tiles, SmolVLM its own number of crops; the
    models read the true counts from ``image_sizes`` / ``pixel_attention_mask``)."""
    if all(t.shape[1:] == tensors[0].shape[1:] for t in tensors):
        return torch.cat(tensors)
    trailing = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    padded = []
    for tensor in tensors:
        out = tensor.new_zeros((tensor.shape[0], *trailing))
        out[(slice(None), *(slice(0, n) for n in tensor.shape[1:]))] = tensor
        padded.append(out)
    return torch.cat(padded)
