"""LoRA through peft: adapters on the language model's linear layers (found through the family
declaration, so every family's attention and MLP projections, never the vision tower's own);
the projector and the vision tower, when trained, train in full beside them (``modules_to_save``)."""

from __future__ import annotations

import logging

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel

from mcmdpo.model.families import family_of_model

logger = logging.getLogger("mcmdpo.model")


def language_model_linear_layers(model: PreTrainedModel) -> list[str]:
    """Names of the language model's linear layers, the output head left out."""
    family = family_of_model(model)
    head = model.get_output_embeddings()
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module is not head and family.component_of(name) == "language_model"
    ]


def apply_lora(
    model: PreTrainedModel,
    rank: int,
    alpha: int,
    dropout: float,
    target_modules: list[str] | None,
    train_vision_tower: bool,
    train_projector: bool,
) -> PeftModel:
    family = family_of_model(model)
    modules = dict(model.named_modules())
    modules_to_save: list[str] = []
    for component, on in (("projector", train_projector), ("vision_tower", train_vision_tower)):
        for name in family.module_names(component) if on else ():
            if name not in modules:  # a bare parameter (LLaVA-NeXT's image_newline): PEFT saves modules only
                logger.warning("LoRA: %s is a parameter, not a module; it stays frozen", name)
            elif isinstance(modules[name], (nn.ModuleList, nn.ModuleDict)):  # PEFT copies modules, not containers
                modules_to_save += [f"{name}.{child}" for child in modules[name]._modules]
            else:
                modules_to_save.append(name)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules or language_model_linear_layers(model),
        modules_to_save=modules_to_save or None,
        bias="none",
    )
    return get_peft_model(model, config)
