"""The objective registry: how a layout's per-term margins become a loss (``--objective``).

Beside the term registry (:mod:`~mcmdpo.preference.layout`, which sequences are scored and which
pairs compared), this says what is done with their log-probabilities: MCM-DPO's sigmoid (the
default), the variants TRL's DPOTrainer offers (IPO, robust, hinge, EXO, BCO, SPPO, NCA, APO,
DiscoPOP, length-normalised sigmoid), the reference-free SimPO and ORPO, an NLL term on the chosen
(RPO, MPO), KTO on unpaired alt-text and mDPO's conditional image term with its reward anchor.
Each objective is one :class:`Objective` entry of :data:`OBJECTIVES`, a pure function of a
:class:`ScoredRecords`; an ``--objective`` is a weighted sum of them (:func:`parse_objective`)::

    sigmoid                               MCM-DPO's (and DPO's) loss, the default
    ipo                                   one objective
    sigmoid:0.8 + bco_pair:0.2 + sft:1.0  a weighted sum (MPO; a missing weight is 1)
    mpo                                   a named sum (PRESETS), the same

Every objective works with DPO's one term and MCM-DPO's seven, in one of two ways:

- a function of the margin (sigmoid, ipo, robust, hinge, exo_pair, discopop, sigmoid_norm, simpo,
  odds_ratio) takes the combined margin M = sum_k (w_k / normaliser) * margin_k, as MCM-DPO's
  single sigmoid does;
- one that reads the positive's and the negative's rewards apart (bco_pair, sppo_hard, nca_pair,
  apo_zero, apo_down) is the weighted sum over the terms of its loss of each term's pair.

With DPO's layout (the response term alone, normaliser 1) both are TRL's loss exactly
(tests/test_objectives.py checks this against TRL's own code). docs/objectives.md lists every
objective with its formula, whether it needs a reference model, and its source."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Callable, Collection, Mapping

import torch
import torch.nn.functional as F

from mcmdpo.preference.layout import ANCHOR, PreferenceLayout, build_layout

DEFAULT_OBJECTIVE = "sigmoid"
LN2 = math.log(2.0)


@dataclass(frozen=True)
class ObjectiveParameters:
    """The settings some objectives read (each flag of the same name; ``beta`` is every
    objective's temperature and is a flag of its own). Defaults from the papers that define them."""

    label_smoothing: float = 0.1  # robust: the probability a label is flipped (Chowdhury et al. 2024 suggest 0.1)
    exo_epsilon: float = 1e-3  # exo_pair: the smoothing of the target distribution (EXO's suggestion)
    simpo_gamma: float = 0.5  # simpo: the target reward margin (TRL's default)
    discopop_tau: float = 0.05  # discopop: the temperature of the mixing coefficient (the paper's)
    desirable_weight: float = 1.0  # kto: weight of the desirable records' losses
    undesirable_weight: float = 1.0  # kto: weight of the undesirable records' losses

    def __post_init__(self) -> None:
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"--label_smoothing must lie in [0, 0.5), got {self.label_smoothing}")
        if not 0 < self.exo_epsilon < 1:
            raise ValueError(f"--exo_epsilon must lie in (0, 1), got {self.exo_epsilon}")
        for name in ("discopop_tau", "desirable_weight", "undesirable_weight"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")


PARAMETER_NAMES = tuple(spec.name for spec in dataclasses.fields(ObjectiveParameters))


@dataclass(frozen=True)
class ScoredRecords:
    """What an objective reads of a batch: [records, sequences] policy and (when the objective
    needs one) reference log-probs, columns in ``layout.triples``' order, summed over each
    answer's tokens (``average``: per-token means, ``--logps_reduction mean``); the answer token
    count of each sequence; for unpaired records whether each is desirable."""

    layout: PreferenceLayout
    beta: float
    parameters: ObjectiveParameters
    policy: torch.Tensor
    reference: torch.Tensor | None = None
    answer_tokens: torch.Tensor | None = None
    desirable: torch.Tensor | None = None
    average: bool = False

    def rewards(self) -> torch.Tensor:
        """log pi - log pi_ref of each sequence, as the log-probs are reduced."""
        return self.policy - self._reference()

    def token_rewards(self) -> torch.Tensor:
        """The same per answer token: (log pi - log pi_ref) / |y|."""
        return self.per_token(self.policy) - self.per_token(self._reference())

    def per_token(self, logps: torch.Tensor) -> torch.Tensor:
        return logps if self.average else logps / self.answer_token_counts()

    def summed(self, logps: torch.Tensor) -> torch.Tensor:
        return logps * self.answer_token_counts() if self.average else logps

    def combined_margin(self, values: torch.Tensor) -> torch.Tensor:
        """[records]: sum_k (w_k / normaliser) * (value(positive_k) - value(negative_k))."""
        return (self.positives(values) - self.negatives(values)) @ self._scales(values)

    def term_sum(self, per_term: torch.Tensor) -> torch.Tensor:
        """[records]: sum_k (w_k / normaliser) * per_term[:, k]."""
        return per_term @ self._scales(per_term)

    def positives(self, values: torch.Tensor) -> torch.Tensor:
        return values[:, [positive for positive, _ in self.layout.pairs]]

    def negatives(self, values: torch.Tensor) -> torch.Tensor:
        return values[:, [negative for _, negative in self.layout.pairs]]

    def anchor(self, values: torch.Tensor) -> torch.Tensor:
        """[records]: the values of (c_w, m_w, y_w), the record's own context, image and chosen answer."""
        if ANCHOR not in self.layout.triples:
            raise ValueError(f"this objective reads the chosen answer (c_w, m_w, y_w), which no active term "
                             f"({', '.join(self.layout.term_names)}) scores")
        return values[:, self.layout.column(ANCHOR)]

    def _reference(self) -> torch.Tensor:
        if self.reference is None:
            raise ValueError("this objective needs reference log-probs")
        return self.reference

    def answer_token_counts(self) -> torch.Tensor:
        if self.answer_tokens is None:
            raise ValueError("this objective needs each sequence's answer token count")
        return self.answer_tokens.to(self.policy).clamp(min=1)

    def _scales(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.layout.scales, dtype=like.dtype, device=like.device)


# --- functions of the combined margin -----------------------------------------------------------

def sigmoid_loss(records: ScoredRecords) -> torch.Tensor:
    return -F.logsigmoid(records.beta * records.combined_margin(records.rewards()))


def ipo_loss(records: ScoredRecords) -> torch.Tensor:
    # beta is IPO's tau; the log-ratios per answer token, as TRL and IPO's authors take them.
    return (records.combined_margin(records.token_rewards()) - 1 / (2 * records.beta)) ** 2


def robust_loss(records: ScoredRecords) -> torch.Tensor:
    logits, flipped = records.beta * records.combined_margin(records.rewards()), records.parameters.label_smoothing
    return ((1 - flipped) * -F.logsigmoid(logits) - flipped * -F.logsigmoid(-logits)) / (1 - 2 * flipped)


def hinge_loss(records: ScoredRecords) -> torch.Tensor:
    return torch.relu(1 - records.beta * records.combined_margin(records.rewards()))


def exo_pair_loss(records: ScoredRecords) -> torch.Tensor:
    # KL(p_theta || p_target) over {positive, negative}, p_target = (1 - eps, eps).
    logits, epsilon = records.beta * records.combined_margin(records.rewards()), records.parameters.exo_epsilon
    return (torch.sigmoid(logits) * (F.logsigmoid(logits) - math.log1p(-epsilon))
            + torch.sigmoid(-logits) * (F.logsigmoid(-logits) - math.log(epsilon)))


def discopop_loss(records: ScoredRecords) -> torch.Tensor:
    logits = records.beta * records.combined_margin(records.rewards())
    mixing = torch.sigmoid(logits / records.parameters.discopop_tau)
    return -F.logsigmoid(logits) * (1 - mixing) + torch.exp(-logits) * mixing


def sigmoid_norm_loss(records: ScoredRecords) -> torch.Tensor:
    return -F.logsigmoid(records.beta * records.combined_margin(records.token_rewards()))


def simpo_loss(records: ScoredRecords) -> torch.Tensor:
    margin = records.combined_margin(records.per_token(records.policy))
    return -F.logsigmoid(records.beta * margin - records.parameters.simpo_gamma)


def odds_ratio_loss(records: ScoredRecords) -> torch.Tensor:
    # ORPO's L_OR weighted by its lambda, which is beta (as TRL has it).
    mean_logps = records.per_token(records.policy)
    log_odds = mean_logps - log1mexp(mean_logps)
    return records.beta * -F.logsigmoid(records.combined_margin(log_odds))


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2; each branch is evaluated only
    where it is taken (a placeholder elsewhere), so neither puts a NaN into the gradient."""
    near_zero = x > -LN2
    placeholder = torch.full_like(x, -1.0)
    far = torch.log1p(-torch.exp(torch.where(near_zero, placeholder, x)))
    near = torch.log(-torch.expm1(torch.where(near_zero, x, placeholder)))
    return torch.where(near_zero, near, far)


# --- per term, on the positive's and the negative's rewards ------------------------------------

def per_term(pair_loss: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> Callable[[ScoredRecords], torch.Tensor]:
    """The objective sum_k (w_k / normaliser) * pair_loss(r(positive_k), r(negative_k), beta)."""

    def loss(records: ScoredRecords) -> torch.Tensor:
        rewards = records.rewards()
        return records.term_sum(pair_loss(records.positives(rewards), records.negatives(rewards), records.beta))

    loss.__name__ = pair_loss.__name__
    return loss


def bco_pair(chosen: torch.Tensor, rejected: torch.Tensor, beta: float) -> torch.Tensor:
    return -F.logsigmoid(beta * chosen) - F.logsigmoid(-beta * rejected)


def sppo_hard(chosen: torch.Tensor, rejected: torch.Tensor, beta: float) -> torch.Tensor:
    return (chosen - 0.5 / beta) ** 2 + (rejected + 0.5 / beta) ** 2


def nca_pair(chosen: torch.Tensor, rejected: torch.Tensor, beta: float) -> torch.Tensor:
    return -F.logsigmoid(beta * chosen) - 0.5 * F.logsigmoid(-beta * chosen) - 0.5 * F.logsigmoid(-beta * rejected)


def apo_zero(chosen: torch.Tensor, rejected: torch.Tensor, beta: float) -> torch.Tensor:
    return 1 - torch.sigmoid(beta * chosen) + torch.sigmoid(beta * rejected)


def apo_down(chosen: torch.Tensor, rejected: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.sigmoid(beta * chosen) + 1 - torch.sigmoid(beta * (chosen - rejected))


def term_sigmoids(chosen: torch.Tensor, rejected: torch.Tensor, beta: float) -> torch.Tensor:
    return -F.logsigmoid(beta * (chosen - rejected))


# --- on the chosen answer alone -----------------------------------------------------------------

def sft_loss(records: ScoredRecords) -> torch.Tensor:
    """The NLL of the chosen answers per answer token of the batch (-sum log pi / sum |y|, as
    TRL's sft and ORPO's NLL), spread over the records so that their mean is that."""
    logps, tokens = records.anchor(records.summed(records.policy)), records.anchor(records.answer_token_counts())
    return -logps * len(logps) / tokens.sum()


def mdpo_loss(records: ScoredRecords) -> torch.Tensor:
    """mDPO: a sigmoid per term (with its layout: DPO's response term and the conditional image
    term) plus the reward anchor -log sigmoid(beta * r(c_w, m_w, y_w)) (its delta is 0)."""
    anchor = -F.logsigmoid(records.beta * records.anchor(records.rewards()))
    return per_term(term_sigmoids)(records) + anchor


# --- unpaired -------------------------------------------------------------------------------------

def kto_reference_point(records: ScoredRecords) -> torch.Tensor:
    """KTO's z_ref: the batch's mean reward of its answers under another record's prompt (the
    layout's negative), not differentiated, at least 0."""
    _, mismatched = records.layout.pairs[0]
    return records.rewards()[:, mismatched].mean().detach().clamp(min=0)


def kto_loss(records: ScoredRecords) -> torch.Tensor:
    if records.desirable is None:
        raise ValueError("kto needs each record's label (desirable or not): unpaired data")
    own, _ = records.layout.pairs[0]
    reward, reference_point = records.rewards()[:, own], kto_reference_point(records)
    desirable = records.desirable.to(torch.bool)
    parameters = records.parameters
    return torch.where(
        desirable,
        parameters.desirable_weight * (1 - torch.sigmoid(records.beta * (reward - reference_point))),
        parameters.undesirable_weight * (1 - torch.sigmoid(records.beta * (reference_point - reward))),
    )


def kto_metrics(records: ScoredRecords) -> dict[str, torch.Tensor]:
    return {"kto/reference_point": kto_reference_point(records).expand(len(records.policy))}


# --- the registry -----------------------------------------------------------------------------------

# mDPO's layout: DPO's response term and the conditional image term, each weighed 1, not normalised.
MDPO_LAYOUT = build_layout(("response", "image"), {"response": 1.0, "image": 1.0}, 1.0)
# KTO's: each record's own (context, image, answer), and the same answer under another record's
# context and the negative image (with --negative_image random: another record's prompt, TRL's
# mismatched pair), whose rewards estimate the reference point.
KTO_LAYOUT = build_layout(("context_image",), {"context_image": 1.0}, 1.0)


@dataclass(frozen=True)
class Objective:
    """One named loss over a batch's :class:`ScoredRecords`, per record.

    ``reads``: the settings it reads (``beta`` and :class:`ObjectiveParameters` fields);
    ``needs_reference``: whether it reads reference log-probs (else no reference model is loaded
    and none is cached); ``per_token``: whether it takes log-probs per answer token whatever
    ``--logps_reduction`` says; ``layout``: its own layout, in place of the stage's; ``unpaired``:
    it trains on unpaired records with labels, and its layout is fixed."""

    name: str
    loss: Callable[[ScoredRecords], torch.Tensor]
    reads: tuple[str, ...] = ("beta",)
    needs_reference: bool = True
    per_token: bool = False
    layout: PreferenceLayout | None = None
    unpaired: bool = False
    metrics: Callable[[ScoredRecords], dict[str, torch.Tensor]] | None = None


def _registry(*objectives: Objective) -> dict[str, Objective]:
    return {objective.name: objective for objective in objectives}


OBJECTIVES: dict[str, Objective] = _registry(
    Objective("sigmoid", sigmoid_loss),
    Objective("ipo", ipo_loss, per_token=True),
    Objective("robust", robust_loss, reads=("beta", "label_smoothing")),
    Objective("hinge", hinge_loss),
    Objective("exo_pair", exo_pair_loss, reads=("beta", "exo_epsilon")),
    Objective("bco_pair", per_term(bco_pair)),
    Objective("sppo_hard", per_term(sppo_hard)),
    Objective("nca_pair", per_term(nca_pair)),
    Objective("apo_zero", per_term(apo_zero)),
    Objective("apo_down", per_term(apo_down)),
    Objective("discopop", discopop_loss, reads=("beta", "discopop_tau")),
    Objective("sigmoid_norm", sigmoid_norm_loss, per_token=True),
    Objective("simpo", simpo_loss, reads=("beta", "simpo_gamma"), needs_reference=False, per_token=True),
    Objective("odds_ratio", odds_ratio_loss, needs_reference=False, per_token=True),
    Objective("sft", sft_loss, reads=(), needs_reference=False, per_token=True),
    Objective("mdpo", mdpo_loss, layout=MDPO_LAYOUT),
    Objective("kto", kto_loss, reads=("beta", "desirable_weight", "undesirable_weight"), layout=KTO_LAYOUT,
              unpaired=True, metrics=kto_metrics),
)
# Named sums, expanded where they are named (a weight on one scales each of its parts).
PRESETS: dict[str, str] = {
    "rpo": "sigmoid + sft",  # Pang et al. 2024: DPO plus the chosen's NLL, alpha = 1
    "mpo": "sigmoid:0.8 + bco_pair:0.2 + sft:1.0",  # Wang et al. 2024 (InternVL's MPO), TRL's example weights
    "orpo": "sft + odds_ratio",  # Hong et al. 2024: NLL plus lambda (= beta) times the odds-ratio loss
}
# Flags whose use depends on the objective (besides the parameters): the reference's, the
# reduction's (read by objectives of whole-sequence log-ratios) and the layout's.
REFERENCE_FLAGS = ("precompute_reference_logps", "reference_cache_dir")
LAYOUT_FLAGS = ("terms", "term_weights", "normalizer")
_PART = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?::\s*([^\s:+]+)\s*)?$")


@dataclass(frozen=True)
class ObjectiveSum:
    """A weighted sum of objectives (one objective is a sum of one), with the parameters they read."""

    parts: tuple[tuple[Objective, float], ...]
    parameters: ObjectiveParameters = ObjectiveParameters()

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("an objective needs at least one part")
        names = [objective.name for objective, _ in self.parts]
        if len(set(names)) != len(names):
            raise ValueError(f"an objective is named twice in {' + '.join(names)}")
        if any(objective.unpaired for objective, _ in self.parts) and len(self.parts) > 1:
            raise ValueError(f"{' + '.join(names)}: kto trains on unpaired records, so it mixes with no other objective")
        layouts = {objective.layout for objective, _ in self.parts if objective.layout is not None}
        if len(layouts) > 1:
            raise ValueError(f"{' + '.join(names)}: the parts bring layouts of their own that differ")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(objective.name for objective, _ in self.parts)

    @property
    def needs_reference(self) -> bool:
        return any(objective.needs_reference for objective, _ in self.parts)

    @property
    def unpaired(self) -> bool:
        return any(objective.unpaired for objective, _ in self.parts)

    @property
    def layout(self) -> PreferenceLayout | None:
        """The layout the objective brings (mdpo's, kto's), replacing the stage's; or None."""
        return next((objective.layout for objective, _ in self.parts if objective.layout is not None), None)

    @property
    def reads(self) -> set[str]:
        """The flags this objective reads: its parameters, ``--logps_reduction`` where a part takes
        whole-sequence log-ratios, the reference flags where it needs a reference, the layout
        flags unless its layout is fixed (unpaired)."""
        read = {name for objective, _ in self.parts for name in objective.reads}
        if any(not objective.per_token for objective, _ in self.parts):
            read.add("logps_reduction")
        if self.needs_reference:
            read.update(REFERENCE_FLAGS)
        if not self.unpaired:
            read.update(LAYOUT_FLAGS)
        return read

    def unused_flags(self, changed: Collection[str]) -> list[str]:
        """The ``changed`` flags that depend on the objective and that this one does not read."""
        depends = {"beta", "logps_reduction", *PARAMETER_NAMES, *REFERENCE_FLAGS, *LAYOUT_FLAGS}
        return [name for name in changed if name in depends and name not in self.reads]

    def __call__(self, records: ScoredRecords) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-record losses and per-record metrics (each part's loss when there are several) of
        ``records`` (scored with this sum's ``parameters``)."""
        losses = {objective.name: weight * objective.loss(records) for objective, weight in self.parts}
        metrics: dict[str, torch.Tensor] = {}
        for objective, _ in self.parts:
            if objective.metrics is not None:
                metrics.update(objective.metrics(records))
        if len(losses) > 1:
            metrics.update({f"objective/{name}": loss.detach() for name, loss in losses.items()})
        return sum(losses.values()), metrics


def parse_objective(text: str = DEFAULT_OBJECTIVE, parameters: ObjectiveParameters | Mapping[str, float] | None = None) -> ObjectiveSum:
    """``NAME[:WEIGHT] [+ NAME[:WEIGHT] ...]`` (names: :data:`OBJECTIVES` and :data:`PRESETS`; a
    missing weight is 1) as an :class:`ObjectiveSum` with ``parameters``."""
    if not isinstance(parameters, ObjectiveParameters):
        parameters = ObjectiveParameters(**(parameters or {}))
    return ObjectiveSum(tuple(_parts(text, 1.0)), parameters)


def _parts(text: str, scale: float) -> list[tuple[Objective, float]]:
    known = f"objectives: {', '.join(OBJECTIVES)}; sums: {', '.join(PRESETS)}"
    parts: list[tuple[Objective, float]] = []
    for item in str(text).split("+"):
        match = _PART.match(item)
        if not match:
            raise ValueError(f"objective {text!r}: {item.strip()!r} is not NAME or NAME:WEIGHT ({known})")
        name, weight_text = match.groups()
        try:
            weight = 1.0 if weight_text is None else float(weight_text)
        except ValueError:
            raise ValueError(f"objective {text!r}: the weight {weight_text!r} of {name} is not a number") from None
        if not weight > 0 or math.isinf(weight):
            raise ValueError(f"objective {text!r}: the weight of {name} must be positive, got {weight_text}")
        if name in PRESETS:
            parts += _parts(PRESETS[name], scale * weight)
        elif name in OBJECTIVES:
            parts.append((OBJECTIVES[name], scale * weight))
        else:
            raise ValueError(f"objective {text!r}: unknown {name!r} ({known})")
    return parts
