"""Choosing how a preference batch's sequences are packed (``--sequence_packing``): ``tree`` (the
default, :mod:`mcmdpo.preference.tree`) or ``none`` (every sequence in full,
:mod:`mcmdpo.preference.plain`). Each is a collator and a log-prob function that go together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from mcmdpo.model.families import ModelFamily
from mcmdpo.preference.layout import PreferenceLayout
from mcmdpo.preference.plain import PlainCollator, plain_sequence_logps
from mcmdpo.preference.tree import TREE_MASK_ATTENTION, TreePackingCollator, packed_sequence_logps

SEQUENCE_PACKINGS = ("tree", "none")


@dataclass(frozen=True)
class SequencePacking:
    name: str
    collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]
    logps: Callable[[nn.Module, dict[str, torch.Tensor], bool], torch.Tensor]


def sequence_packing(name: str, processor: Any, layout: PreferenceLayout, family: ModelFamily) -> SequencePacking:
    """The packing ``name`` (tree or none) for batches of ``layout``'s sequences of ``family``'s model."""
    pad_id = processor.tokenizer.pad_token_id
    if name == "none":
        return SequencePacking("none", PlainCollator(pad_id), plain_sequence_logps)
    if name == "tree":
        image_token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
        collator = TreePackingCollator(pad_id, image_token_id, layout.triples, family)
        return SequencePacking("tree", collator, packed_sequence_logps)
    raise ValueError(f"unknown sequence packing {name!r}: one of {SEQUENCE_PACKINGS}")


def packing_for(requested: str = "tree", attn_implementation: str | None = None) -> tuple[str, str | None]:
    """(the packing to run, a notice or None): the tree where the attention takes its 4-D mask
    (sdpa, eager; not flash-attention's kernels), else every sequence in full."""
    if requested == "tree" and attn_implementation is not None and attn_implementation not in TREE_MASK_ATTENTION:
        return "none", (f"tree packing needs a 4-D attention mask, which {attn_implementation} does not take; "
                        "scoring every sequence in full (--sequence_packing none)")
    return requested, None
