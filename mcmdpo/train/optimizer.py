"""Per-component learning rates (``--vision_tower_lr``, ``--projector_lr``), as other toolkits
offer them; by default every component trains at ``--learning_rate``, as the original does."""

from __future__ import annotations

from typing import Any

import torch

from mcmdpo.model.families import family_of_model


def component_parameter_groups(model: Any, decay_names: set[str], args: Any) -> list[dict[str, Any]]:
    """Optimizer groups: one per (component learning rate, weight decay or not)."""
    rates = {"vision_tower": args.vision_tower_lr, "projector": args.projector_lr, "language_model": None}
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    family = family_of_model(model)
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        rate = rates[family.component_of(name)]
        rate = args.learning_rate if rate is None else rate
        decay = args.weight_decay if name in decay_names else 0.0
        groups.setdefault((rate, decay), []).append(parameter)
    # Each group carries its own "lr"; the scheduler scales every group by the same factor.
    return [{"params": params, "lr": rate, "weight_decay": decay} for (rate, decay), params in groups.items()]


class ComponentLearningRateMixin:
    """For a Trainer: the component groups above when a component has its own learning rate."""

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        if self.args.vision_tower_lr is None and self.args.projector_lr is None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            groups = component_parameter_groups(opt_model, set(self.get_decay_parameter_names(opt_model)), self.args)
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer
