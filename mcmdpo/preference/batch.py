"""What rides along with each record in a preference batch, beside the model inputs."""

from __future__ import annotations

from typing import Any

import torch

from mcmdpo.data.conversation import IGNORE_INDEX

INDEX = "index"  # [records]: each record's position in the dataset
REFERENCE_LOGPS = "reference_logps"  # [records, sequences]: precomputed reference log-probs, when cached
ANSWER_TOKENS = "answer_tokens"  # [records, sequences]: the answer tokens each sequence's log-prob sums
DESIRABLE = "desirable"  # [records]: unpaired records (KTO) only, whether each alt-text is desirable
RECORD_KEYS = (INDEX, REFERENCE_LOGPS, ANSWER_TOKENS, DESIRABLE)


def record_fields(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """The per-record fields of a batch of preference items: ``index``, each sequence's answer
    token count (the labels past the first position) and, when present, ``reference_logps`` and
    ``desirable``."""
    fields = {
        INDEX: torch.tensor([item[INDEX] for item in items], dtype=torch.long),
        ANSWER_TOKENS: torch.tensor(
            [[sum(label != IGNORE_INDEX for label in sequence["labels"][1:]) for sequence in item["sequences"]] for item in items],
            dtype=torch.long,
        ),
    }
    if REFERENCE_LOGPS in items[0]:
        fields[REFERENCE_LOGPS] = torch.stack([item[REFERENCE_LOGPS] for item in items])
    if DESIRABLE in items[0]:
        fields[DESIRABLE] = torch.tensor([item[DESIRABLE] for item in items], dtype=torch.bool)
    return fields


def model_inputs(batch: dict[str, torch.Tensor], *not_inputs: str) -> dict[str, torch.Tensor]:
    """The batch without its per-record fields and the given other keys."""
    excluded = {*RECORD_KEYS, *not_inputs}
    return {key: value for key, value in batch.items() if key not in excluded}
