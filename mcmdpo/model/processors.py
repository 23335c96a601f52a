"""Processors without their video part.

transformers builds the processors of Qwen2.5-VL, Qwen3-VL and LLaVA-OneVision with a video
processor, and its video processors need torchvision, which has no CPU build on PyPI for the torch
this project pins (PyPI's wheel links CUDA). Only images go through this project, and nothing on
the image and text path of these processors touches the video processor, so where torchvision is
missing, or the checkpoint carries no video-processor config (our tiny checkpoints, and what is
trained from them), the processor is the same class with its video processor left out
(:func:`image_only`). A checkpoint that ships one loads as it ships where torchvision is installed.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import transformers
from transformers.utils import is_torchvision_available

PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


@lru_cache(maxsize=None)
def image_only(processor_class: type) -> type:
    """``processor_class`` without its video processor (same name, so a saved processor config
    still names the real class). Its ``__init__`` hands the sub-processors to ProcessorMixin
    positionally, which pairs them with the attributes this class declares. Its instances pickle
    (DataLoader workers started by spawn) by rebuilding the class from the real one."""
    attributes = [name for name in processor_class.get_attributes() if name != "video_processor"]
    return type(
        processor_class.__name__,
        (processor_class,),
        {
            "get_attributes": classmethod(lambda cls: list(attributes)),
            "__reduce__": lambda self: (_rebuild, (processor_class, self.__dict__)),
        },
    )


def _rebuild(processor_class: type, state: dict[str, Any]) -> Any:
    cls = image_only(processor_class)
    processor = cls.__new__(cls)
    processor.__dict__.update(state)
    return processor


def has_video_part(processor_class: type) -> bool:
    return "video_processor" in processor_class.get_attributes()


def ships_video_config(folder: str | Path) -> bool:
    """Whether a checkpoint folder carries a video-processor config."""
    folder = Path(folder)
    saved = folder / "processor_config.json"
    return (folder / "video_preprocessor_config.json").is_file() or (
        saved.is_file() and "video_processor" in json.loads(saved.read_text())
    )


def saved_processor_configs(folder: str | Path) -> Iterator[dict[str, Any]]:
    """The processor configs a checkpoint folder holds, in the order transformers reads them."""
    for name in PROCESSOR_FILES:
        path = Path(folder) / name
        if path.is_file():
            yield json.loads(path.read_text())


def recorded_processor_class(folder: str | Path) -> type | None:
    """The processor class a checkpoint folder names, if transformers has it."""
    for saved in saved_processor_configs(folder):
        recorded = saved.get("processor_class")
        if recorded and hasattr(transformers, recorded):
            return getattr(transformers, recorded)
    return None


def load_checkpoint_processor(folder: str | Path) -> Any:
    """``AutoProcessor.from_pretrained``, or the image-only processor where torchvision is missing
    or the checkpoint has no video-processor config."""
    processor_class = recorded_processor_class(folder)
    if processor_class is not None and has_video_part(processor_class):
        if not is_torchvision_available() or not ships_video_config(folder):
            return image_only(processor_class).from_pretrained(folder)
    return transformers.AutoProcessor.from_pretrained(folder)
