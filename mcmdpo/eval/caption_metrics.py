"""COCO caption metrics: corpus-level BLEU-1..4, METEOR, ROUGE-L and CIDEr with the PTB
tokenizer, computed by pycocoevalcap exactly as COCO caption evaluation does (and SPICE when its
Stanford CoreNLP models are installed), x 100."""

from __future__ import annotations

import contextlib
import io
from functools import lru_cache
from pathlib import Path
from typing import Any

COCO_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougel", "cider")


def spice_available() -> bool:
    """SPICE needs Stanford CoreNLP 3.6.0 and its models next to pycocoevalcap's SPICE jar."""
    from pycocoevalcap.spice import spice

    lib = Path(spice.__file__).parent / "lib"
    return all((lib / name).is_file() for name in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"))


@lru_cache(maxsize=1)
def meteor() -> Any:
    """One METEOR process for the whole run: starting it (a JVM that loads its paraphrase tables)
    takes seconds, scoring a set afterwards a fraction of one. Each call's score is of its own set."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()  # its process ends with ours


def coco_scores(
    hypotheses: dict[Any, str], references: dict[Any, list[str]], use_spice: bool | None = None
) -> tuple[dict[str, float], dict[Any, dict[str, float]]]:
    """Corpus scores and per-record scores (x 100), computed as COCOEvalCap computes them: PTB
    tokenisation of references and hypotheses, then each pycocoevalcap scorer on the whole set."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({key: [{"caption": ref} for ref in refs] for key, refs in references.items()})
    res = tokenizer.tokenize({key: [{"caption": hypotheses[key]}] for key in references})
    scorers: list[tuple[Any, tuple[str, ...]]] = [
        (Bleu(4), ("bleu1", "bleu2", "bleu3", "bleu4")),
        (meteor(), ("meteor",)),
        (Rouge(), ("rougel",)),
        (Cider(), ("cider",)),
    ]
    if use_spice if use_spice is not None else spice_available():
        from pycocoevalcap.spice.spice import Spice

        scorers.append((Spice(), ("spice",)))
    keys = list(gts)
    corpus: dict[str, float] = {}
    per_record: dict[Any, dict[str, float]] = {key: {} for key in keys}
    for scorer, names in scorers:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints its BLEU internals
            score, scores = scorer.compute_score(gts, res)
        if len(names) == 1:
            score, scores = [score], [scores]
        for name, value, values in zip(names, score, scores):
            corpus[name] = 100 * float(value)
            for key, record_value in zip(keys, values):
                per_record[key][name] = 100 * float(record_value["All"]["f"] if isinstance(record_value, dict) else record_value)
    return corpus, per_record
