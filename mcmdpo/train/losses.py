"""Loss maths as pure functions: sequence log-probabilities, DPO and MCM-DPO (design §1.1)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from mcmdpo.data.conversation import IGNORE_INDEX

# The eight (context, image, response) triples of a record, in the upstream order.
SEQUENCE_NAMES = ("cw_mw_yw", "cw_mw_yl", "cw_ml_yw", "cw_ml_yl", "cl_mw_yw", "cl_mw_yl", "cl_ml_yw", "cl_ml_yl")
# The seven negative dimensions, in the order their terms are switched on, and the column of
# each one's negative triple in SEQUENCE_NAMES. The anchor (c_w, m_w, y_w) is column 0.
TERM_NAMES = ("response", "image", "context", "context_response", "image_response", "context_image", "all")
TERM_COLUMNS = (1, 2, 4, 5, 3, 6, 7)
DEFAULT_TERM_WEIGHTS = (1.0, 0.5, 0.5, 0.2, 0.2, 0.2, 0.2)
DEFAULT_NORMALIZER = 2.8


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, average: bool = False) -> torch.Tensor:
    """log pi(y | prompt) of each sequence: the log-probabilities of the label tokens (prompt,
    image and padding are IGNORE_INDEX), summed, or averaged over the answer tokens."""
    predicts_answer = answer_logits_mask(labels)
    return answer_logps(logits[predicts_answer], labels, predicts_answer, average)


def answer_logits_mask(labels: torch.Tensor) -> torch.Tensor:
    """[sequences, length] bool: the positions whose logits predict an answer token (the one
    before each label), the only logits a sequence's log-probability needs."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask


def answer_logps(
    answer_logits: torch.Tensor, labels: torch.Tensor, predicts_answer: torch.Tensor, average: bool = False
) -> torch.Tensor:
    """Per-sequence log-probabilities from the logits at ``predicts_answer``'s positions only
    ([answer tokens, vocabulary], as ``logits_to_keep=predicts_answer`` gives them)."""
    logits = answer_logits.float()
    targets = labels[:, 1:][predicts_answer[:, :-1]]
    # gather - logsumexp avoids materialising a full log_softmax over the vocabulary.
    token_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    rows = predicts_answer.nonzero()[:, 0]
    total = torch.zeros(labels.shape[0], dtype=token_logps.dtype, device=token_logps.device).index_add(0, rows, token_logps)
    return total / predicts_answer.sum(-1).clamp(min=1) if average else total


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example DPO losses -log sigmoid(beta * (r_w - r_l)) with r = log pi - log pi_ref,
    and the (detached) rewards beta * r of the chosen and the rejected responses."""
    chosen = policy_chosen_logps - reference_chosen_logps
    rejected = policy_rejected_logps - reference_rejected_logps
    losses = -F.logsigmoid(beta * (chosen - rejected))
    return losses, beta * chosen.detach(), beta * rejected.detach()


def mcmdpo_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    beta: float,
    weights: Sequence[float] = DEFAULT_TERM_WEIGHTS,
    normalizer: float = DEFAULT_NORMALIZER,
    num_terms: int = 7,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-example MCM-DPO losses and per-dimension metrics.

    Both log-prob tensors are [batch, 8] in SEQUENCE_NAMES order. With r the implicit reward of a
    triple, the terms are combined in one sigmoid, as the original implementation does:

        logits = sum_{k < num_terms} (weights[k] / normalizer) * (r(anchor) - r(negative_k))
        loss   = -log sigmoid(beta * logits)

    num_terms=1 with normalizer=1 is exactly DPO. Metrics (per example, detached) cover all seven
    dimensions whether or not their term is on: the reward of each negative, the margin
    beta * (r(anchor) - r(negative)) and whether it is positive (accuracy)."""
    if policy_logps.shape != reference_logps.shape or policy_logps.shape[-1] != len(SEQUENCE_NAMES):
        raise ValueError(f"log-probs must both be [batch, 8], got {tuple(policy_logps.shape)} and {tuple(reference_logps.shape)}")
    if len(weights) != len(TERM_NAMES):
        raise ValueError(f"expected {len(TERM_NAMES)} weights, got {len(weights)}")
    if not 1 <= num_terms <= len(TERM_NAMES):
        raise ValueError(f"num_terms must be in 1..{len(TERM_NAMES)}, got {num_terms}")
    rewards = policy_logps - reference_logps
    margins = rewards[:, :1] - rewards[:, list(TERM_COLUMNS)]  # [batch, 7]
    scale = torch.tensor([w / normalizer for w in weights[:num_terms]], dtype=margins.dtype, device=margins.device)
    logits = margins[:, :num_terms] @ scale
    losses = -F.logsigmoid(beta * logits)
    metrics = preference_metrics(policy_logps.detach(), reference_logps.detach(), beta)
    return losses, metrics


def response_metrics(
    policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor, chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The usual DPO metrics (per example), named as TRL names them."""
    return {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/margins": chosen_rewards - rejected_rewards,
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
        "logps/chosen": policy_chosen_logps.detach(),
        "logps/rejected": policy_rejected_logps.detach(),
    }


def preference_metrics(policy_logps: torch.Tensor, reference_logps: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
    """Per-example metrics of [batch, 8] log-probs: the usual DPO metrics of the response pair,
    and for each of the seven dimensions the negative's reward, the margin and its accuracy."""
    rewards = beta * (policy_logps - reference_logps)
    metrics = response_metrics(policy_logps[:, 0], policy_logps[:, 1], rewards[:, 0], rewards[:, 1])
    for name, column in zip(TERM_NAMES, TERM_COLUMNS):
        margin = rewards[:, 0] - rewards[:, column]
        metrics[f"rewards/{name}"] = rewards[:, column]
        metrics[f"margins/{name}"] = margin
        metrics[f"accuracies/{name}"] = (margin > 0).float()
    return metrics
