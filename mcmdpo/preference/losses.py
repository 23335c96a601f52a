"""Loss maths as pure functions: sequence log-probabilities and the preference loss of a
:class:`~mcmdpo.preference.layout.PreferenceLayout` (MCM-DPO, of which DPO is the response term)
under an objective of :mod:`~mcmdpo.preference.objectives` (MCM-DPO's sigmoid by default)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mcmdpo.data.conversation import IGNORE_INDEX
from mcmdpo.preference.layout import PreferenceLayout
from mcmdpo.preference.objectives import ObjectiveSum, ScoredRecords, parse_objective

LOGSUMEXP_CHUNK = 1024  # answer positions whose fp32 logits exist at once


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
    targets = labels[:, 1:][predicts_answer[:, :-1]]
    rows = predicts_answer.nonzero()[:, 0]
    return sum_per_sequence(token_logps(answer_logits, targets), rows, predicts_answer.sum(-1), average)


def token_logps(logits: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
    """log softmax(logits[position])[target] for each target, in fp32; ``positions`` (default:
    one target per row) index the rows of the [positions, vocabulary] logits.

    gather - logsumexp over chunks of rows: no log-softmax over the vocabulary is materialised,
    and each chunk's fp32 copy of bf16 logits exists only while its logsumexp runs (under
    autograd each chunk is recomputed in the backward instead of kept)."""
    positions = torch.arange(len(targets), device=targets.device) if positions is None else positions
    picked = logits[positions, targets].float()
    if not len(logits):
        return picked
    normalisers = torch.cat([_logsumexp_fp32(chunk) for chunk in logits.split(LOGSUMEXP_CHUNK)])
    return picked - normalisers[positions]


def _logsumexp_fp32(chunk: torch.Tensor) -> torch.Tensor:
    if chunk.dtype == torch.float32 or not chunk.requires_grad:
        return chunk.float().logsumexp(-1)
    return checkpoint(lambda rows: rows.float().logsumexp(-1), chunk, use_reentrant=False)


def sum_per_sequence(
    token_values: torch.Tensor, sequence_of_token: torch.Tensor, tokens_per_sequence: torch.Tensor, average: bool
) -> torch.Tensor:
    """[sequences] sums (or means) of per-token values, each token belonging to ``sequence_of_token``."""
    total = torch.zeros(len(tokens_per_sequence), dtype=token_values.dtype, device=token_values.device)
    total = total.index_add(0, sequence_of_token, token_values)
    return total / tokens_per_sequence.clamp(min=1).to(total) if average else total


@dataclass(frozen=True)
class PreferenceLoss:
    """The preference loss over a layout's terms: its objective
    (:mod:`~mcmdpo.preference.objectives`) applied to the sequences' log-probs. The default,
    MCM-DPO's, combines the terms in one sigmoid as the original does:

        logits = sum_k (w_k / normaliser) * (r(positive_k) - r(negative_k)),  r = log pi - log pi_ref
        loss   = -log sigmoid(beta * logits)

    Called on [records, sequences] policy and reference log-probs (columns: ``layout.triples``;
    no reference for an objective that needs none), each sequence's answer token count (for the
    objectives that normalise by length) and, for unpaired records, whether each is desirable, it
    returns the per-record losses and per-record metrics (detached): for each term the negative's
    reward beta * r, the margin beta * (r(positive) - r(negative)) and its accuracy, plus TRL's
    usual DPO metrics when the response pair is scored (without a reference, r = log pi, as TRL
    logs SimPO's and ORPO's). DPO is the layout of the response term alone with normaliser 1:
    beta * (r(y_w) - r(y_l)), exactly. ``average_logps``: the log-probs are per-token means
    (``--logps_reduction mean``)."""

    layout: PreferenceLayout
    beta: float
    objective: ObjectiveSum = field(default_factory=parse_objective)
    average_logps: bool = False

    @property
    def needs_reference(self) -> bool:
        return self.objective.needs_reference

    def __call__(
        self,
        policy_logps: torch.Tensor,
        reference_logps: torch.Tensor | None = None,
        answer_tokens: torch.Tensor | None = None,
        desirable: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        width = len(self.layout.triples)
        given = [t for t in (policy_logps, reference_logps, answer_tokens) if t is not None]
        if any(t.shape != policy_logps.shape for t in given) or policy_logps.dim() != 2 or policy_logps.shape[-1] != width:
            raise ValueError(f"log-probs (and token counts) must all be [records, {width}] (the layout's triples), got "
                             + " and ".join(str(tuple(t.shape)) for t in given))
        if reference_logps is None and self.needs_reference:
            raise ValueError(f"the objective {' + '.join(self.objective.names)} needs reference log-probs")
        reference_logps = reference_logps if self.needs_reference else None
        records = ScoredRecords(self.layout, self.beta, self.objective.parameters, policy_logps, reference_logps,
                                answer_tokens, desirable, self.average_logps)
        losses, objective_metrics = self.objective(records)
        log_ratios = policy_logps if reference_logps is None else policy_logps - reference_logps
        return losses, {**self.metrics(policy_logps.detach(), self.beta * log_ratios.detach()), **objective_metrics}

    def metrics(self, policy_logps: torch.Tensor, rewards: torch.Tensor) -> dict[str, torch.Tensor]:
        metrics: dict[str, torch.Tensor] = {}
        if self.layout.response_pair is not None:
            chosen, rejected = self.layout.response_pair
            metrics.update({
                "rewards/chosen": rewards[:, chosen],
                "rewards/rejected": rewards[:, rejected],
                "rewards/margins": rewards[:, chosen] - rewards[:, rejected],
                "rewards/accuracies": (rewards[:, chosen] > rewards[:, rejected]).float(),
                "logps/chosen": policy_logps[:, chosen],
                "logps/rejected": policy_logps[:, rejected],
            })
        for term, (positive, negative) in zip(self.layout.terms, self.layout.pairs):
            margin = rewards[:, positive] - rewards[:, negative]
            metrics[f"rewards/{term.name}"] = rewards[:, negative]
            metrics[f"margins/{term.name}"] = margin
            metrics[f"accuracies/{term.name}"] = (margin > 0).float()
        return metrics
