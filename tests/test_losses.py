"""The loss maths against hand computations on fixed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from mcmdpo.train.losses import dpo_loss, mcmdpo_loss, sequence_logps

# Written out by hand from design §1.1, not imported, so the test checks the module's tables too.
UPSTREAM_ORDER = ["cw_mw_yw", "cw_mw_yl", "cw_ml_yw", "cw_ml_yl", "cl_mw_yw", "cl_mw_yl", "cl_ml_yw", "cl_ml_yl"]
TERMS = [  # (dimension, negative triple, default weight), in the order num_terms switches them on
    ("response", "cw_mw_yl", 1.0),
    ("image", "cw_ml_yw", 0.5),
    ("context", "cl_mw_yw", 0.5),
    ("context_response", "cl_mw_yl", 0.2),
    ("image_response", "cw_ml_yl", 0.2),
    ("context_image", "cl_ml_yw", 0.2),
    ("all", "cl_ml_yl", 0.2),
]
POLICY = [
    [-10.0, -14.0, -12.5, -16.0, -11.0, -15.5, -13.0, -17.0],
    [-8.0, -7.0, -9.5, -9.0, -8.5, -7.5, -10.0, -9.8],
]
REFERENCE = [
    [-11.0, -12.0, -11.5, -13.0, -10.5, -13.0, -12.0, -14.0],
    [-8.2, -7.5, -8.0, -8.5, -8.1, -7.0, -9.0, -9.0],
]


def softplus_neg(x: float) -> float:
    """-log sigmoid(x)."""
    return math.log1p(math.exp(-x))


def hand_mcmdpo(policy, reference, beta, weights, normalizer, num_terms):
    losses = []
    for p, r in zip(policy, reference):
        reward = {name: p[i] - r[i] for i, name in enumerate(UPSTREAM_ORDER)}
        logit = sum(weights[k] / normalizer * (reward["cw_mw_yw"] - reward[TERMS[k][1]]) for k in range(num_terms))
        losses.append(softplus_neg(beta * logit))
    return losses


@pytest.mark.parametrize("num_terms", range(1, 8))
def test_mcmdpo_loss_matches_hand_computation(num_terms):
    weights = [w for _, _, w in TERMS]
    losses, _ = mcmdpo_loss(torch.tensor(POLICY, dtype=torch.float64), torch.tensor(REFERENCE, dtype=torch.float64), 0.1, weights, 2.8, num_terms)
    assert losses.tolist() == pytest.approx(hand_mcmdpo(POLICY, REFERENCE, 0.1, weights, 2.8, num_terms), abs=1e-12)


def test_mcmdpo_loss_with_other_beta_weights_and_normalizer():
    weights = [0.7, 0.1, 0.9, 0.3, 0.05, 0.6, 0.4]
    losses, _ = mcmdpo_loss(torch.tensor(POLICY, dtype=torch.float64), torch.tensor(REFERENCE, dtype=torch.float64), 0.37, weights, 1.9, 5)
    assert losses.tolist() == pytest.approx(hand_mcmdpo(POLICY, REFERENCE, 0.37, weights, 1.9, 5), abs=1e-12)


def test_first_case_by_hand():
    """Record 0, response term only, normaliser 1: rewards 1 (anchor) and -2 (y_l), logit 3."""
    losses, _ = mcmdpo_loss(torch.tensor(POLICY), torch.tensor(REFERENCE), 0.1, [1.0] * 7, 1.0, 1)
    assert losses[0].item() == pytest.approx(math.log(1 + math.exp(-0.3)), abs=1e-6)


def test_response_only_with_normalizer_one_is_dpo():
    policy, reference = torch.tensor(POLICY), torch.tensor(REFERENCE)
    mcm, metrics = mcmdpo_loss(policy, reference, 0.1, [1.0, 0.5, 0.5, 0.2, 0.2, 0.2, 0.2], 1.0, 1)
    dpo, chosen, rejected = dpo_loss(policy[:, 0], policy[:, 1], reference[:, 0], reference[:, 1], 0.1)
    torch.testing.assert_close(mcm, dpo)
    torch.testing.assert_close(metrics["rewards/chosen"], chosen)
    torch.testing.assert_close(metrics["rewards/rejected"], rejected)


def test_dpo_loss_by_hand():
    losses, chosen, rejected = dpo_loss(
        torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.5]), torch.tensor([-1.5, -2.0]), torch.tensor([-2.0, -1.0]), beta=0.5
    )
    # chosen log-ratios 0.5, 0; rejected -1, -0.5: logits 1.5 and 0.5.
    assert losses.tolist() == pytest.approx([softplus_neg(0.75), softplus_neg(0.25)], abs=1e-6)
    assert chosen.tolist() == pytest.approx([0.25, 0.0]) and rejected.tolist() == pytest.approx([-0.5, -0.25])


def test_metrics_cover_all_seven_dimensions():
    _, metrics = mcmdpo_loss(torch.tensor(POLICY), torch.tensor(REFERENCE), 0.1, [1.0] * 7, 2.8, 2)
    for name, negative, _ in TERMS:
        column = UPSTREAM_ORDER.index(negative)
        expected = [0.1 * ((p[0] - r[0]) - (p[column] - r[column])) for p, r in zip(POLICY, REFERENCE)]
        assert metrics[f"margins/{name}"].tolist() == pytest.approx(expected, abs=1e-6), name
        assert metrics[f"accuracies/{name}"].tolist() == [float(m > 0) for m in expected]
        assert metrics[f"rewards/{name}"].tolist() == pytest.approx([0.1 * (p[column] - r[column]) for p, r in zip(POLICY, REFERENCE)], abs=1e-6)


def test_loss_gradient_flows_to_policy_only():
    policy = torch.tensor(POLICY, requires_grad=True)
    losses, metrics = mcmdpo_loss(policy, torch.tensor(REFERENCE), 0.1, num_terms=7)
    losses.sum().backward()
    assert policy.grad.abs().sum() > 0 and not any(m.requires_grad for m in metrics.values())
    # Increasing the anchor's log-prob always lowers the loss.
    assert (policy.grad[:, 0] < 0).all()


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_terms"):
        mcmdpo_loss(torch.zeros(1, 8), torch.zeros(1, 8), 0.1, num_terms=8)
    with pytest.raises(ValueError, match="weights"):
        mcmdpo_loss(torch.zeros(1, 8), torch.zeros(1, 8), 0.1, weights=[1.0] * 6)
    with pytest.raises(ValueError, match=r"\[batch, 8\]"):
        mcmdpo_loss(torch.zeros(1, 7), torch.zeros(1, 7), 0.1)


def test_sequence_logps_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[-100, -100, 3, 7, 1], [-100, 4, 2, -100, -100]])
    log_probs = logits.log_softmax(-1)
    # Token t is predicted by the logits at position t - 1.
    first = log_probs[0, 1, 3] + log_probs[0, 2, 7] + log_probs[0, 3, 1]
    second = log_probs[1, 0, 4] + log_probs[1, 1, 2]
    torch.testing.assert_close(sequence_logps(logits, labels), torch.stack([first, second]))
    torch.testing.assert_close(sequence_logps(logits, labels, average=True), torch.stack([first / 3, second / 2]))
