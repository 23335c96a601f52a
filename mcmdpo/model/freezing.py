"""Which components train: the vision tower (VE), the projector and the language model.

The four paradigms of design §1.3 are the value of ``train_vision_tower`` in each stage:
(a) False, False; (b) False, True; (c) True, False; (d) True, True.
"""

from __future__ import annotations

from collections import Counter

from torch import nn

COMPONENTS = ("vision_tower", "projector", "language_model")


def component_of(parameter_name: str) -> str:
    """The component a parameter belongs to, from its name. Works for LLaVA, LLaVA-NeXT and their
    PEFT-wrapped forms, whose names only gain a prefix."""
    if "vision_tower" in parameter_name:
        return "vision_tower"
    if "multi_modal_projector" in parameter_name or "image_newline" in parameter_name:
        return "projector"
    return "language_model"


def set_trainable_components(
    model: nn.Module, train_vision_tower: bool, train_projector: bool = True, train_language_model: bool = True
) -> dict[str, int]:
    """Freeze or unfreeze each component; return the trainable parameter count per component."""
    wanted = {"vision_tower": train_vision_tower, "projector": train_projector, "language_model": train_language_model}
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(wanted[component_of(name)])
    return trainable_parameter_counts(model)


def trainable_parameter_counts(model: nn.Module) -> dict[str, int]:
    counts: Counter[str] = Counter({component: 0 for component in COMPONENTS})
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            # ZeRO-3 empties parameters in place; ds_numel keeps the real size.
            counts[component_of(name)] += getattr(parameter, "ds_numel", parameter.numel())
    return dict(counts)
