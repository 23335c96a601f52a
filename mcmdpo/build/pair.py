"""Pairing, as pure functions: which alt-text of a ranked record is chosen and which rejected, and
the pair as an upstream preference record with its provenance.

- ``reference_vs_worst``: chosen = the record's corrected alt-text, rejected = its lowest-ranked
  candidate (the shape of the released pairs);
- ``best_vs_worst``: chosen = the highest-ranked candidate, rejected = the lowest-ranked.

Only candidates with a score, some text and no image placeholder take part; on equal scores the
lower candidate index wins the tie (for the best and for the worst alike), so pairing is
deterministic. The rejected never repeats the chosen's text. ``--length_balance R`` lets only
candidates within R times the chosen's length in words (either way) be rejected, so that length
does not give the preference away. The margin is the best candidate's score minus the rejected
one's; records whose margin is ``--min_margin`` or less are skipped (by default only ties)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from mcmdpo.build.drops import IMAGE_PLACEHOLDER

DS_NAME = "mcmdpo_build"
# Why a record gives no pair.
UNRANKED = "fewer_than_two_ranked_candidates"
NO_REJECTED = "every_candidate_repeats_the_chosen"
LENGTH = "no_candidate_within_length_balance"
TIE = "margin_at_most_min_margin"
SKIP_REASONS = (UNRANKED, NO_REJECTED, LENGTH, TIE)


@dataclass(frozen=True)
class Pick:
    """A record's pair: the chosen (a candidate index, or None for the record's own alt-text)
    and the rejected candidate, with the margin between the best and the rejected."""

    chosen: int | None
    rejected: int
    margin: float


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def length_ratio(a: str, b: str) -> float:
    """Longer over shorter, in words (at least one each)."""
    x, y = max(1, len(a.split())), max(1, len(b.split()))
    return max(x, y) / min(x, y)


def pick(record: dict[str, Any], pairing: str, min_margin: float = 0.0,
         length_balance: float | None = None) -> tuple[Pick | None, tuple[str, str] | None]:
    """(the pair, None) or (None, (reason, detail)) for one ranked record."""
    candidates, scores = record["candidates"], record["scores"]
    usable = [i for i, (text, score) in enumerate(zip(candidates, scores))
              if score is not None and text.strip() and IMAGE_PLACEHOLDER not in text]
    if len(usable) < 2:
        return None, (UNRANKED, f"{len(usable)} of {len(candidates)} candidates ranked")
    best = max(usable, key=lambda i: (scores[i], -i))
    chosen = None if pairing == "reference_vs_worst" else best
    chosen_text = record["alt_text"] if chosen is None else candidates[chosen]
    eligible = [i for i in usable if i != chosen and not _same(candidates[i], chosen_text)]
    if not eligible:
        return None, (NO_REJECTED, None)
    if length_balance is not None:
        eligible = [i for i in eligible if length_ratio(candidates[i], chosen_text) <= length_balance]
        if not eligible:
            return None, (LENGTH, f"--length_balance {length_balance:g}")
    rejected = min(eligible, key=lambda i: (scores[i], i))
    margin = round(scores[best] - scores[rejected], 6)
    if margin <= min_margin:
        return None, (TIE, f"margin {margin:g}")
    return Pick(chosen, rejected, margin), None


def preference_record(record: dict[str, Any], chosen_pick: Pick, provenance: dict[str, Any],
                      embedded_image: bytes | None = None) -> dict[str, Any]:
    """The pair in the upstream preference format (``text`` holding question, chosen and
    rejected, as the released files), with its provenance. ``embedded_image``: the bytes of an
    image the input embedded, written into the record as base64."""
    candidates = record["candidates"]
    chosen = record["alt_text"] if chosen_pick.chosen is None else candidates[chosen_pick.chosen]
    pair: dict[str, Any] = {"ds_name": DS_NAME, "idx": record["id"]}
    if embedded_image is not None:
        pair["image"] = {"bytes": base64.b64encode(embedded_image).decode("ascii")}
    else:
        pair["image"] = {"path": record["image"]["path"]}
        pair["image_path"] = record["image"]["path"]
    text = {"question": record["question"], "chosen": chosen, "rejected": candidates[chosen_pick.rejected]}
    pair["text"] = json.dumps(text, ensure_ascii=False)
    chosen_score = record["reference_score"] if chosen_pick.chosen is None else record["scores"][chosen_pick.chosen]
    pair["provenance"] = {
        **provenance,
        "alt_text_original": record["alt_text_original"],
        "chosen": {"candidate": chosen_pick.chosen, "score": chosen_score},
        "rejected": {"candidate": chosen_pick.rejected, "score": record["scores"][chosen_pick.rejected]},
        "margin": chosen_pick.margin,
        "candidate_scores": record["scores"],
    }
    return pair


def pairs_json(pairs: list[dict[str, Any]]) -> str:
    """The pairs file's text: a JSON array, one field per line as the project writes its data."""
    return json.dumps(pairs, indent=1, ensure_ascii=False) + "\n"
