"""The objective registry (--objective, mcmdpo/preference/objectives.py): each objective's loss and
gradients on the same log-probs equal TRL's own loss code where TRL has the objective (TRL is a
dev dependency: the comparison is skipped only where it is not installed, never in CI), or hand
tables from the papers' formulas; every objective trains two steps with tree-packed and plain
sequences alike, the reference-free ones loading no reference model; unpaired (KTO) data reads in
every format; the objective recipes."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml

from conftest import REPO_ROOT
from mcmdpo.data.loading import parse_records
from mcmdpo.preference.layout import DPO_LAYOUT, MCMDPO_LAYOUT, MCMDPO_TERMS, build_layout
from mcmdpo.preference.losses import PreferenceLoss
from mcmdpo.preference.objectives import KTO_LAYOUT, MDPO_LAYOUT, OBJECTIVES, PRESETS, parse_objective
from mcmdpo.train.cli import main, parse_arguments

# --- TRL, a dev dependency ---------------------------------------------------------------------


def trl_module(name: str) -> Any:
    """A module of TRL; the test is skipped where TRL is not installed, except in CI (env CI
    set), where a missing TRL is a failure: the comparison must run there."""
    if importlib.util.find_spec("trl") is None:
        if os.environ.get("CI"):
            pytest.fail("TRL is not installed, but CI must compare the objectives against it: pip install -e '.[dev]'")
        pytest.skip("TRL is not installed (pip install -e '.[dev]')")
    return importlib.import_module(name)


def test_trl_is_a_dev_dependency_pinned_to_the_release_compared_against():
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    dev = next(line for line in pyproject.splitlines() if line.startswith("dev = "))
    assert '"trl==1.16.*"' in dev


def random_pairs(seed: int, records: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[records, 2] (chosen, rejected) policy and reference log-probs and answer token counts."""
    generator = torch.Generator().manual_seed(seed)
    policy = -(torch.rand(records, 2, generator=generator, dtype=torch.float64) * 30 + 1)
    reference = -(torch.rand(records, 2, generator=generator, dtype=torch.float64) * 30 + 1)
    tokens = torch.randint(1, 12, (records, 2), generator=generator)
    return policy, reference, tokens


def ours(objective: str, policy: torch.Tensor, reference: torch.Tensor | None, tokens: torch.Tensor, beta: float,
         layout=DPO_LAYOUT, desirable: torch.Tensor | None = None, **parameters: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch loss (the trainer's mean over records) and its gradient in the policy log-probs."""
    policy = policy.clone().requires_grad_()
    loss_fn = PreferenceLoss(layout, beta, parse_objective(objective, parameters))
    losses, _ = loss_fn(policy, reference, tokens, desirable)
    loss = losses.mean()
    loss.backward()
    return loss.detach(), policy.grad


class StubModel:
    """Stands in for a model in TRL's loss code: per-token log-probs, spread evenly over each
    sequence's completion tokens so that they sum to the given sequence log-probs."""

    def __init__(self, logps_by_first_token: dict[int, tuple[torch.Tensor, torch.Tensor]]):
        self.logps = logps_by_first_token  # first input id -> (sequence log-probs, completion mask)

    def __call__(self, input_ids: torch.Tensor, **_: Any) -> SimpleNamespace:
        logps, completion_mask = self.logps[int(input_ids[0, 0])]
        shifted = completion_mask[:, 1:].to(logps)
        per_token = (logps / shifted.sum(1))[:, None] * shifted
        zeros = torch.zeros_like(per_token)
        return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def completion_mask(tokens: torch.Tensor, width: int) -> torch.Tensor:
    """Rows whose tokens 1..n are the completion (the shifted mask then holds n ones)."""
    mask = torch.zeros(len(tokens), width, dtype=torch.long)
    for row, count in enumerate(tokens.tolist()):
        mask[row, 1:1 + count] = 1
    return mask


def fake_trainer(**attributes: Any) -> SimpleNamespace:
    """The attributes TRL's loss methods read of their trainer, on CPU and one process."""
    accelerator = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x)
    return SimpleNamespace(model=SimpleNamespace(training=True), accelerator=accelerator, aux_loss_enabled=False,
                           _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
                           **attributes)


def trl_dpo(loss_types: list[str], weights: list[float] | None, policy: torch.Tensor, reference: torch.Tensor,
            tokens: torch.Tensor, beta: float, tmp_path: Path, **config: float) -> tuple[torch.Tensor, torch.Tensor]:
    """TRL's DPOTrainer._compute_loss (its loss code for every loss_type) on the same log-probs:
    the loss and its gradient in the policy's (chosen, rejected) log-probs."""
    trl = trl_module("trl")
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), loss_type=loss_types, loss_weights=weights, beta=beta,
                         precompute_ref_log_probs=True, use_cpu=True, bf16=False, report_to="none",
                         activation_checkpointing=False, **config)
    trainer = fake_trainer(precompute_ref_logps=args.precompute_ref_log_probs, loss_types=args.loss_type,
                           loss_weights=args.loss_weights or [1.0] * len(args.loss_type), ld_alpha=args.ld_alpha,
                           f_divergence_type=args.f_divergence_type, f_alpha_divergence_coef=args.f_alpha_divergence_coef,
                           label_smoothing=args.label_smoothing, use_weighting=args.use_weighting, beta=args.beta, args=args)
    leaf = policy.clone().requires_grad_()
    sequences = torch.cat([leaf[:, 0], leaf[:, 1]])  # TRL's batch: the chosen, then the rejected
    mask = completion_mask(torch.cat([tokens[:, 0], tokens[:, 1]]), int(tokens.max()) + 2)
    inputs = {"input_ids": torch.zeros_like(mask), "attention_mask": torch.ones_like(mask), "completion_mask": mask,
              "ref_chosen_logps": reference[:, 0], "ref_rejected_logps": reference[:, 1]}
    loss = trl.DPOTrainer._compute_loss(trainer, StubModel({0: (sequences, mask)}), inputs, False)
    loss.backward()
    return loss.detach(), leaf.grad


# Every loss_type of TRL 1.16's DPOTrainer that is ours too, with our parameters as TRL's config.
TRL_DPO_LOSSES = {
    "sigmoid": {}, "hinge": {}, "ipo": {}, "nca_pair": {}, "bco_pair": {}, "sppo_hard": {}, "apo_zero": {}, "apo_down": {},
    "sft": {}, "sigmoid_norm": {},
    "robust": {"label_smoothing": 0.1}, "exo_pair": {"label_smoothing": 1e-3}, "discopop": {"discopop_tau": 0.05},
}
# Sums as TRL combines them (loss_type lists with loss_weights).
TRL_DPO_SUMS = {
    "mpo": (["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0]),
    "rpo": (["sigmoid", "sft"], [1.0, 1.0]),
    "hinge:0.3 + apo_zero:1.7": (["hinge", "apo_zero"], [0.3, 1.7]),
}


def test_every_trl_dpo_loss_we_share_is_compared():
    """The comparison covers every objective of ours that TRL's DPOTrainer has (the defaults of
    our parameters, as TRL's config gives them)."""
    trl_module("trl")
    from trl import DPOConfig

    help_text = DPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    trl_types = set(help_text.split("Possible values are:")[1].split(". If")[0].replace("`", "").replace("'", "").replace(" ", "").split(","))
    assert set(TRL_DPO_LOSSES) == trl_types & set(OBJECTIVES), trl_types
    defaults = parse_objective("robust").parameters
    assert TRL_DPO_LOSSES["robust"]["label_smoothing"] == defaults.label_smoothing
    assert TRL_DPO_LOSSES["exo_pair"]["label_smoothing"] == defaults.exo_epsilon
    assert TRL_DPO_LOSSES["discopop"]["discopop_tau"] == defaults.discopop_tau


@pytest.mark.parametrize("name", sorted(TRL_DPO_LOSSES))
@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_each_dpo_objective_equals_trls_loss_and_gradients(name, beta, tmp_path):
    policy, reference, tokens = random_pairs(seed=len(name))
    expected, expected_grad = trl_dpo([name], None, policy, reference, tokens, beta, tmp_path, **TRL_DPO_LOSSES[name])
    loss, grad = ours(name, policy, reference, tokens, beta)
    torch.testing.assert_close(loss, expected.to(loss), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grad, expected_grad.to(grad), rtol=1e-6, atol=1e-9)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("objective", sorted(TRL_DPO_SUMS))
def test_weighted_sums_equal_trls_combined_losses(objective, tmp_path):
    types, weights = TRL_DPO_SUMS[objective]
    policy, reference, tokens = random_pairs(seed=7)
    expected, expected_grad = trl_dpo(types, weights, policy, reference, tokens, 0.1, tmp_path)
    loss, grad = ours(objective, policy, reference, tokens, 0.1)
    torch.testing.assert_close(loss, expected.to(loss), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grad, expected_grad.to(grad), rtol=1e-6, atol=1e-9)


def test_the_objectives_compared_with_trl_differ_from_one_another(tmp_path):
    """A check that could not tell the objectives apart would pass whatever --objective did."""
    policy, reference, tokens = random_pairs(seed=3)
    values = {name: ours(name, policy, reference, tokens, 0.1)[0].item() for name in OBJECTIVES if name not in ("kto", "mdpo")}
    assert len({round(value, 9) for value in values.values()}) == len(values), values


@pytest.mark.parametrize("beta, gamma", [(2.0, 1.0), (0.3, 0.5)])
def test_simpo_equals_trls_cpo_loss(beta, gamma):
    """SimPO is TRL's CPOTrainer.cpo_loss with loss_type simpo (cpo_alpha 0, no smoothing) on
    the average log-probs of the answers."""
    cpo = trl_module("trl.experimental.cpo")
    policy, _, tokens = random_pairs(seed=11)
    leaf = policy.clone().requires_grad_()
    trainer = fake_trainer(alpha=0.0, beta=beta, simpo_gamma=gamma, label_smoothing=0.0, loss_type="simpo")
    averages = leaf / tokens
    losses, _, _ = cpo.CPOTrainer.cpo_loss(trainer, averages[:, 0], averages[:, 1])
    losses.mean().backward()
    loss, grad = ours("simpo", policy, None, tokens, beta, simpo_gamma=gamma)
    torch.testing.assert_close(loss, losses.mean().detach().to(loss), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grad, leaf.grad.to(grad), rtol=1e-6, atol=1e-9)


def test_orpo_equals_trls_odds_ratio_plus_its_nll(tmp_path):
    """ORPO = the chosen's NLL per answer token + lambda (beta) * L_OR. The odds-ratio part is
    TRL's ORPOTrainer.odds_ratio_loss on the average log-probs; the NLL is TRL's DPO sft term
    (ORPOTrainer's own NLL also runs over the prompt's tokens; the paper's, and ours, over the answer's)."""
    orpo = trl_module("trl.experimental.orpo")
    policy, reference, tokens = random_pairs(seed=13)
    leaf = policy.clone().requires_grad_()
    averages = leaf / tokens
    odds, *_ = orpo.ORPOTrainer.odds_ratio_loss(fake_trainer(beta=0.1), averages[:, 0], averages[:, 1])
    (-odds.mean()).backward()
    odds_grad = leaf.grad
    nll, nll_grad = trl_dpo(["sft"], None, policy, reference, tokens, 0.1, tmp_path)
    loss, grad = ours("odds_ratio", policy, None, tokens, 0.1)
    torch.testing.assert_close(loss, -odds.mean().detach().to(loss), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grad, odds_grad.to(grad), rtol=1e-6, atol=1e-9)
    loss, grad = ours("orpo", policy, None, tokens, 0.1)
    torch.testing.assert_close(loss, (nll - odds.mean().detach()).to(loss), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grad, (nll_grad + odds_grad).to(grad), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.33, 0.7)])
def test_kto_equals_trls_kto_loss(weights):
    """KTO on unpaired records: TRL's KTOTrainer._compute_loss on the same log-probs of each
    record's completion and of its completion under another prompt (the KL estimate)."""
    trl = trl_module("trl")
    generator = torch.Generator().manual_seed(5)
    completion = -(torch.rand(8, generator=generator, dtype=torch.float64) * 30 + 1)
    mismatched = -(torch.rand(8, generator=generator, dtype=torch.float64) * 30 + 1)
    reference = -(torch.rand(8, 2, generator=generator, dtype=torch.float64) * 30 + 1)
    reference[:, 1] -= 3  # the policy's mismatched rewards average above 0: the reference point is not clamped
    labels = torch.tensor([True, False, True, True, False, False, True, False])
    tokens = torch.randint(1, 12, (8,), generator=generator)
    leaf = completion.clone().requires_grad_()
    mask = completion_mask(tokens, int(tokens.max()) + 2)
    model = StubModel({0: (leaf, mask), 1: (mismatched, mask)})
    batch = {"input_ids": torch.zeros_like(mask), "attention_mask": torch.ones_like(mask), "completion_mask": mask,
             "KL_input_ids": torch.ones_like(mask), "KL_attention_mask": torch.ones_like(mask), "KL_completion_mask": mask,
             "label": labels, "ref_logps": reference[:, 0], "ref_KL_logps": reference[:, 1]}
    trainer = fake_trainer(calculate_KL=True, precompute_ref_logps=True, loss_type="kto", beta=0.1,
                           desirable_weight=weights[0], undesirable_weight=weights[1])
    trainer._compute_kl_logps = lambda model, batch: trl.KTOTrainer._compute_kl_logps(trainer, model, batch)
    expected = trl.KTOTrainer._compute_loss(trainer, model, batch, False)
    expected.backward()
    assert trainer._metrics["train"]["kl"][0] > 0
    policy = torch.stack([completion, mismatched], dim=1)  # KTO's layout: own prompt, another's
    loss, grad = ours("kto", policy, reference, torch.stack([tokens, tokens], 1), 0.1, layout=KTO_LAYOUT, desirable=labels,
                      desirable_weight=weights[0], undesirable_weight=weights[1])
    torch.testing.assert_close(loss, expected.detach().to(loss), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grad[:, 0], leaf.grad.to(grad), rtol=1e-6, atol=1e-9)
    assert (grad[:, 1] == 0).all()  # the reference point is not differentiated


# --- hand tables from the papers' formulas, on MCM-DPO's seven terms ----------------------------

UPSTREAM_ORDER = ["cw_mw_yw", "cw_mw_yl", "cw_ml_yw", "cw_ml_yl", "cl_mw_yw", "cl_mw_yl", "cl_ml_yw", "cl_ml_yl"]
NEGATIVE_OF = {"response": "cw_mw_yl", "image": "cw_ml_yw", "context": "cl_mw_yw", "context_response": "cl_mw_yl",
               "image_response": "cw_ml_yl", "context_image": "cl_ml_yw", "all": "cl_ml_yl"}
PAPER_WEIGHTS = {"response": 1.0, "image": 0.5, "context": 0.5, "context_response": 0.2, "image_response": 0.2,
                 "context_image": 0.2, "all": 0.2}
POLICY = [[-10.0, -14.0, -12.5, -16.0, -11.0, -15.5, -13.0, -17.0], [-8.0, -7.0, -9.5, -9.0, -8.5, -7.5, -10.0, -9.8],
          [-30.0, -41.0, -33.0, -45.0, -31.5, -40.0, -36.0, -44.0]]
REFERENCE = [[-11.0, -12.0, -11.5, -13.0, -10.5, -13.0, -12.0, -14.0], [-8.2, -7.5, -8.0, -8.5, -8.1, -7.0, -9.0, -9.0],
             [-31.0, -39.0, -32.0, -42.0, -30.0, -41.0, -35.0, -43.5]]
TOKENS = [[5, 7, 5, 7, 5, 7, 5, 7], [3, 2, 3, 2, 3, 2, 3, 2], [11, 14, 11, 14, 11, 14, 11, 14]]


def nls(x: float) -> float:
    """-log sigmoid(x)."""
    return math.log1p(math.exp(-x)) if x > 0 else -x + math.log1p(math.exp(x))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def hand_losses(name: str, beta: float, weights: dict[str, float] = PAPER_WEIGHTS, normalizer: float = 2.8) -> list[float]:
    """Each record's loss, from the papers' formulas, over MCM-DPO's terms: a function of the
    margin takes sum_k (w_k / N) * margin_k; one of the two rewards sums its pair losses with
    those weights (the records in the upstream column order)."""
    eps, tau, gamma, flip = 1e-3, 0.05, 0.5, 0.1
    losses = []
    for p, q, n in zip(POLICY, REFERENCE, TOKENS):
        at = {name: i for i, name in enumerate(UPSTREAM_ORDER)}
        reward = {t: p[i] - q[i] for t, i in at.items()}
        token_reward = {t: (p[i] - q[i]) / n[i] for t, i in at.items()}
        mean_logp = {t: p[i] / n[i] for t, i in at.items()}
        log_odds = {t: m - math.log(1 - math.exp(m)) for t, m in mean_logp.items()}

        def margin(values: dict[str, float]) -> float:
            return sum(w / normalizer * (values["cw_mw_yw"] - values[NEGATIVE_OF[k]]) for k, w in weights.items())

        def pairs(loss) -> float:
            return sum(w / normalizer * loss(reward["cw_mw_yw"], reward[NEGATIVE_OF[k]]) for k, w in weights.items())

        z = beta * margin(reward)
        table = {
            "sigmoid": lambda: nls(z),
            "ipo": lambda: (margin(token_reward) - 1 / (2 * beta)) ** 2,
            "robust": lambda: ((1 - flip) * nls(z) - flip * nls(-z)) / (1 - 2 * flip),
            "hinge": lambda: max(0.0, 1 - z),
            "exo_pair": lambda: sig(z) * (-nls(z) - math.log(1 - eps)) + sig(-z) * (-nls(-z) - math.log(eps)),
            "discopop": lambda: nls(z) * (1 - sig(z / tau)) + math.exp(-z) * sig(z / tau),
            "sigmoid_norm": lambda: nls(beta * margin(token_reward)),
            "simpo": lambda: nls(beta * margin(mean_logp) - gamma),
            "odds_ratio": lambda: beta * nls(margin(log_odds)),
            "bco_pair": lambda: pairs(lambda w, l: nls(beta * w) + nls(-beta * l)),
            "sppo_hard": lambda: pairs(lambda w, l: (w - 0.5 / beta) ** 2 + (l + 0.5 / beta) ** 2),
            "nca_pair": lambda: pairs(lambda w, l: nls(beta * w) + 0.5 * nls(-beta * w) + 0.5 * nls(-beta * l)),
            "apo_zero": lambda: pairs(lambda w, l: 1 - sig(beta * w) + sig(beta * l)),
            "apo_down": lambda: pairs(lambda w, l: sig(beta * w) + 1 - sig(beta * (w - l))),
            # mDPO: a sigmoid per term plus the reward anchor (delta 0).
            "mdpo": lambda: pairs(lambda w, l: nls(beta * (w - l))) + nls(beta * reward["cw_mw_yw"]),
        }
        if name in table:
            losses.append(table[name]())
    if name == "sft":  # the chosen's NLL per answer token of the batch, spread over the records (their mean)
        losses = [-p[0] * len(POLICY) / sum(n[0] for n in TOKENS) for p in POLICY]
    return losses


def columns(layout, rows):
    return torch.tensor([[row[UPSTREAM_ORDER.index(t.name)] for t in layout.triples] for row in rows], dtype=torch.float64)


HAND_CHECKED = ["sigmoid", "ipo", "robust", "hinge", "exo_pair", "discopop", "sigmoid_norm", "simpo", "odds_ratio", "bco_pair",
                "sppo_hard", "nca_pair", "apo_zero", "apo_down", "mdpo", "sft"]


def test_every_paired_objective_has_a_hand_table():
    assert set(HAND_CHECKED) == set(OBJECTIVES) - {"kto"}


@pytest.mark.parametrize("name", HAND_CHECKED)
@pytest.mark.parametrize("terms", [MCMDPO_TERMS, ("response",), ("image", "all")])
def test_each_objective_on_mcmdpos_terms_matches_the_hand_table(name, terms):
    layout = build_layout(terms)
    weights = {k: PAPER_WEIGHTS[k] for k in terms}
    expected = hand_losses(name, 0.3, weights)
    policy, reference, tokens = columns(layout, POLICY), columns(layout, REFERENCE), columns(layout, TOKENS).long()
    losses, metrics = PreferenceLoss(layout, 0.3, parse_objective(name))(policy, reference, tokens)
    assert losses.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_mdpo_is_dpo_plus_the_conditional_image_term_plus_the_anchor():
    """mDPO (Wang et al. 2024, eq. 5): -log s(b (r(y_w) - r(y_l))) - log s(b (r(m_w) - r(m_l)))
    - log s(b r(y_w)); its layout is DPO's response term with our image term, weights 1."""
    assert MDPO_LAYOUT.term_names == ("response", "image") and MDPO_LAYOUT.scales == (1.0, 1.0)
    assert [t.name for t in MDPO_LAYOUT.triples] == ["cw_mw_yw", "cw_mw_yl", "cw_ml_yw"]
    policy, reference = columns(MDPO_LAYOUT, POLICY), columns(MDPO_LAYOUT, REFERENCE)
    losses, _ = PreferenceLoss(MDPO_LAYOUT, 0.1, parse_objective("mdpo"))(policy, reference)
    for loss, p, q in zip(losses.tolist(), POLICY, REFERENCE):
        chosen, rejected, corrupted = p[0] - q[0], p[1] - q[1], p[2] - q[2]
        assert loss == pytest.approx(nls(0.1 * (chosen - rejected)) + nls(0.1 * (chosen - corrupted)) + nls(0.1 * chosen), rel=1e-12)


def test_kto_by_hand():
    """KTO (Ethayarajh et al. 2024, eq. 7-8): z = max(0, mean mismatched reward), desirable
    w_d (1 - s(b (r - z))), undesirable w_u (1 - s(b (z - r)))."""
    policy = torch.tensor([[-5.0, -9.0], [-7.0, -6.0], [-4.0, -8.0]], dtype=torch.float64)
    reference = torch.tensor([[-6.0, -10.0], [-6.5, -8.0], [-4.5, -7.0]], dtype=torch.float64)
    desirable = torch.tensor([True, False, True])
    z = max(0.0, ((-9 + 10) + (-6 + 8) + (-8 + 7)) / 3)
    expected = [2.0 * (1 - sig(0.2 * (1.0 - z))), 0.5 * (1 - sig(0.2 * (z + 0.5))), 2.0 * (1 - sig(0.2 * (0.5 - z)))]
    loss = PreferenceLoss(KTO_LAYOUT, 0.2, parse_objective("kto", {"desirable_weight": 2.0, "undesirable_weight": 0.5}))
    losses, metrics = loss(policy, reference, None, desirable)
    assert losses.tolist() == pytest.approx(expected, rel=1e-12)
    assert metrics["kto/reference_point"].tolist() == pytest.approx([z] * 3)
    with pytest.raises(ValueError, match="unpaired data"):
        loss(policy, reference)


def test_the_default_objective_is_mcmdpos_sigmoid_unchanged():
    policy, reference, tokens = columns(MCMDPO_LAYOUT, POLICY), columns(MCMDPO_LAYOUT, REFERENCE), columns(MCMDPO_LAYOUT, TOKENS)
    default, _ = PreferenceLoss(MCMDPO_LAYOUT, 0.1)(policy, reference)
    assert default.tolist() == pytest.approx(hand_losses("sigmoid", 0.1), rel=1e-12)
    named, _ = PreferenceLoss(MCMDPO_LAYOUT, 0.1, parse_objective("sigmoid"))(policy, reference, tokens)
    assert torch.equal(default, named)


def test_length_normalised_objectives_read_per_token_means_whatever_the_reduction():
    """Given per-token means (--logps_reduction mean) with their counts, IPO and the NLL see what
    they see given sums; the sigmoid takes the log-probs as reduced."""
    policy, reference, tokens = columns(MCMDPO_LAYOUT, POLICY), columns(MCMDPO_LAYOUT, REFERENCE), columns(MCMDPO_LAYOUT, TOKENS)
    for name in ("ipo", "sft", "simpo", "orpo"):
        summed, _ = PreferenceLoss(MCMDPO_LAYOUT, 0.1, parse_objective(name))(policy, reference, tokens)
        averaged, _ = PreferenceLoss(MCMDPO_LAYOUT, 0.1, parse_objective(name), True)(policy / tokens, reference / tokens, tokens)
        torch.testing.assert_close(summed, averaged)
    summed, _ = PreferenceLoss(MCMDPO_LAYOUT, 0.1)(policy, reference, tokens)
    averaged, _ = PreferenceLoss(MCMDPO_LAYOUT, 0.1, average_logps=True)(policy / tokens, reference / tokens, tokens)
    assert not torch.allclose(summed, averaged)


def test_a_sum_logs_each_part_and_adds_them():
    policy, reference, tokens = columns(DPO_LAYOUT, POLICY), columns(DPO_LAYOUT, REFERENCE), columns(DPO_LAYOUT, TOKENS)
    losses, metrics = PreferenceLoss(DPO_LAYOUT, 0.1, parse_objective("mpo"))(policy, reference, tokens)
    parts = [metrics[f"objective/{name}"] for name in ("sigmoid", "bco_pair", "sft")]
    torch.testing.assert_close(losses, sum(parts))
    sigmoid, _ = PreferenceLoss(DPO_LAYOUT, 0.1)(policy, reference)
    torch.testing.assert_close(parts[0], 0.8 * sigmoid)


def test_reference_free_objectives_need_no_reference_and_others_refuse_to_run_without():
    policy, tokens = columns(DPO_LAYOUT, POLICY), columns(DPO_LAYOUT, TOKENS)
    for name in ("simpo", "orpo", "sft", "odds_ratio", "sft + simpo:2"):
        loss = PreferenceLoss(DPO_LAYOUT, 2.0, parse_objective(name))
        assert not loss.needs_reference
        losses, metrics = loss(policy, None, tokens)
        assert torch.isfinite(losses).all() and metrics["rewards/chosen"].tolist() == pytest.approx([2.0 * p[0] for p in POLICY])
    for name in ("sigmoid", "ipo", "rpo", "mdpo", "kto", "simpo + bco_pair"):
        assert parse_objective(name).needs_reference, name
    with pytest.raises(ValueError, match="needs reference log-probs"):
        PreferenceLoss(DPO_LAYOUT, 0.1, parse_objective("rpo"))(policy, None, tokens)


# --- the syntax and the flags -------------------------------------------------------------------

def test_objective_syntax():
    assert [(o.name, w) for o, w in parse_objective("sigmoid:0.8 + bco_pair:0.2+sft:1.0").parts] == [
        ("sigmoid", 0.8), ("bco_pair", 0.2), ("sft", 1.0)]
    assert parse_objective("mpo").parts == parse_objective("sigmoid:0.8+bco_pair:0.2+sft").parts
    assert [(o.name, w) for o, w in parse_objective("rpo:2").parts] == [("sigmoid", 2.0), ("sft", 2.0)]  # a weight scales a sum's parts
    assert [o.name for o, _ in parse_objective("orpo").parts] == ["sft", "odds_ratio"]
    assert set(PRESETS) == {"rpo", "mpo", "orpo"} and not set(PRESETS) & set(OBJECTIVES)
    for text, message in [
        ("dpo", "unknown 'dpo'"), ("sigmoid:heavy", "'heavy' of sigmoid is not a number"), ("sigmoid:0", "must be positive"),
        ("ipo:-1", "must be positive"), ("sigmoid + sigmoid", "named twice"), ("rpo + sft", "named twice"),
        ("kto + sft", "mixes with no other objective"), ("mdpo + kto", "mixes with no other"), ("sigmoid +", "is not NAME"),
        ("sigmoid:1:2", "is not NAME"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_objective(text)


def required(tmp_path: Path) -> list[str]:
    return ["--model_name_or_path", "m", "--data_path", "d.json", "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--stage", "sft", "--objective", "ipo"], "--stage sft does not use --objective"),
        (["--stage", "dpo", "--objective", "dpo2"], "unknown 'dpo2'"),
        (["--stage", "dpo", "--label_smoothing", "0.2"], "--objective sigmoid does not use --label_smoothing"),
        (["--stage", "dpo", "--objective", "ipo", "--simpo_gamma", "1"], "--objective ipo does not use --simpo_gamma"),
        (["--stage", "dpo", "--desirable_weight", "1.3"], "does not use --desirable_weight"),
        (["--stage", "dpo", "--objective", "sft", "--beta", "0.2"], "--objective sft does not use --beta"),
        (["--stage", "dpo", "--objective", "ipo", "--logps_reduction", "mean"], "--objective ipo does not use --logps_reduction"),
        (["--stage", "dpo", "--objective", "simpo", "--precompute_reference_logps", "false"],
         "--objective simpo does not use --precompute_reference_logps"),
        (["--stage", "dpo", "--objective", "orpo", "--reference_cache_dir", "c"], "--objective orpo does not use --reference_cache_dir"),
        (["--stage", "dpo", "--objective", "simpo", "--ref_model_name_or_path", "r"], "needs no reference model"),
        (["--stage", "mcmdpo", "--objective", "kto", "--terms", "response"], "--objective kto does not use --terms"),
        (["--stage", "dpo", "--objective", "robust", "--label_smoothing", "0.5"], "--label_smoothing must lie in [0, 0.5)"),
        (["--stage", "dpo", "--objective", "kto", "--undesirable_weight", "0"], "--undesirable_weight must be positive"),
    ],
)
def test_flags_the_objective_does_not_use_are_errors(argv, message, capsys, tmp_path):
    assert main([*argv, "--model_name_or_path", "x", "--data_path", "y", "--output_dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_an_objectives_own_layout_replaces_the_stages(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    parse = lambda *argv: parse_arguments([*argv, *required(tmp_path)])[2]  # noqa: E731
    assert parse("--stage", "dpo", "--objective", "mdpo").layout == MDPO_LAYOUT
    assert parse("--stage", "mcmdpo", "--objective", "kto").layout == KTO_LAYOUT
    # mdpo's terms can be widened (a sigmoid per term, plus the anchor); the negatives it scores are its flags.
    widened = parse("--stage", "dpo", "--objective", "mdpo", "--terms", "response", "image", "context", "--negative_image", "crop")
    assert widened.layout.term_names == ("response", "image", "context") and widened.negative_image == "crop"
    assert parse("--stage", "mcmdpo", "--objective", "ipo").layout == MCMDPO_LAYOUT  # the others keep the stage's
    assert parse("--stage", "dpo", "--objective", "mpo").objectives.names == ("sigmoid", "bco_pair", "sft")


# --- unpaired data (KTO) ------------------------------------------------------------------------

def write_unpaired(path: Path, records: list[dict[str, Any]]) -> Path:
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(record) + "\n" for record in records))
    else:
        path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("name", ["kto.json", "kto.jsonl", "kto.parquet"])
def test_unpaired_records_read_in_every_format(name, tmp_path):
    records = [
        {"idx": 1, "image_path": "a.png", "question": "Describe.", "completion": "A red bus.", "label": True},
        {"idx": 2, "image_path": "b.png", "text": json.dumps({"question": "Context: x", "completion": "A cat.", "label": False})},
    ]
    if name.endswith(".parquet"):  # a parquet table has one schema: every field in every row
        records = [{"idx": r["idx"], "image_path": r["image_path"], "question": "Q", "completion": f"A{r['idx']}", "label": r["idx"] == 1}
                   for r in records]
    kind, examples, problems = parse_records(write_unpaired(tmp_path / name, records), "unpaired")
    assert kind == "unpaired" and not problems
    assert [(e.idx, e.image.path, e.desirable) for e in examples] == [(1, "a.png", True), (2, "b.png", False)]
    if name == "kto.json":
        assert (examples[1].question, examples[1].completion) == ("Context: x", "A cat.")
        assert parse_records(tmp_path / name)[0] == "unpaired"  # guessed from the first record


def test_unpaired_records_problems_name_their_field(tmp_path):
    records = [{"idx": 1, "image_path": "a.png", "question": "Q", "completion": "A"},
               {"idx": 2, "image_path": "a.png", "question": "Q", "completion": "A", "label": "yes"},
               {"idx": 3, "image_path": "a.png", "question": "Q", "label": True}]
    _, examples, problems = parse_records(write_unpaired(tmp_path / "bad.json", records), "unpaired")
    assert not examples
    assert [(p.idx, p.field) for p in problems] == [(1, "label"), (2, "label"), (3, "completion")]
    assert "must be true (desirable) or false (undesirable), found 'yes'" in str(problems[1])


def test_pairs_become_unpaired_records(synthetic_dir, tmp_path):
    from mcmdpo.preference.dataset import unpaired_records

    _, pairs, _ = parse_records(synthetic_dir / "pref_train.json", "preference")
    records = unpaired_records(pairs[:3])
    _, examples, problems = parse_records(write_unpaired(tmp_path / "kto.json", records), "unpaired")
    assert not problems and len(examples) == 6
    assert [(e.completion, e.desirable) for e in examples[:2]] == [(pairs[0].chosen, True), (pairs[0].rejected, False)]
    assert {e.image for e in examples[:2]} == {pairs[0].image} and examples[0].question == pairs[0].question


def test_unpaired_items_carry_their_label_and_score_one_answer(synthetic_dir, tmp_path, processor):
    from mcmdpo.data.image_inputs import ImageInputs
    from mcmdpo.preference.batch import ANSWER_TOKENS, DESIRABLE, record_fields
    from mcmdpo.preference.dataset import PreferenceDataset, unpaired_records

    _, pairs, _ = parse_records(synthetic_dir / "pref_train.json", "preference")
    _, examples, _ = parse_records(write_unpaired(tmp_path / "kto.json", unpaired_records(pairs[:4])), "unpaired")
    dataset = PreferenceDataset(examples, processor, synthetic_dir / "image", 2048, ImageInputs(), layout=KTO_LAYOUT)
    items = [dataset[0], dataset[1]]
    fields = record_fields(items)
    assert fields[DESIRABLE].tolist() == [True, False] and fields[ANSWER_TOKENS].shape == (2, 2)
    assert (fields[ANSWER_TOKENS] > 0).all()
    with pytest.raises(ValueError, match="score a rejected answer"):
        PreferenceDataset(examples, processor, synthetic_dir / "image", 2048, ImageInputs(), layout=DPO_LAYOUT)


# --- two training steps per objective, tree-packed and plain ------------------------------------

RUN = ["--per_device_train_batch_size", "4", "--max_steps", "2", "--learning_rate", "2e-3", "--logging_steps", "1",
       "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true", "--dataloader_num_workers", "0", "--seed", "0",
       "--plot", "false"]
EVERY_OBJECTIVE = [*OBJECTIVES, *PRESETS]


@pytest.fixture(scope="module")
def small_data(synthetic_dir, tmp_path_factory):
    """8 preference records, and the same as 16 unpaired records (KTO)."""
    from mcmdpo.preference.dataset import unpaired_records

    folder = tmp_path_factory.mktemp("objective_data")
    records = json.loads((synthetic_dir / "pref_train.json").read_text())[:8]
    (folder / "pairs.json").write_text(json.dumps(records))
    _, pairs, _ = parse_records(folder / "pairs.json", "preference")
    (folder / "unpaired.json").write_text(json.dumps(unpaired_records(pairs)))
    (folder / "image").symlink_to(synthetic_dir / "image")
    return folder


class Counts:
    """Model loads and reference forwards in one run (the policy is one load)."""

    def __init__(self, monkeypatch):
        from mcmdpo.model import loading
        from mcmdpo.train.preference_trainer import PreferenceTrainer

        self.loads = self.reference_passes = 0
        load, reference_logps = loading._load_model, PreferenceTrainer.reference_logps

        def counted_load(*args, **kwargs):
            self.loads += 1
            return load(*args, **kwargs)

        def counted_reference(trainer, batch):
            self.reference_passes += 1
            return reference_logps(trainer, batch)

        monkeypatch.setattr(loading, "_load_model", counted_load)
        monkeypatch.setattr(PreferenceTrainer, "reference_logps", counted_reference)


def logged(output: Path) -> list[dict[str, float]]:
    return [entry for entry in json.loads((output / "trainer_state.json").read_text())["log_history"] if "loss" in entry]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("objective", EVERY_OBJECTIVE)
def test_two_steps_of_each_objective_tree_packed_equal_plain(objective, tiny_checkpoint, small_data, tmp_path, monkeypatch):
    """Each objective trains: two steps whose losses (the second after an update) and metrics
    are the same tree-packed and plain; a reference-free objective loads no reference model,
    runs no reference forward and caches nothing, the others compute and cache the reference."""
    spec = parse_objective(objective)
    stage = "dpo" if spec.layout else "mcmdpo"  # MCM-DPO's seven terms, or the objective's own layout
    data = small_data / ("unpaired.json" if spec.unpaired else "pairs.json")
    runs = {}
    for packing in ("tree", "none"):
        counts = Counts(monkeypatch)
        cache = tmp_path / f"cache_{packing}"
        argv = ["--stage", stage, "--objective", objective, "--model_name_or_path", str(tiny_checkpoint), "--data_path", str(data),
                "--image_folder", str(small_data / "image"), "--output_dir", str(tmp_path / packing), "--sequence_packing", packing,
                *RUN]
        if spec.needs_reference:
            argv += ["--reference_cache_dir", str(cache)]
        assert main(argv) == 0
        runs[packing] = logged(tmp_path / packing)
        if spec.needs_reference:
            assert counts.loads == 2 and counts.reference_passes > 0 and len(list(cache.glob("*.pt"))) == 1, vars(counts)
        else:
            assert counts.loads == 1 and counts.reference_passes == 0 and not cache.exists(), vars(counts)
    tree, plain = runs["tree"], runs["none"]
    assert len(tree) == len(plain) == 2 and all(math.isfinite(step["loss"]) for step in tree)
    for tree_step, plain_step in zip(tree, plain):
        for key in tree_step.keys() - {"epoch", "step", "learning_rate", "grad_norm"}:
            assert tree_step[key] == pytest.approx(plain_step[key], rel=1e-4, abs=1e-5), (key, tree_step, plain_step)
    assert tree[1]["loss"] != tree[0]["loss"]  # the first step moved the model
    if spec.needs_reference and "sft" not in spec.names:  # at step one the policy is the reference: every reward is 0
        layout = parse_arguments(argv)[2].layout
        zeros = torch.zeros(1, len(layout.triples))
        expected, _ = PreferenceLoss(layout, 0.1, spec)(zeros, zeros, torch.ones_like(zeros), torch.tensor([True]))
        assert tree[0]["loss"] == pytest.approx(expected.item(), rel=1e-4), objective
    if len(spec.parts) > 1:
        assert {f"objective/{name}" for name in spec.names} <= tree[0].keys()


# --- the recipes -------------------------------------------------------------------------------

OBJECTIVE_RECIPES = {"ipo": "ipo", "simpo": "simpo", "orpo": "orpo", "kto": "kto", "mpo": "mpo", "mdpo": "mdpo"}


def recipe(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "configs" / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", sorted(OBJECTIVE_RECIPES))
def test_each_objective_recipe_is_dpos_run_with_its_objective(name, tmp_path, monkeypatch):
    """The recipes compare objective for objective: DPO's recipe, its objective and that
    objective's own settings, nothing else; each parses to its objective."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    own, dpo = recipe(name), recipe("dpo")
    assert own["objective"] == OBJECTIVE_RECIPES[name]
    assert {key: value for key, value in own.items() if key in dpo} == dpo
    extra = own.keys() - dpo.keys() - {"objective"}
    assert extra <= set(parse_objective(own["objective"]).reads) | {"negative_image"}, extra
    training = parse_arguments(["--config", str(REPO_ROOT / "configs" / f"{name}.yaml"), *required(tmp_path)])[2]
    assert training.objectives.names == parse_objective(OBJECTIVE_RECIPES[name]).names
    for key in extra:
        assert getattr(training, key) == own[key]


@pytest.mark.parametrize("name", sorted(OBJECTIVE_RECIPES))
def test_no_objective_recipe_restates_a_default(name, tmp_path, monkeypatch):
    """A key whose removal leaves the run unchanged restates a default (``stage`` names the run)."""
    import dataclasses

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    own = recipe(name)

    def values(path: Path) -> list[dict[str, Any]]:
        arguments = parse_arguments(["--config", str(path), *required(tmp_path)])
        return [{spec.name: getattr(args, spec.name) for spec in dataclasses.fields(args)} for args in arguments]

    whole = values(REPO_ROOT / "configs" / f"{name}.yaml")
    for key in own.keys() - {"stage"}:
        lean = tmp_path / f"without_{key}.yaml"
        lean.write_text(yaml.safe_dump({k: v for k, v in own.items() if k != key}))
        try:
            without = values(lean)
        except ValueError:  # e.g. without its objective, the objective's settings are errors: not a default
            continue
        assert without != whole, f"configs/{name}.yaml: {key!r} restates its default"
