"""Checkpoints in the original LLaVA code's format, as this project's Hugging Face layout.

    python -m mcmdpo.model.convert --from llava SRC --output_dir DST [--vision_tower CLIP] [--base_model LLM]

SRC is what the original code (LLaVA, and MCM-DPO built on it) saves: a ``LlavaLlamaForCausalLM``
config whose ``mm_*`` fields describe the vision side, the language model's weights under
``model.*`` and ``lm_head``, the projector under ``model.mm_projector.*``, and, where the run
trained the vision tower, its weights under ``model.vision_tower.vision_tower.*``; or a
pre-training stage's folder holding only ``mm_projector.bin`` (then ``--base_model`` is the
language model it sits on). The vision tower's config and image processor (and its weights, where
SRC has none) come from ``--vision_tower``, a local CLIP checkpoint, or from the folder the
config's ``mm_vision_tower`` names when that is a local path (nothing is downloaded).

The original names are renamed to the names transformers saves LLaVA under
(:data:`ORIGINAL_TO_SAVED`); transformers' own conversion mapping then loads those into its
current modules, and any weight missing or left over is an error naming it. The image protocol
(``pad`` or ``anyres``, the config's ``image_aspect_ratio``) and the conversation template (the
original's ``conv_vicuna_v1``) are recorded in the saved processor, so training, inference and the
app run the converted checkpoint as the original ran it. Under ``pad`` a LLaVA-1.6 checkpoint
becomes the LLaVA-1.5 architecture it runs as (its ``image_newline`` unused and left out)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import (
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    LlavaProcessor,
    PreTrainedModel,
)

from mcmdpo.data.templates import apply_template
from mcmdpo.model.loading import pad_processor

ORIGINAL_ARCHITECTURE = "LlavaLlamaForCausalLM"
IMAGE_TOKEN = "<image>"
# Original name (a regular expression) -> the name transformers saves a LLaVA checkpoint under.
ORIGINAL_TO_SAVED = [
    (r"^model\.mm_projector\.0\.", "multi_modal_projector.linear_1."),
    (r"^model\.mm_projector\.2\.", "multi_modal_projector.linear_2."),
    (r"^model\.vision_tower\.vision_tower\.", "vision_tower."),
    (r"^model\.image_newline$", "image_newline"),
    (r"^model\.", "language_model.model."),
    (r"^lm_head\.", "language_model.lm_head."),
]
# The model's own (loaded) names -> the original's, to name a weight in an error as the source does.
CURRENT_TO_ORIGINAL = [
    (r"^model\.multi_modal_projector\.linear_1\.", "model.mm_projector.0."),
    (r"^model\.multi_modal_projector\.linear_2\.", "model.mm_projector.2."),
    (r"^model\.vision_tower\.", "model.vision_tower.vision_tower."),
    (r"^model\.image_newline$", "model.image_newline"),
    (r"^model\.language_model\.", "model."),
]
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PROJECTOR_ONLY = "mm_projector.bin"


class ConversionError(ValueError):
    """A source that is not an original-format checkpoint this converter can turn into ours."""


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder: safetensors or PyTorch files, sharded (an index) or not."""
    for name in WEIGHT_FILES:
        index = folder / f"{name}.index.json"
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else [name]
        if all((folder / file).is_file() for file in files):
            state: dict[str, torch.Tensor] = {}
            for file in files:
                path = folder / file
                state.update(load_file(path) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu", weights_only=True))
            return state
    raise ConversionError(f"{folder}: no weights ({', '.join(WEIGHT_FILES)}, or their sharded index)")


def saved_name(original: str) -> str:
    for pattern, replacement in ORIGINAL_TO_SAVED:
        if re.search(pattern, original):
            return re.sub(pattern, replacement, original)
    return original  # left over: reported by the load as unexpected


def original_name(current: str) -> str:
    for pattern, replacement in CURRENT_TO_ORIGINAL:
        if re.search(pattern, current):
            return re.sub(pattern, replacement, current)
    return current


def original_config(source: Path) -> dict[str, Any]:
    path = source / "config.json"
    if not path.is_file():
        raise ConversionError(f"{source}: no config.json")
    config = json.loads(path.read_text())
    if ORIGINAL_ARCHITECTURE not in config.get("architectures", []) and not any(key.startswith("mm_") for key in config):
        raise ConversionError(f"{path}: architectures {config.get('architectures')} and no mm_* field: not an original LLaVA "
                              f"checkpoint ({ORIGINAL_ARCHITECTURE})")
    for key, allowed in (("mm_projector_type", ("mlp2x_gelu",)), ("mm_vision_select_feature", ("patch", "cls_patch"))):
        if config.get(key, allowed[0]) not in allowed:
            raise ConversionError(f"{path}: {key} {config[key]!r} has no transformers LLaVA equivalent (expected {' or '.join(allowed)})")
    return config


def vision_tower_folder(config: dict[str, Any], requested: str | None, source: Path) -> Path:
    named = requested or config.get("mm_vision_tower") or config.get("vision_tower")
    if named and Path(named).is_dir():
        return Path(named)
    raise ConversionError(f"{source / 'config.json'}: mm_vision_tower {named!r} is not a local folder; pass --vision_tower, a local "
                          "CLIP checkpoint (its config.json and preprocessor_config.json)")


def language_config(config: dict[str, Any], vocab_size: int) -> LlamaConfig:
    """The LLaMA config the original's carries, without its mm_* and LLaVA fields."""
    known = LlamaConfig().to_dict().keys()
    fields = {key: value for key, value in config.items() if key in known and key not in ("architectures", "model_type")}
    return LlamaConfig(**{**fields, "vocab_size": vocab_size})


def with_image_token(tokenizer: Any, state: dict[str, torch.Tensor]) -> int:
    """The tokenizer's ``<image>`` id, adding the token where the original's has none (it marks the
    image with id -200 instead); new embedding and head rows are the mean of the others, so no
    other token's logit changes."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token  # the original's v1 recipe pads with <unk>
    size = len(tokenizer)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        rows = state[name]
        if rows.shape[0] < size:
            state[name] = torch.cat([rows, rows.float().mean(0, keepdim=True).to(rows.dtype).expand(size - rows.shape[0], -1)])
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def convert_llava(source: str | Path, output_dir: str | Path, vision_tower: str | None = None, base_model: str | None = None) -> Path:
    """Write the Hugging Face checkpoint of an original-format LLaVA checkpoint (see the module
    docstring); a missing or unexpected weight is a :class:`ConversionError` naming it."""
    source, output_dir = Path(source), Path(output_dir)
    config = original_config(source)
    tower = vision_tower_folder(config, vision_tower, source)
    if (source / PROJECTOR_ONLY).is_file() and not any((source / name).is_file() or (source / f"{name}.index.json").is_file()
                                                        for name in WEIGHT_FILES):
        if not base_model:
            raise ConversionError(f"{source}: only {PROJECTOR_ONLY} (a pre-training stage): pass --base_model, the language model it sits on")
        state = read_state_dict(Path(base_model)) | torch.load(source / PROJECTOR_ONLY, map_location="cpu", weights_only=True)
    elif base_model:
        raise ConversionError(f"--base_model: {source} holds the whole model; --base_model is for a folder with only {PROJECTOR_ONLY}")
    else:
        state = read_state_dict(source)
    if not any(name.startswith("model.vision_tower.") for name in state):  # the run kept the tower frozen
        state |= {f"model.vision_tower.vision_tower.{name}": tensor for name, tensor in CLIPVisionModel.from_pretrained(tower).state_dict().items()}

    tokenizer = AutoTokenizer.from_pretrained(base_model if (base_model and not (source / "tokenizer_config.json").is_file()) else source)
    image_token_id = with_image_token(tokenizer, state)
    vision_config = CLIPVisionConfig.from_pretrained(tower)
    image_processor = CLIPImageProcessor.from_pretrained(tower)
    protocol = config.get("image_aspect_ratio", "pad")
    common = dict(
        vision_config=vision_config, text_config=language_config(config, state["lm_head.weight"].shape[0]),
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default" if config.get("mm_vision_select_feature", "patch") == "patch" else "full",
        vision_feature_layer=config.get("mm_vision_select_layer", -2), multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )
    processor_settings = dict(tokenizer=tokenizer, patch_size=vision_config.patch_size,
                              vision_feature_select_strategy=common["vision_feature_select_strategy"], num_additional_image_tokens=1)
    if protocol == "pad":
        state.pop("model.image_newline", None)  # LLaVA-1.6 under pad: one tile, no newline
        model_class, model_config = LlavaForConditionalGeneration, LlavaConfig(**common, image_token_id=image_token_id)
        processor = pad_processor(LlavaProcessor(image_processor=image_processor, **processor_settings))
    elif protocol == "anyres":
        if config.get("mm_patch_merge_type", "spatial_unpad") != "spatial_unpad":
            raise ConversionError(f"{source / 'config.json'}: anyres with mm_patch_merge_type {config['mm_patch_merge_type']!r}; "
                                  "transformers' LLaVA-NeXT merges tiles as spatial_unpad")
        pinpoints = config["image_grid_pinpoints"]
        model_class, model_config = LlavaNextForConditionalGeneration, LlavaNextConfig(
            **common, image_token_index=image_token_id, image_grid_pinpoints=pinpoints)
        next_processor = LlavaNextImageProcessor(**{**image_processor.to_dict(), "image_grid_pinpoints": pinpoints})
        processor = LlavaNextProcessor(image_processor=next_processor, **processor_settings)
        processor.image_processor.image_aspect_ratio = "anyres"
    else:
        raise ConversionError(f"{source / 'config.json'}: image_aspect_ratio {protocol!r}; expected pad or anyres")
    model = load_renamed(model_class, model_config, state, source)
    apply_template(processor, "vicuna_v1")  # the original MCM-DPO recipe's conv_vicuna_v1 (--version v1)
    model.config.image_aspect_ratio = protocol
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir


def load_renamed(model_class: type, config: Any, state: dict[str, torch.Tensor], source: Path) -> PreTrainedModel:
    """The model with ``state`` (original names) loaded through transformers' own mapping from its
    saved names; every weight the model has must come from ``state`` and nothing may be left."""
    renamed = {saved_name(name): tensor for name, tensor in state.items()}
    dtype = next(iter(state.values())).dtype
    model, info = model_class.from_pretrained(None, config=config, state_dict=renamed, dtype=dtype, output_loading_info=True)
    problems = [f"missing {original_name(name)}" for name in sorted(info["missing_keys"])]
    problems += [f"unexpected {original_name(name)}" for name in sorted(info["unexpected_keys"])]
    problems += [f"wrong shape {entry}" for entry in sorted(map(str, info["mismatched_keys"]))]
    if problems:
        raise ConversionError(f"{source}: the weights do not make a {model_class.__name__}: " + "; ".join(problems))
    return model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mcmdpo.model.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source_format", choices=["llava"], required=True,
                        help="the source's format: llava (the original LLaVA / MCM-DPO code's LlavaLlamaForCausalLM)")
    parser.add_argument("source", help="the original checkpoint folder")
    parser.add_argument("--output_dir", required=True, help="where the Hugging Face checkpoint is written")
    parser.add_argument("--vision_tower", default=None, help="a local CLIP checkpoint: the vision tower's config, image processor "
                                                             "and (where the source has none) weights (default: mm_vision_tower, if local)")
    parser.add_argument("--base_model", default=None, help=f"the language model a {PROJECTOR_ONLY}-only source sits on")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        output = convert_llava(args.source, args.output_dir, args.vision_tower, args.base_model)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.source} -> {output} (Hugging Face layout; python -m mcmdpo.train / mcmdpo_inference.py read it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
