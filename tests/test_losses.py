"""The loss maths against hand computations on fixed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from mcmdpo.preference.layout import DEFAULT_NORMALIZER, DPO_LAYOUT, MCMDPO_LAYOUT, MCMDPO_TERMS, build_layout
from mcmdpo.preference.losses import PreferenceLoss, sequence_logps, token_logps

# Written out by hand from the paper's objective, not imported, so the test checks the layout's tables too.
UPSTREAM_ORDER = ["cw_mw_yw", "cw_mw_yl", "cw_ml_yw", "cw_ml_yl", "cl_mw_yw", "cl_mw_yl", "cl_ml_yw", "cl_ml_yl"]
TERMS = [  # (dimension, negative triple, default weight), in the order the original's num_terms switches them on
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


def columns(layout, rows):
    """The columns of upstream-ordered rows that ``layout`` scores, in its order."""
    return torch.tensor([[row[UPSTREAM_ORDER.index(t.name)] for t in layout.triples] for row in rows], dtype=torch.float64)


def loss_of(layout, beta=0.1, policy=POLICY, reference=REFERENCE):
    return PreferenceLoss(layout, beta)(columns(layout, policy), columns(layout, reference))


def test_layout_tables():
    assert [t.name for t in MCMDPO_LAYOUT.triples] == UPSTREAM_ORDER
    assert [(term.name, term.negative.name, term.weight) for term in MCMDPO_LAYOUT.terms] == TERMS
    assert DEFAULT_NORMALIZER == 2.8 and MCMDPO_LAYOUT.normalizer == 2.8
    assert [t.name for t in DPO_LAYOUT.triples] == ["cw_mw_yw", "cw_mw_yl"] and DPO_LAYOUT.normalizer == 1.0


@pytest.mark.parametrize("num_terms", range(1, 8))
def test_mcmdpo_loss_matches_hand_computation(num_terms):
    """The original's --num_terms k is the first k terms, the normaliser staying 2.8."""
    layout = build_layout(MCMDPO_TERMS[:num_terms])
    weights = [w for _, _, w in TERMS]
    losses, _ = loss_of(layout)
    assert losses.tolist() == pytest.approx(hand_mcmdpo(POLICY, REFERENCE, 0.1, weights, 2.8, num_terms), abs=1e-12)
    # Only the sequences the terms compare are scored.
    assert len(layout.triples) == len({"cw_mw_yw", *(negative for _, negative, _ in TERMS[:num_terms])})


def test_mcmdpo_loss_with_other_beta_weights_and_normalizer():
    weights = [0.7, 0.1, 0.9, 0.3, 0.05, 0.6, 0.4]
    layout = build_layout(MCMDPO_TERMS[:5], {name: w for (name, _, _), w in zip(TERMS[:5], weights)}, 1.9)
    losses, _ = loss_of(layout, beta=0.37)
    assert losses.tolist() == pytest.approx(hand_mcmdpo(POLICY, REFERENCE, 0.37, weights, 1.9, 5), abs=1e-12)


def test_terms_in_any_order_and_subset():
    """Terms by name, not by position: image and all alone, the normaliser still 2.8."""
    layout = build_layout(("all", "image"))
    assert [t.name for t in layout.triples] == ["cw_mw_yw", "cw_ml_yw", "cl_ml_yl"]
    losses, _ = loss_of(layout)
    for loss, p, r in zip(losses.tolist(), POLICY, REFERENCE):
        reward = {name: p[i] - r[i] for i, name in enumerate(UPSTREAM_ORDER)}
        logit = 0.2 / 2.8 * (reward["cw_mw_yw"] - reward["cl_ml_yl"]) + 0.5 / 2.8 * (reward["cw_mw_yw"] - reward["cw_ml_yw"])
        assert loss == pytest.approx(softplus_neg(0.1 * logit), abs=1e-12)


def test_first_case_by_hand():
    """Record 0, response term only, normaliser 1: rewards 1 (anchor) and -2 (y_l), logit 3."""
    losses, _ = loss_of(build_layout(("response",), normalizer=1.0))
    assert losses[0].item() == pytest.approx(math.log(1 + math.exp(-0.3)), abs=1e-9)


def test_dpo_layout_is_dpo_by_hand():
    policy, reference = [[-1.0, -3.0], [-2.0, -1.5]], [[-1.5, -2.0], [-2.0, -1.0]]
    losses, metrics = PreferenceLoss(DPO_LAYOUT, 0.5)(torch.tensor(policy), torch.tensor(reference))
    # chosen log-ratios 0.5, 0; rejected -1, -0.5: logits 1.5 and 0.5.
    assert losses.tolist() == pytest.approx([softplus_neg(0.75), softplus_neg(0.25)], abs=1e-6)
    assert metrics["rewards/chosen"].tolist() == pytest.approx([0.25, 0.0])
    assert metrics["rewards/rejected"].tolist() == pytest.approx([-0.5, -0.25])
    assert metrics["rewards/accuracies"].tolist() == [1.0, 1.0]
    assert metrics["logps/chosen"].tolist() == [-1.0, -2.0]


def test_metrics_cover_every_active_term():
    _, metrics = loss_of(MCMDPO_LAYOUT)
    for name, negative, _ in TERMS:
        column = UPSTREAM_ORDER.index(negative)
        expected = [0.1 * ((p[0] - r[0]) - (p[column] - r[column])) for p, r in zip(POLICY, REFERENCE)]
        assert metrics[f"margins/{name}"].tolist() == pytest.approx(expected, abs=1e-9), name
        assert metrics[f"accuracies/{name}"].tolist() == [float(m > 0) for m in expected]
        assert metrics[f"rewards/{name}"].tolist() == pytest.approx([0.1 * (p[column] - r[column]) for p, r in zip(POLICY, REFERENCE)], abs=1e-9)
    _, dpo_metrics = loss_of(DPO_LAYOUT)
    assert "margins/image" not in dpo_metrics and "margins/response" in dpo_metrics


def test_loss_gradient_flows_to_policy_only():
    policy = columns(MCMDPO_LAYOUT, POLICY).requires_grad_()
    losses, metrics = PreferenceLoss(MCMDPO_LAYOUT, 0.1)(policy, columns(MCMDPO_LAYOUT, REFERENCE))
    losses.sum().backward()
    assert policy.grad.abs().sum() > 0 and not any(m.requires_grad for m in metrics.values())
    # Increasing the anchor's log-prob always lowers the loss.
    assert (policy.grad[:, 0] < 0).all()


def test_invalid_layouts_and_shapes():
    with pytest.raises(ValueError, match="unknown preference term"):
        build_layout(("response", "colour"))
    with pytest.raises(ValueError, match="unknown preference term"):
        build_layout(("response",), {"colour": 0.5})
    assert build_layout(("response",), {"image": 0.9}).weights == (1.0,)  # known but off: unused
    with pytest.raises(ValueError, match="named twice"):
        build_layout(("response", "response"))
    with pytest.raises(ValueError, match=r"\[records, 8\]"):
        PreferenceLoss(MCMDPO_LAYOUT, 0.1)(torch.zeros(1, 7), torch.zeros(1, 7))


def test_token_logps_chunked_equals_log_softmax(monkeypatch):
    """The chunked logsumexp over bf16 logits equals an fp32 log-softmax (chunks smaller than the rows)."""
    import mcmdpo.preference.losses as losses

    monkeypatch.setattr(losses, "LOGSUMEXP_CHUNK", 3)
    torch.manual_seed(0)
    logits = torch.randn(10, 50).bfloat16()
    targets = torch.randint(0, 50, (10,))
    expected = logits.float().log_softmax(-1)[torch.arange(10), targets]
    torch.testing.assert_close(token_logps(logits, targets), expected)
    positions = torch.tensor([4, 4, 9, 0])
    torch.testing.assert_close(token_logps(logits, targets[:4], positions), logits.float().log_softmax(-1)[positions, targets[:4]])


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


def test_token_logps_gradients_through_the_recomputed_chunks(monkeypatch):
    """bf16 logits under autograd: each chunk's fp32 logsumexp is recomputed in the backward, with
    the gradient of an fp32 log-softmax."""
    import mcmdpo.preference.losses as losses

    monkeypatch.setattr(losses, "LOGSUMEXP_CHUNK", 4)
    torch.manual_seed(0)
    base = torch.randn(10, 50).bfloat16()
    targets = torch.randint(0, 50, (10,))
    chunked = base.clone().requires_grad_()
    token_logps(chunked, targets).sum().backward()
    direct = base.clone().requires_grad_()
    direct.float().log_softmax(-1)[torch.arange(10), targets].sum().backward()
    torch.testing.assert_close(chunked.grad.float(), direct.grad.float(), rtol=0, atol=1e-2)
