"""The model-family layer: one short declaration per family of image-text-to-text checkpoints.

A declaration says what cannot be read off the checkpoint or its processor:
- where the vision encoder and the projector are (module paths under the model; everything else
  is the language model), which drives freezing per paradigm, LoRA targets, component learning
  rates and what stays unquantised;
- which processor outputs ride along with the pixels, which text-side flags the model needs, and
  whether it drops an all-zero image as padding (:class:`~mcmdpo.data.image_inputs.ImageInputs`);
- the conversation template it is trained with by default (LLaVA's Vicuna v1, as the original
  recipe, or the checkpoint's own chat template), and which architecture a checkpoint runs as
  under LLaVA's pad protocol, where that protocol applies;
- how its language model attends and places tokens where that differs from a causal decoder with
  linear positions (Gemma 3's image tokens see their whole image; Qwen's rotary positions are
  3-D over the image grid): the tree-packed preference scoring rebuilds both for each sequence.

Nothing outside :mod:`mcmdpo.model` branches on a model type or on an input's key name: it reads
these fields.

What the processor already knows is taken from it, not declared again: how many tokens an image
becomes (the processor's own placeholder expansion, transformers' unified processor API), the end
of an answer's turn (the special token its chat template closes an answer with), and how many
frames a patch repeats (Qwen's ``temporal_patch_size``).

Adding a family: one :class:`ModelFamily` here, one tiny recipe in
:mod:`mcmdpo.tiny.family_recipes`; the shared test matrix (``tests/test_families.py``) then runs
every capability on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from mcmdpo.data.image_inputs import ImageInputs

COMPONENTS = ("vision_tower", "projector", "language_model")
IMAGE_ATTENTION = ("causal", "bidirectional")
POSITIONS = ("linear", "multimodal_rope")


@dataclass(frozen=True)
class ModelFamily:
    name: str  # the --architecture name of its tiny checkpoints
    model_types: tuple[str, ...]  # config.model_type values it covers
    vision_encoder: tuple[str, ...]  # module paths, e.g. "model.vision_tower"
    projector: tuple[str, ...]
    inputs: ImageInputs = ImageInputs()
    conversation_template: str = "checkpoint"  # the default of --conversation_template auto
    # The family a checkpoint runs as under LLaVA's --image_aspect_ratio pad (None: pad does not
    # apply). LLaVA-1.6 runs as LLaVA-1.5 there, as the original trains it: one tile, no image_newline.
    pad_family: str | None = None
    # causal, or bidirectional: image tokens (flagged under inputs.token_type_key) also attend to
    # every token of their own image (Gemma 3).
    image_attention: str = "causal"
    # linear (position = index in the sequence), or multimodal_rope: the model derives 3-D
    # (time, height, width) rotary positions from the image-token flags and image grids with
    # its own get_rope_index (Qwen2.5-VL, Qwen3-VL).
    positions: str = "linear"

    def __post_init__(self) -> None:
        if self.image_attention not in IMAGE_ATTENTION or self.positions not in POSITIONS:
            raise ValueError(f"{self.name}: image_attention must be one of {IMAGE_ATTENTION}, positions one of {POSITIONS}")
        if (self.image_attention != "causal" or self.positions != "linear") and not self.inputs.token_type_key:
            raise ValueError(f"{self.name}: its image attention or positions read the image-token flags: declare inputs.token_type_key")

    @property
    def pad_protocol(self) -> bool:
        """LLaVA's --image_aspect_ratio pad applies to this family's checkpoints."""
        return self.pad_family is not None

    @cached_property
    def _component_patterns(self) -> list[tuple[str, re.Pattern[str]]]:
        # A path matches as whole dotted segments anywhere in a name, so PEFT's and DeepSpeed's
        # prefixes ("base_model.model.", "module.") and modules_to_save copies still match.
        def pattern(paths: tuple[str, ...]) -> re.Pattern[str]:
            return re.compile(r"(^|\.)(" + "|".join(re.escape(path) for path in paths) + r")(\.|$)")

        return [("vision_tower", pattern(self.vision_encoder)), ("projector", pattern(self.projector))]

    def component_of(self, name: str) -> str:
        """The component a parameter or module belongs to, from its name."""
        for component, pattern in self._component_patterns:
            if pattern.search(name):
                return component
        return "language_model"

    def module_names(self, component: str) -> tuple[str, ...]:
        """The declared module paths of the vision tower or the projector."""
        return {"vision_tower": self.vision_encoder, "projector": self.projector}[component]


_LLAVA = dict(vision_encoder=("model.vision_tower",), projector=("model.multi_modal_projector", "model.image_newline"))

FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily("llava", ("llava",), **_LLAVA, conversation_template="vicuna_v1", pad_family="llava"),
    ModelFamily(
        "llava_next", ("llava_next",), **_LLAVA, inputs=ImageInputs(("pixel_values", "image_sizes")),
        conversation_template="vicuna_v1", pad_family="llava",
    ),
    ModelFamily("llava_onevision", ("llava_onevision",), **_LLAVA, inputs=ImageInputs(("pixel_values", "image_sizes"))),
    ModelFamily(
        "qwen2_5_vl", ("qwen2_5_vl",),
        vision_encoder=("model.visual.patch_embed", "model.visual.blocks"),
        projector=("model.visual.merger",),
        inputs=ImageInputs(("pixel_values", "image_grid_thw"), token_type_key="mm_token_type_ids"), positions="multimodal_rope",
    ),
    ModelFamily(
        "qwen3_vl", ("qwen3_vl",),
        vision_encoder=("model.visual.patch_embed", "model.visual.pos_embed", "model.visual.blocks"),
        projector=("model.visual.merger", "model.visual.deepstack_merger_list"),
        inputs=ImageInputs(("pixel_values", "image_grid_thw"), token_type_key="mm_token_type_ids"), positions="multimodal_rope",
    ),
    ModelFamily(
        "gemma3", ("gemma3",),
        vision_encoder=("model.vision_tower",), projector=("model.multi_modal_projector",),
        inputs=ImageInputs(("pixel_values",), token_type_key="token_type_ids"), image_attention="bidirectional",
    ),
    ModelFamily(
        "smolvlm", ("idefics3",),  # SmolVLM-256M/500M/2B ship as Idefics3; SmolVLM2 ("smolvlm") is untested, so not declared
        vision_encoder=("model.vision_model",), projector=("model.connector",),
        inputs=ImageInputs(("pixel_values", "pixel_attention_mask"), zero_image_is_padding=True),
    ),
)
BY_NAME = {family.name: family for family in FAMILIES}
ARCHITECTURES = tuple(BY_NAME)


class UnsupportedModelError(ValueError):
    """A checkpoint of a model type no family declares."""


def family_for(config_or_model_type: Any) -> ModelFamily:
    """The family of a config (or a model type name)."""
    model_type = config_or_model_type if isinstance(config_or_model_type, str) else config_or_model_type.model_type
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    supported = sorted(t for family in FAMILIES for t in family.model_types)
    raise UnsupportedModelError(f"no model family declares model_type {model_type!r}; supported: {supported}")


def unwrap_model(model: Any) -> Any:
    """The transformers model inside DeepSpeed's engine and PEFT's wrapper, where present."""
    inner = getattr(model, "module", model)  # DeepSpeed engine
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # PEFT


def family_of_model(model: Any) -> ModelFamily:
    """The family of a model, through DeepSpeed's and PEFT's wrappers."""
    return family_for(unwrap_model(model).config)
