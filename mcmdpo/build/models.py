"""Local models as the builder runs them: where (the GPU of this process, else the CPU), in which
dtype, and a vision-language checkpoint loaded exactly as inference loads it
(:func:`mcmdpo.model.loading.load_checkpoint`, left padding for generation)."""

from __future__ import annotations

import os
from typing import Any

import torch

from mcmdpo.model.loading import LoadedCheckpoint, load_checkpoint


def device_of_process() -> str:
    """This process's GPU (LOCAL_RANK under torchrun), else the CPU."""
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    return "cpu"


def dtype_for(device: str, requested: str | None) -> str:
    """``requested``, else bfloat16 on a GPU and float32 on a CPU (as inference)."""
    return requested or ("bfloat16" if device.startswith("cuda") else "float32")


def load_generator(path: str, dtype: str | None, image_aspect_ratio: str = "auto", conversation_template: str = "auto",
                   device: str | None = None) -> tuple[LoadedCheckpoint, Any]:
    """A vision-language checkpoint ready to generate, and its model on this process's device."""
    device = device or device_of_process()
    checkpoint = load_checkpoint(path, image_aspect_ratio=image_aspect_ratio, conversation_template=conversation_template,
                                 padding_side="left", dtype=dtype_for(device, dtype))
    return checkpoint, checkpoint.model.to(device).eval()
