"""Processors without their video part.

transformers builds the processors of Qwen2.5-VL, Qwen3-VL and LLaVA-OneVision with a video
processor, and its video processors need torchvision, which has no CPU build on PyPI for the torch
this project pins (PyPI's wheel links CUDA). Only images go through this project, and nothing on
the image and text path of these processors touches the video processor, so where torchvision is
missing, or the checkpoint carries no video-processor config (our tiny checkpoints, and what is
trained from them), the processor is the same class with its video processor left out
(:func:`image_only`). A checkpoint that ships one loads as it ships where torchvision is installed.

Saving such a processor still writes the video processor's config
(``video_preprocessor_config.json``), so that what this project saves loads with plain
transformers (``AutoProcessor``, vLLM, the hub), which looks that config up before anything else:
the config the checkpoint was loaded with, carried along, or else one derived from the image
processor's settings (patching, merging, normalisation), the rest taken from the video processor
class's published defaults when transformers loads it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import transformers
from transformers.utils import is_torchvision_available

from mcmdpo.files import write_text_atomically

PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
VIDEO_CONFIG_FILE = "video_preprocessor_config.json"
# The image processor's settings a video processor of these families shares.
SHARED_WITH_VIDEO = (
    "patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std", "do_convert_rgb", "do_normalize",
    "do_rescale", "rescale_factor", "resample",
)


@lru_cache(maxsize=None)
def image_only(processor_class: type) -> type:
    """``processor_class`` without its video processor (same name, so a saved processor config
    still names the real class). Its ``__init__`` hands the sub-processors to ProcessorMixin
    positionally, which pairs them with the attributes this class declares. Its instances pickle
    (DataLoader workers started by spawn) by rebuilding the class from the real one."""
    attributes = [name for name in processor_class.get_attributes() if name != "video_processor"]

    def save_pretrained(self: Any, save_directory: str | Path, *args: Any, **kwargs: Any) -> Any:
        saved = processor_class.save_pretrained(self, save_directory, *args, **kwargs)
        video = getattr(self, "video_config", None) or derived_video_config(self.image_processor)
        write_text_atomically(Path(save_directory) / VIDEO_CONFIG_FILE, json.dumps(video, indent=2, sort_keys=True) + "\n")
        return saved

    return type(
        processor_class.__name__,
        (processor_class,),
        {
            "get_attributes": classmethod(lambda cls: list(attributes)),
            "save_pretrained": save_pretrained,
            "__reduce__": lambda self: (_rebuild, (processor_class, self.__dict__)),
        },
    )


def derived_video_config(image_processor: Any) -> dict[str, Any]:
    """A video processor config with the image processor's shared settings."""
    settings = image_processor.to_dict()
    return {key: settings[key] for key in SHARED_WITH_VIDEO if key in settings}


def carried_video_config(folder: str | Path) -> dict[str, Any] | None:
    """The video processor's config a checkpoint folder carries, where transformers looks for it
    first (nested in processor_config.json, then its own file); None where it has neither."""
    folder = Path(folder)
    saved = folder / "processor_config.json"
    if saved.is_file():
        nested = json.loads(saved.read_text()).get("video_processor")
        if nested:
            return nested
    own = folder / VIDEO_CONFIG_FILE
    return json.loads(own.read_text()) if own.is_file() else None


def _rebuild(processor_class: type, state: dict[str, Any]) -> Any:
    cls = image_only(processor_class)
    processor = cls.__new__(cls)
    processor.__dict__.update(state)
    return processor


def has_video_part(processor_class: type) -> bool:
    return "video_processor" in processor_class.get_attributes()


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
        video_config = carried_video_config(folder)
        if not is_torchvision_available() or video_config is None:
            processor = image_only(processor_class).from_pretrained(folder)
            processor.video_config = video_config  # saved again with the processor
            return processor
    return transformers.AutoProcessor.from_pretrained(folder)
