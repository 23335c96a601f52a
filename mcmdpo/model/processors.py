"""Processors on machines without torchvision.

transformers builds the processors of Qwen2.5-VL, Qwen3-VL and LLaVA-OneVision with a video
processor, and its video processors need torchvision, which has no CPU build on PyPI for the torch
this project pins (PyPI's wheel links CUDA). Only images go through this project, and nothing on
the image and text path of these processors touches the video processor, so on such machines the
processor is the same class with its video processor left out (:func:`image_only`). With
torchvision installed (any GPU machine) the checkpoint's processor loads as it ships.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import transformers
from transformers.utils import is_torchvision_available

PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


@lru_cache(maxsize=None)
def image_only(processor_class: type) -> type:
    """``processor_class`` without its video processor (same name, so a saved processor config
    still names the real class). Its ``__init__`` hands the sub-processors to ProcessorMixin
    positionally, which pairs them with the attributes this class declares."""
    attributes = [name for name in processor_class.get_attributes() if name != "video_processor"]
    return type(processor_class.__name__, (processor_class,), {"get_attributes": classmethod(lambda cls: list(attributes))})


def needs_image_only(processor_class: type) -> bool:
    return not is_torchvision_available() and "video_processor" in processor_class.get_attributes()


def for_this_machine(processor_class: type) -> type:
    """The class to build a processor with here (:func:`image_only` where it has to be)."""
    return image_only(processor_class) if needs_image_only(processor_class) else processor_class


def recorded_processor_class(folder: str | Path) -> type | None:
    """The processor class a checkpoint folder names, if transformers has it."""
    for name in PROCESSOR_FILES:
        path = Path(folder) / name
        if path.is_file():
            recorded = json.loads(path.read_text()).get("processor_class")
            if recorded and hasattr(transformers, recorded):
                return getattr(transformers, recorded)
    return None


def load_checkpoint_processor(folder: str | Path) -> Any:
    """``AutoProcessor.from_pretrained``, or the image-only processor where torchvision is missing."""
    processor_class = recorded_processor_class(folder)
    if processor_class is not None and needs_image_only(processor_class):
        return image_only(processor_class).from_pretrained(folder)
    return transformers.AutoProcessor.from_pretrained(folder)
