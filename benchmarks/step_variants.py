"""The MCM-DPO training steps the benchmarks compare, each one call that scores a batch of
records, applies the loss and runs backward (no optimizer step: it is the same for all):

- ``upstream``: as the original runs it, 16 full sequences per record: 8 under the policy with
  backward and 8 under a live reference (no grad), every position through the output head;
- ``plain``: the 8 policy sequences, reference log-probs cached (``--sequence_packing none``);
- ``packed``: one prefix-tree row per record and image, reference cached (``--sequence_packing
  tree``, the default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mcmdpo.model.families import ModelFamily, family_of_model
from mcmdpo.preference.batch import INDEX, model_inputs
from mcmdpo.preference.layout import MCMDPO_LAYOUT
from mcmdpo.preference.losses import PreferenceLoss, sequence_logps
from mcmdpo.preference.packing import sequence_packing
from mcmdpo.preference.plain import PlainCollator

VARIANTS = ("upstream", "plain", "packed")
PACKING = {"plain": "none", "packed": "tree"}  # each variant's --sequence_packing
LOSS = PreferenceLoss(MCMDPO_LAYOUT, beta=0.1)
Logps = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]


def upstream_logps(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[records, 8] log-probs as the original computes them: logits at every position."""
    logits = model(**model_inputs(batch, "labels"), use_cache=False).logits
    return sequence_logps(logits, batch["labels"]).view(len(batch[INDEX]), -1)


def collate_and_score(
    variant: str, processor: Any, items: list[dict[str, Any]], family: ModelFamily
) -> tuple[dict[str, torch.Tensor], Logps]:
    """The batch of ``items`` as ``variant`` takes it and the function that scores it."""
    if variant == "upstream":
        return PlainCollator(processor.tokenizer.pad_token_id)(items), upstream_logps
    packing = sequence_packing(PACKING[variant], processor, MCMDPO_LAYOUT, family)
    return packing.collator(items), lambda model, batch: packing.logps(model, batch, False)


@dataclass
class TrainingStep:
    """One variant's step on a fixed batch: ``reference`` is a live model (upstream) or None,
    then ``cached`` holds the reference log-probs."""

    name: str
    policy: nn.Module
    batch: dict[str, torch.Tensor]
    logps: Logps
    reference: nn.Module | None = None
    cached: torch.Tensor | None = None

    def __call__(self) -> torch.Tensor:
        """Per-record losses after forward and backward (gradients accumulate in the policy)."""
        if self.reference is not None:
            with torch.no_grad():
                reference = self.logps(self.reference, self.batch)
        else:
            reference = self.cached
        policy = self.logps(self.policy, self.batch)
        losses, _ = LOSS(policy, reference.to(policy))
        losses.mean().backward()
        return losses.detach().float()


def build_step(
    variant: str, processor: Any, items: list[dict[str, Any]], policy: nn.Module,
    reference: nn.Module | None = None, cached: torch.Tensor | None = None,
) -> TrainingStep:
    """``variant``'s step on ``items``. Without a live ``reference`` (upstream needs one) the
    reference log-probs are ``cached``, else the policy's own before training (at the start of
    a run the policy is the reference)."""
    device = next(policy.parameters()).device
    batch, logps = collate_and_score(variant, processor, items, family_of_model(policy))
    batch = {key: value.to(device) for key, value in batch.items()}
    if variant == "upstream":
        if reference is None:
            raise ValueError("the upstream-style step runs a live reference model")
        return TrainingStep(variant, policy, batch, logps, reference=reference)
    if cached is None:
        with torch.no_grad():
            cached = logps(policy, batch).float()
    return TrainingStep(variant, policy, batch, logps, cached=cached.to(device))


def enable_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing as training sets it up (non-reentrant; inputs that require grad)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.enable_input_require_grads()
