"""Which components train: the vision tower (VE), the projector and the language model, found
through the model's family declaration (:mod:`mcmdpo.model.families`).

The paper's four paradigms (a)-(d), which say whether the vision tower trains in the SFT and in
the preference stage, are the value of ``train_vision_tower`` in each stage:
(a) False, False; (b) False, True; (c) True, False; (d) True, True.
"""

from __future__ import annotations

from collections import Counter

from torch import nn

from mcmdpo.model.families import COMPONENTS, family_of_model


def set_trainable_components(
    model: nn.Module, train_vision_tower: bool, train_projector: bool = True, train_language_model: bool = True
) -> dict[str, int]:
    """Freeze or unfreeze each component; return the trainable parameter count per component."""
    wanted = {"vision_tower": train_vision_tower, "projector": train_projector, "language_model": train_language_model}
    family = family_of_model(model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(wanted[family.component_of(name)])
    return trainable_parameter_counts(model)


def trainable_parameter_counts(model: nn.Module) -> dict[str, int]:
    counts: Counter[str] = Counter({component: 0 for component in COMPONENTS})
    family = family_of_model(model)
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            # ZeRO-3 empties parameters in place; ds_numel keeps the real size.
            counts[family.component_of(name)] += getattr(parameter, "ds_numel", parameter.numel())
    return dict(counts)
