"""How SFT's token losses become one number: the two weightings ``--sft_loss_reduction`` chooses.

``token`` (transformers' default): every answer token of the global batch weighs the same, so a
long answer counts more than a short one. ``example`` (the original's: a micro-batch of one, the
model's own per-example token mean, then averaged over gradient accumulation and processes):
each example's answer tokens are averaged first and every example weighs the same, whatever its
length."""

from __future__ import annotations

import torch
import torch.nn.functional as F

SFT_LOSS_REDUCTIONS = ("token", "example")
IGNORE_INDEX = -100


def per_example_token_means(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[batch] mean next-token cross-entropy over each example's answer tokens (labels other than
    -100), in float32 as the models' own loss computes it. Only the answer positions' logits are
    upcast. An example without an answer token (the data checks drop those) counts 0."""
    targets = labels[:, 1:]
    answer = targets != IGNORE_INDEX
    token_losses = F.cross_entropy(logits[:, :-1][answer].float(), targets[answer], reduction="none")
    rows = answer.nonzero()[:, 0]
    sums = torch.zeros(labels.shape[0], dtype=token_losses.dtype, device=token_losses.device).index_add(0, rows, token_losses)
    return sums / answer.sum(dim=1).clamp(min=1)
