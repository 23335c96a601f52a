"""Loading any LLaVA-family checkpoint in Hugging Face format through the Auto classes, under the
image protocol the run asks for.

Image protocols (``--image_aspect_ratio``, upstream's name):
- ``pad`` (LLaVA's, and the original MCM-DPO recipe's, also for LLaVA-1.6): pad the image to a
  square with the processor's mean colour, resize to one 336 tile, 576 image tokens. The original
  runs a LLaVA-1.6 checkpoint this way as the LLaVA-1.5 architecture (vision tower -> projector ->
  576 tokens, no ``image_newline``), so a LLaVA-NeXT checkpoint is loaded here as
  ``LlavaForConditionalGeneration`` and saved as one: the saved checkpoint then runs the same
  protocol under plain transformers too. Its ``image_newline`` is not used by this protocol and
  is not kept.
- ``anyres``: the checkpoint's own processor and architecture (LLaVA-1.6's tiles, LLaVA-1.5's
  centre crop as llava-hf ships it).
- ``auto``: what the checkpoint records (our checkpoints write ``image_aspect_ratio`` into
  config.json, as the original does, and into the processor's image-processor config), else
  ``pad`` for LLaVA checkpoints and ``anyres`` (the checkpoint's own processor) for every other
  family (:mod:`mcmdpo.model.families`).

:func:`load_checkpoint` is the one way in: it reads the config once and returns the processor,
the family, the resolved protocol and (unless deferred) the model. Which architecture runs under
``pad`` is the family's declaration (``pad_family``), not a branch on a model type here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaImageProcessorPil,
    LlavaProcessor,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.utils import logging as hf_logging

from mcmdpo.data.templates import apply_template
from mcmdpo.model.families import BY_NAME, ModelFamily, UnsupportedModelError, family_for
from mcmdpo.model.processors import PROCESSOR_FILES, load_checkpoint_processor, saved_processor_configs

logger = logging.getLogger("mcmdpo.model")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read: a missing folder, a hub name offline, damaged files."""


DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPES |= {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # the original scripts' spellings
IMAGE_ASPECT_RATIOS = ("auto", "pad", "anyres")
PROTOCOLS = IMAGE_ASPECT_RATIOS[1:]  # what "auto" resolves to


def base_of(model_name_or_path: str) -> str:
    """The full checkpoint a LoRA adapter folder sits on, or the path itself."""
    adapter = Path(model_name_or_path) / "adapter_config.json"
    if adapter.is_file():
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if not base:
            raise CheckpointError(f"{adapter} names no base_model_name_or_path: cannot tell which model the adapters belong to")
        return base
    return model_name_or_path


def _read_config(model_name_or_path: str) -> PretrainedConfig:
    try:
        config = AutoConfig.from_pretrained(base_of(model_name_or_path))
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"cannot read the checkpoint {model_name_or_path} (its config.json): {error}") from error
    try:
        family_for(config)
    except UnsupportedModelError as error:
        raise CheckpointError(f"{model_name_or_path}: {error}") from error
    return config


def _recorded_in_processor(model_name_or_path: str) -> str | None:
    for saved in saved_processor_configs(model_name_or_path):
        saved = saved.get("image_processor", saved)
        if saved.get("image_aspect_ratio") in PROTOCOLS:
            return saved["image_aspect_ratio"]
    return None


def resolve_image_aspect_ratio(model_name_or_path: str, requested: str = "auto", config: PretrainedConfig | None = None) -> str:
    """``pad`` or ``anyres`` for a checkpoint (see the module docstring); ``config``: its config,
    when the caller has read it already."""
    if requested not in IMAGE_ASPECT_RATIOS:
        raise ValueError(f"--image_aspect_ratio must be one of {IMAGE_ASPECT_RATIOS}, got {requested!r}")
    config = config or _read_config(model_name_or_path)
    is_llava = family_for(config).pad_protocol
    if requested == "pad" and not is_llava:
        raise CheckpointError(
            f"--image_aspect_ratio pad is LLaVA's protocol; {model_name_or_path} is a {config.model_type} checkpoint: use anyres or auto"
        )
    if requested != "auto":
        return requested
    recorded = _recorded_in_processor(model_name_or_path) or getattr(config, "image_aspect_ratio", None)
    if recorded in PROTOCOLS:
        return recorded
    return "pad" if is_llava else "anyres"


def family_under(config: PretrainedConfig, protocol: str) -> ModelFamily:
    """The family a checkpoint runs as under a resolved image protocol (under pad, its family's
    ``pad_family``: a LLaVA-1.6 checkpoint runs as LLaVA-1.5)."""
    family = family_for(config)
    return BY_NAME[family.pad_family] if protocol == "pad" else family


def pad_processor(processor: Any) -> LlavaProcessor:
    """LLaVA's pad protocol on a LLaVA-1.5 or LLaVA-1.6 processor: pad to a square with the mean
    colour (as the original's ``expand2square``), resize the short side to the crop size and take
    one tile, CLIP's normalisation; the text side expands ``<image>`` to one tile's tokens."""
    source = processor.image_processor
    crop = dict(getattr(source, "crop_size", None) or {})
    side = crop.get("height") or source.size.get("shortest_edge") or source.size["height"]
    image_processor = LlavaImageProcessorPil(
        do_pad=True,
        do_resize=True,
        size={"shortest_edge": side},
        do_center_crop=True,
        crop_size={"height": side, "width": side},
        resample=source.resample,
        do_rescale=True,
        rescale_factor=source.rescale_factor,
        do_normalize=True,
        image_mean=list(source.image_mean),
        image_std=list(source.image_std),
        do_convert_rgb=True,
    )
    image_processor.image_aspect_ratio = "pad"
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=processor.tokenizer,
        patch_size=processor.patch_size,
        vision_feature_select_strategy=processor.vision_feature_select_strategy,
        num_additional_image_tokens=processor.num_additional_image_tokens,
        chat_template=processor.chat_template,
    )


def _load_processor(
    model_name_or_path: str, config: PretrainedConfig, protocol: str, padding_side: str, conversation_template: str
) -> Any:
    """The checkpoint's processor (tokenizer, image processor, chat template) under a resolved
    image protocol and the requested conversation template (:mod:`mcmdpo.data.templates`)."""
    # A LoRA adapter folder saved without its processor uses its base model's.
    source = model_name_or_path if any((Path(model_name_or_path) / name).is_file() for name in PROCESSOR_FILES) else base_of(model_name_or_path)
    try:
        processor = load_checkpoint_processor(source)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot load a processor from {model_name_or_path}: {error}") from error
    if protocol == "pad":
        processor = pad_processor(processor)
    else:
        processor.image_processor.image_aspect_ratio = protocol
    tokenizer = processor.tokenizer
    if tokenizer.pad_token is None:
        # Vicuna-based checkpoints may ship without a pad token; padding is masked anyway.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    tokenizer.padding_side = padding_side
    try:
        return apply_template(processor, conversation_template, family_for(config).conversation_template)
    except ValueError as error:
        raise CheckpointError(f"{model_name_or_path}: {error}") from error


def llava_config_from_next(config: PretrainedConfig) -> LlavaConfig:
    """The LLaVA-1.5 architecture a LLaVA-NeXT checkpoint is under the pad protocol: the same
    vision tower, projector and language model, one tile, no image_newline."""
    return LlavaConfig(
        vision_config=config.vision_config,
        text_config=config.text_config,
        image_token_id=config.image_token_id,
        projector_hidden_act=config.projector_hidden_act,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        vision_feature_layer=config.vision_feature_layer,
        multimodal_projector_bias=getattr(config, "multimodal_projector_bias", True),
        tie_word_embeddings=getattr(config, "tie_word_embeddings", False),
    )


def _load_as_llava(base: str, config: PretrainedConfig, kwargs: dict[str, Any]) -> PreTrainedModel:
    """A LLaVA-NeXT checkpoint as the LLaVA-1.5 architecture (the pad protocol). Its
    image_newline is left out on purpose; any other weight that does not load is an error."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # transformers would report image_newline as unexpected
    try:
        model, info = LlavaForConditionalGeneration.from_pretrained(
            base, config=llava_config_from_next(config), output_loading_info=True, **kwargs
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    unexpected = [key for key in info["unexpected_keys"] if not key.endswith("image_newline")]
    if info["missing_keys"] or unexpected:
        raise CheckpointError(
            f"{base} does not load as LLaVA-1.5 under the pad protocol: missing {info['missing_keys']}, unexpected {unexpected}"
        )
    logger.info("%s: LLaVA-1.6 under the pad protocol runs as the LLaVA-1.5 architecture (one tile, no image_newline)", base)
    return model


# How a checkpoint is loaded as another family's architecture (its family's pad_family under pad).
ARCHITECTURE_CONVERSIONS = {"llava": _load_as_llava}


def _load_model(
    model_name_or_path: str,
    config: PretrainedConfig,
    protocol: str,
    dtype: str = "float32",
    attn_implementation: str | None = None,
    quantization_config: Any = None,
) -> PreTrainedModel:
    """A LLaVA (1.5), LLaVA-NeXT (1.6) or other image-text-to-text checkpoint with all its weights
    (a trained vision tower included), or a LoRA adapter folder merged into its base, under a
    resolved image protocol. The protocol is written into the config, so a saved checkpoint records it."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    base = base_of(model_name_or_path)
    runs_as = family_under(config, protocol)
    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype]}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    try:
        if runs_as is not family_for(config):
            model = ARCHITECTURE_CONVERSIONS[runs_as.name](base, config, kwargs)
        else:
            model = AutoModelForImageTextToText.from_pretrained(base, **kwargs)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot load a model from {base}: {error}") from error
    model.config.image_aspect_ratio = protocol
    if base != model_name_or_path:
        from peft import PeftModel

        # Merged: a plain model, whether it is then evaluated, used as a reference, or trained on
        # (a second LoRA on top of unmerged adapters would save neither properly).
        model = PeftModel.from_pretrained(model, model_name_or_path).merge_and_unload()
        model.config.image_aspect_ratio = protocol
    return model


@dataclass
class LoadedCheckpoint:
    """A checkpoint as a run uses it: its config (read once), the image protocol it resolved to,
    the family it runs as under that protocol, its processor, and its model (None until
    :meth:`load_model`, for callers that check their data before any weights load)."""

    path: str
    config: PretrainedConfig
    protocol: str
    family: ModelFamily
    processor: Any
    model: PreTrainedModel | None = None

    def load_model(
        self, dtype: str = "float32", attn_implementation: str | None = None, quantization_config: Any = None
    ) -> PreTrainedModel:
        """Load (again) the checkpoint's weights under the resolved protocol."""
        self.model = _load_model(self.path, self.config, self.protocol, dtype, attn_implementation, quantization_config)
        return self.model

    def load_processor(self, padding_side: str = "right", conversation_template: str = "auto") -> Any:
        """Another copy of the processor (e.g. a left-padding one for generation beside a
        right-padding one for scoring)."""
        return _load_processor(self.path, self.config, self.protocol, padding_side, conversation_template)


def load_checkpoint(
    model_name_or_path: str | Path,
    *,
    image_aspect_ratio: str = "auto",
    conversation_template: str = "auto",
    padding_side: str = "right",
    dtype: str | None = "float32",
    attn_implementation: str | None = None,
    quantization_config: Any = None,
) -> LoadedCheckpoint:
    """A checkpoint (a folder, a hub name or a LoRA adapter folder) under the requested image
    protocol and conversation template: processor, family and protocol, and the model in ``dtype``
    (``dtype=None``: the model is not loaded yet; :meth:`LoadedCheckpoint.load_model` loads it)."""
    path = str(model_name_or_path)
    config = _read_config(path)
    protocol = resolve_image_aspect_ratio(path, image_aspect_ratio, config)
    checkpoint = LoadedCheckpoint(
        path, config, protocol, family_under(config, protocol), _load_processor(path, config, protocol, padding_side, conversation_template)
    )
    if dtype is not None:
        checkpoint.load_model(dtype, attn_implementation, quantization_config)
    return checkpoint


def load_processor(
    model_name_or_path: str, padding_side: str = "right", image_aspect_ratio: str = "auto", conversation_template: str = "auto"
) -> Any:
    """The checkpoint's processor alone (tests, the benchmarks and the data validator use it)."""
    return load_checkpoint(
        model_name_or_path, image_aspect_ratio=image_aspect_ratio, conversation_template=conversation_template,
        padding_side=padding_side, dtype=None,
    ).processor


def load_family(model_name_or_path: str, image_aspect_ratio: str = "auto") -> ModelFamily:
    """The family a checkpoint runs as under the requested image protocol."""
    config = _read_config(model_name_or_path)
    return family_under(config, resolve_image_aspect_ratio(model_name_or_path, image_aspect_ratio, config))


def load_model(
    model_name_or_path: str,
    dtype: str = "float32",
    attn_implementation: str | None = None,
    image_aspect_ratio: str = "auto",
    quantization_config: Any = None,
) -> PreTrainedModel:
    """The checkpoint's model alone, under the requested image protocol."""
    config = _read_config(model_name_or_path)
    protocol = resolve_image_aspect_ratio(model_name_or_path, image_aspect_ratio, config)
    return _load_model(model_name_or_path, config, protocol, dtype, attn_implementation, quantization_config)
