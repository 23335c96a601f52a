"""Evaluation: batched, resumable inference over an alt-text test file or a hallucination benchmark
(:mod:`.inference`, generating with :mod:`.generation`); scoring its outputs (``get_score.py``:
:mod:`.score_cli`), alt-text under the COCO caption metrics or the original paper's protocol,
benchmarks by their own metrics (:mod:`.benchmarks`), with per-record score files, tables and
plots; the nltk language data those metrics read (:mod:`.language_data`); and held-out
preference evaluation from a model's own log-probabilities (:mod:`.preferences`)."""
