"""Scoring every sequence of a preference batch in full, as the original runs them: one padded
row per (record, triple). The tree-packed scoring (:mod:`mcmdpo.preference.tree`) is checked
against this one, and it is what runs where the attention takes no 4-D mask."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mcmdpo.data.collate import PaddingCollator
from mcmdpo.preference.batch import INDEX, model_inputs, record_fields
from mcmdpo.preference.losses import answer_logits_mask, answer_logps


@dataclass
class PlainCollator:
    """Flattens records x sequences (record-major: row = record * S + sequence) into one padded
    batch; the per-record fields ride along."""

    pad_token_id: int

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        flat = [sequence for item in items for sequence in item["sequences"]]
        return {**PaddingCollator(self.pad_token_id)(flat), **record_fields(items)}


def plain_sequence_logps(model: nn.Module, batch: dict[str, torch.Tensor], average: bool = False) -> torch.Tensor:
    """[records, sequences] log-probs of a :class:`PlainCollator` batch. Only the positions that
    predict an answer token go through the output head."""
    inputs = model_inputs(batch, "labels")
    predicts_answer = answer_logits_mask(batch["labels"])
    answer_logits = model(**inputs, use_cache=False, logits_to_keep=predicts_answer).logits
    return answer_logps(answer_logits, batch["labels"], predicts_answer, average).view(len(batch[INDEX]), -1)
