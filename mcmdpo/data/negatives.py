"""Negative contexts and images for MCM-DPO (design §1.2), each seeded per record so that a run
repeats exactly, without touching the global random state."""

from __future__ import annotations

import hashlib
import random
from functools import lru_cache

import torch
from PIL import Image

NEGATIVE_IMAGE_TYPES = ("diffusion", "black", "rotate", "crop", "random")
DIFFUSION_STEPS = 1000


def record_seed(seed: int, index: int, purpose: str) -> int:
    """A 63-bit seed for one record and one purpose, independent of every other pair."""
    digest = hashlib.sha256(f"{seed}:{index}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


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


def diffuse_pixels(pixel_values: torch.Tensor, step: int, seed: int) -> torch.Tensor:
    """Forward diffusion of the normalised pixel tensor: sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
    keep, noise_scale = diffusion_coefficients(step)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(pixel_values.shape, generator=generator, dtype=torch.float32).to(pixel_values.dtype)
    return keep * pixel_values + noise_scale * noise


def black_image(image: Image.Image) -> Image.Image:
    return Image.new("RGB", image.size, (0, 0, 0))


def rotated_image(image: Image.Image, seed: int) -> Image.Image:
    """Rotated by 10-80 degrees, either way; the corners are filled black."""
    rng = random.Random(seed)
    angle = rng.uniform(10, 80) * rng.choice((-1, 1))
    return image.rotate(angle, resample=Image.BILINEAR)


def cropped_image(image: Image.Image, seed: int) -> Image.Image:
    """A random crop keeping 30-70% of each side, so much of the content is lost."""
    rng = random.Random(seed)
    width = max(1, round(image.width * rng.uniform(0.3, 0.7)))
    height = max(1, round(image.height * rng.uniform(0.3, 0.7)))
    left = rng.randint(0, image.width - width)
    top = rng.randint(0, image.height - height)
    return image.crop((left, top, left + width, top + height))
