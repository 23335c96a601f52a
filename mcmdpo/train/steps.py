"""The two ways a preference batch is scored, each a collator and a log-prob function that go
together: ``packed`` (the default, :mod:`mcmdpo.train.tree_packing`) and ``plain`` (every
sequence in full, as the original runs them; kept for comparison and for attention kernels that
take no 4-D mask)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from mcmdpo.data.preference_dataset import PreferenceCollator
from mcmdpo.layout import PreferenceLayout
from mcmdpo.train.losses import answer_logits_mask, answer_logps
from mcmdpo.train.tree_packing import TREE_MASK_ATTENTION, TreePackingCollator, packed_sequence_logps

NON_MODEL_KEYS = ("index", "reference_logps", "labels")


def plain_sequence_logps(model: nn.Module, batch: dict[str, torch.Tensor], average: bool = False) -> torch.Tensor:
    """[records, sequences] log-probs of a :class:`PreferenceCollator` batch (record-major rows).
    Only the positions that predict an answer token go through the output head."""
    inputs = {key: value for key, value in batch.items() if key not in NON_MODEL_KEYS}
    predicts_answer = answer_logits_mask(batch["labels"])
    answer_logits = model(**inputs, use_cache=False, logits_to_keep=predicts_answer).logits
    return answer_logps(answer_logits, batch["labels"], predicts_answer, average).view(len(batch["index"]), -1)


@dataclass(frozen=True)
class PreferenceStep:
    name: str
    collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]
    logps: Callable[[nn.Module, dict[str, torch.Tensor], bool], torch.Tensor]


def preference_step(name: str, processor: Any, layout: PreferenceLayout) -> PreferenceStep:
    """The step ``name`` (packed or plain) for batches of ``layout``'s sequences."""
    pad_id = processor.tokenizer.pad_token_id
    if name == "plain":
        return PreferenceStep("plain", PreferenceCollator(pad_id), plain_sequence_logps)
    if name == "packed":
        image_token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
        return PreferenceStep("packed", TreePackingCollator(pad_id, image_token_id, layout.triples), packed_sequence_logps)
    raise ValueError(f"unknown preference step {name!r}: packed or plain")


def step_for(requested: str = "packed", attn_implementation: str | None = None) -> tuple[str, str | None]:
    """(the step to run, a notice or None): the packed step where the attention takes its tree
    mask (sdpa, eager; not flash-attention's kernels, which take no 4-D mask)."""
    if requested == "packed" and attn_implementation is not None and attn_implementation not in TREE_MASK_ATTENTION:
        return "plain", f"the tree-packed step needs a 4-D attention mask, which {attn_implementation} does not take; scoring with the plain step"
    return requested, None
