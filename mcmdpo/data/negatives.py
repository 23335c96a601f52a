"""Negative contexts and images for MCM-DPO, each seeded per record so that a run
repeats exactly, without touching the global random state."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from PIL import Image

DIFFUSION_STEPS = 1000


@dataclass(frozen=True)
class NegativeImageType:
    """One way of making m_l: whether it is drawn at random (so anew each epoch, unless fixed),
    whether it is another record's image, and which :class:`NegativeConfig` fields it reads."""

    name: str
    drawn_at_random: bool = False
    from_other_record: bool = False
    parameters: tuple[str, ...] = ()


# The original's --negative_image choices.
NEGATIVE_IMAGES = {
    kind.name: kind
    for kind in (
        NegativeImageType("diffusion", drawn_at_random=True, parameters=("diffusion_step",)),
        NegativeImageType("black"),
        NegativeImageType("rotate", drawn_at_random=True),
        NegativeImageType("crop", drawn_at_random=True),
        NegativeImageType("random", from_other_record=True),
    )
}
NEGATIVE_IMAGE_TYPES = tuple(NEGATIVE_IMAGES)


@dataclass(frozen=True)
class NegativeConfig:
    """How negatives are made. ``seed`` seeds every record's choices; with
    ``fixed`` the random negative images (diffusion, rotate, crop) are drawn once for the run,
    otherwise anew every epoch as the original draws them (seeded by seed, record and epoch)."""

    image_type: str = "diffusion"
    diffusion_step: int = 700
    seed: int = 0
    fixed: bool = False

    def __post_init__(self) -> None:
        if self.image_type not in NEGATIVE_IMAGES:
            raise ValueError(f"negative image type must be one of {NEGATIVE_IMAGE_TYPES}, got {self.image_type!r}")
        if self.image_type == "diffusion" and not 0 <= self.diffusion_step < DIFFUSION_STEPS:
            raise ValueError(f"diffusion step must be in [0, {DIFFUSION_STEPS}), got {self.diffusion_step}")

    @property
    def kind(self) -> NegativeImageType:
        return NEGATIVE_IMAGES[self.image_type]

    @property
    def redrawn_each_epoch(self) -> bool:
        return not self.fixed and self.kind.drawn_at_random

    def key_fields(self, uses_negative_context: bool, uses_negative_image: bool) -> dict[str, Any]:
        """The fields the sequences depend on (a reference-cache key): the image settings only
        when a negative image is scored, and of those only the ones its type reads."""
        fields: dict[str, Any] = {}
        if uses_negative_image:
            fields["image_type"] = self.image_type
            fields.update({name: getattr(self, name) for name in self.kind.parameters})
            if self.kind.drawn_at_random:
                fields["fixed"] = self.fixed
        if uses_negative_context or (uses_negative_image and (self.kind.drawn_at_random or self.kind.from_other_record)):
            fields["seed"] = self.seed
        return fields


def record_seed(seed: int, index: int, purpose: str) -> int:
    """A 63-bit seed for one record and one purpose, independent of every other pair."""
    digest = hashlib.sha256(f"{seed}:{index}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def negative_image_seed(seed: int, index: int, epoch: int | None) -> int:
    """Seed of record ``index``'s random negative image: per epoch, or once for the run (None)."""
    return record_seed(seed, index, "image" if epoch is None else f"image@epoch{epoch}")


def other_index(seed: int, index: int, count: int, purpose: str) -> int:
    """Another record of the file than ``index``, chosen at random (seeded per record)."""
    if count < 2:
        raise ValueError("negatives taken from other records need at least two records")
    choice = random.Random(record_seed(seed, index, purpose)).randrange(count - 1)
    return choice if choice < index else choice + 1


@lru_cache(maxsize=None)
def diffusion_coefficients(step: int, num_steps: int = DIFFUSION_STEPS) -> tuple[float, float]:
    """(sqrt(abar_t), sqrt(1 - abar_t)) of a sigmoid beta schedule from 1e-5 to 5e-3."""
    if not 0 <= step < num_steps:
        raise ValueError(f"diffusion step must be in [0, {num_steps}), got {step}")
    betas = torch.sigmoid(torch.linspace(-6, 6, num_steps, dtype=torch.float64)) * (5e-3 - 1e-5) + 1e-5
    alpha_bar = torch.cumprod(1 - betas, dim=0)[step]
    return float(alpha_bar.sqrt()), float((1 - alpha_bar).sqrt())


def diffuse_pixels(pixel_values: torch.Tensor, step: int, seed: int, frames_per_patch: int = 1) -> torch.Tensor:
    """Forward diffusion of the normalised pixel tensor: sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,
    eps i.i.d. standard normal per pixel and channel. Where each patch holds its pixels over
    ``frames_per_patch`` identical frames (rows of [3, frames, ...], Qwen's temporal patches), a
    pixel's noise is drawn once and repeated over the frames: the same law as on a plain image."""
    keep, noise_scale = diffusion_coefficients(step)
    generator = torch.Generator().manual_seed(seed)
    if frames_per_patch == 1:
        noise = torch.randn(pixel_values.shape, generator=generator, dtype=torch.float32)
    else:
        patches = pixel_values.reshape(pixel_values.shape[0], 3, frames_per_patch, -1)
        noise = torch.randn((patches.shape[0], 3, 1, patches.shape[-1]), generator=generator, dtype=torch.float32)
        noise = noise.expand(patches.shape).reshape(pixel_values.shape)
    return keep * pixel_values + noise_scale * noise.to(pixel_values.dtype)


def black_pixels(pixel_values: torch.Tensor) -> torch.Tensor:
    """The original's "black" image: zeros of the *normalised* tensor, which is the processor's
    mean colour (a mid grey), not black pixels."""
    return torch.zeros_like(pixel_values)


def rotated_image(image: Image.Image, seed: int) -> Image.Image:
    """As torchvision's ``RandomRotation(degrees=(10, 80))`` in the original: an angle drawn
    uniformly in [10, 80], counter-clockwise, nearest neighbour, same size, corners filled black."""
    angle = random.Random(seed).uniform(10, 80)
    return image.rotate(angle, resample=Image.NEAREST, expand=False, fillcolor=(0, 0, 0))


CROP_HEIGHT, CROP_WIDTH = 320, 240


def crop_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) of the original's crop window: at most 320 tall and 240 wide (its
    ``RandomCrop`` gets its height and width names swapped, which yields this window)."""
    return min(height, CROP_HEIGHT), min(width, CROP_WIDTH)


def cropped_image(image: Image.Image, seed: int) -> Image.Image:
    """A window of :func:`crop_size` at a random position (torchvision's ``RandomCrop`` in the
    original, never padded)."""
    height, width = crop_size(image.height, image.width)
    rng = random.Random(seed)
    top = rng.randint(0, image.height - height)
    left = rng.randint(0, image.width - width)
    return image.crop((left, top, left + width, top + height))
