"""What rides along with each record in a preference batch, beside the model inputs."""

from __future__ import annotations

from typing import Any

import torch

INDEX = "index"  # [records]: each record's position in the dataset
REFERENCE_LOGPS = "reference_logps"  # [records, sequences]: precomputed reference log-probs, when cached
RECORD_KEYS = (INDEX, REFERENCE_LOGPS)


def record_fields(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """The per-record fields of a batch of preference items: ``index`` and, when precomputed,
    ``reference_logps``."""
    fields = {INDEX: torch.tensor([item[INDEX] for item in items], dtype=torch.long)}
    if REFERENCE_LOGPS in items[0]:
        fields[REFERENCE_LOGPS] = torch.stack([item[REFERENCE_LOGPS] for item in items])
    return fields


def model_inputs(batch: dict[str, torch.Tensor], *not_inputs: str) -> dict[str, torch.Tensor]:
    """The batch without its per-record fields and the given other keys."""
    excluded = {*RECORD_KEYS, *not_inputs}
    return {key: value for key, value in batch.items() if key not in excluded}
