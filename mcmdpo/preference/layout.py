"""The preference layout: which (context, image, response) triples each record is scored on, and
which pairs of them the loss compares. Data, losses, the training step and the evaluation all
derive what they need from here; adding a term is one entry of ``TERMS``.

A triple picks, on each axis, the record's own value (0: the preferred context c_w, its image
m_w, the chosen answer y_w) or the negative (1: another record's question c_l, the negative image
m_l, the rejected answer y_l). A term is a (positive, negative) pair of triples with a default
weight; MCM-DPO's seven terms all take the anchor (c_w, m_w, y_w) as positive, and DPO is the
response term alone with normaliser 1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence


@dataclass(frozen=True, order=True)
class Triple:
    """One sequence of a record: 0 = the record's own context / image / response, 1 = negative.
    Ordered as the original orders its sequences (context, then image, then response)."""

    context: int
    image: int
    response: int

    @property
    def name(self) -> str:
        return f"c{'wl'[self.context]}_m{'wl'[self.image]}_y{'wl'[self.response]}"


ANCHOR = Triple(0, 0, 0)


@dataclass(frozen=True)
class Term:
    """One preference: ``positive`` should be more likely than ``negative`` (relative to the
    reference) by ``weight`` / normaliser in MCM-DPO's single sigmoid."""

    name: str
    positive: Triple
    negative: Triple
    weight: float


def _registry(*terms: Term) -> dict[str, Term]:
    return {term.name: term for term in terms}


# MCM-DPO's seven negative dimensions with the paper's weights, in the order the original's
# --num_terms switches them on.
TERMS: dict[str, Term] = _registry(
    Term("response", ANCHOR, Triple(0, 0, 1), 1.0),
    Term("image", ANCHOR, Triple(0, 1, 0), 0.5),
    Term("context", ANCHOR, Triple(1, 0, 0), 0.5),
    Term("context_response", ANCHOR, Triple(1, 0, 1), 0.2),
    Term("image_response", ANCHOR, Triple(0, 1, 1), 0.2),
    Term("context_image", ANCHOR, Triple(1, 1, 0), 0.2),
    Term("all", ANCHOR, Triple(1, 1, 1), 0.2),
)
MCMDPO_TERMS = tuple(TERMS)
# The original divides by the sum of the seven weights, also when fewer terms are on.
DEFAULT_NORMALIZER = round(sum(term.weight for term in TERMS.values()), 12)


@dataclass(frozen=True)
class PreferenceLayout:
    """The active terms with their weights and the normaliser; everything else derives from it."""

    terms: tuple[Term, ...]
    weights: tuple[float, ...]
    normalizer: float = DEFAULT_NORMALIZER

    def __post_init__(self) -> None:
        if not self.terms:
            raise ValueError("a preference layout needs at least one term")
        if len(self.weights) != len(self.terms):
            raise ValueError(f"{len(self.terms)} terms but {len(self.weights)} weights")
        if self.normalizer <= 0:
            raise ValueError(f"the normaliser must be positive, got {self.normalizer}")

    @property
    def term_names(self) -> tuple[str, ...]:
        return tuple(term.name for term in self.terms)

    @property
    def triples(self) -> tuple[Triple, ...]:
        """The distinct triples the terms compare, in the original's order: the sequences each
        record is scored on (columns of every [records, sequences] log-prob tensor)."""
        return tuple(sorted({t for term in self.terms for t in (term.positive, term.negative)}))

    def column(self, triple: Triple) -> int:
        return self.triples.index(triple)

    @property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        """(positive column, negative column) of each term."""
        return tuple((self.column(term.positive), self.column(term.negative)) for term in self.terms)

    @property
    def scales(self) -> tuple[float, ...]:
        return tuple(weight / self.normalizer for weight in self.weights)

    @property
    def uses_negative_context(self) -> bool:
        return any(t.context for t in self.triples)

    @property
    def uses_negative_image(self) -> bool:
        return any(t.image for t in self.triples)

    @property
    def response_pair(self) -> tuple[int, int] | None:
        """Columns of (c_w, m_w, y_w) and (c_w, m_w, y_l), when scored: the usual DPO metrics."""
        chosen, rejected = ANCHOR, Triple(0, 0, 1)
        return (self.column(chosen), self.column(rejected)) if {chosen, rejected} <= set(self.triples) else None


def parse_weights(items: Iterable[str]) -> dict[str, float]:
    """``NAME=WEIGHT`` items (the command line's ``--term_weights``) as a dict."""
    weights = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        if not sep:
            raise ValueError(f"term weight {item!r} is not NAME=WEIGHT (names: {', '.join(TERMS)})")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"term weight {item!r}: {value!r} is not a number") from None
    return weights


def build_layout(
    terms: Sequence[str] = MCMDPO_TERMS,
    weights: Mapping[str, float] | None = None,
    normalizer: float = DEFAULT_NORMALIZER,
) -> PreferenceLayout:
    """The layout of the named terms; a term's weight is ``weights[name]``, else its default.
    Weights of known terms that are not switched on are left unused (a recipe lists all seven;
    ``--terms`` alone then narrows it, as the original's ``--num_terms``)."""
    unknown = [name for name in [*terms, *(weights or {})] if name not in TERMS]
    if unknown:
        raise ValueError(f"unknown preference term(s) {', '.join(unknown)}; known: {', '.join(TERMS)}")
    if len(set(terms)) != len(terms):
        raise ValueError(f"a term is named twice in {list(terms)}")
    weights = dict(weights or {})
    return PreferenceLayout(
        tuple(TERMS[name] for name in terms), tuple(weights.get(name, TERMS[name].weight) for name in terms), normalizer
    )


DPO_LAYOUT = build_layout(("response",), {"response": 1.0}, 1.0)
MCMDPO_LAYOUT = build_layout()
