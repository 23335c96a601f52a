"""The rankers, by name (:data:`RANKERS`): each scores every candidate of a record, higher is
better, and may score the record's own (corrected) alt-text too (``reference_score``).

- ``reference``: CIDEr-D + ROUGE-L (x 100 each, pycocoevalcap with its PTB tokenizer) of each
  candidate against the corrected alt-text. CIDEr-D's document frequencies are those of the whole
  pool (every candidate of every record, each with its record's alt-text as reference), so it
  ranks all records at once. ROUGE-L breaks CIDEr-D's ties (candidates that share no n-gram with
  the reference all score CIDEr-D 0).
- ``clip``: CLIPScore of image and candidate (:class:`mcmdpo.eval.clip_score.ClipScorer`), plus
  ``--clip_context_weight`` x CLIPScore of candidate and post; reference-free.
- ``judge``: a local VLM (``model:PATH``, through the inference code, greedy) or an endpoint
  (``endpoint:URL``, the image as a data URL) comparing two candidates with the image and the post,
  each pair in both orders (:mod:`mcmdpo.build.judging`).
- ``human``: the annotation page's answers (``python -m mcmdpo.app annotate``, the database of
  :mod:`mcmdpo.build.annotations`): a candidate's score is its share of the comparisons it took
  part in, a tie counting half, ``both_bad`` none, ``skip`` not counted (nor an answer its
  annotator undid); None where it took part in none.

A ranker's ``inputs()`` is what its scores depend on (the rank stage's fingerprint);
``provenance()`` what the pairs record of it (models as given, no output paths)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Callable

from mcmdpo.build import judging
from mcmdpo.build.annotations import Answer, answers_digest, by_record, read_answers
from mcmdpo.build.endpoints import endpoint_client, ordered_map, reply_cache
from mcmdpo.build.fingerprints import checkpoint_fingerprint
from mcmdpo.build.models import device_of_process, dtype_for, load_generator
from mcmdpo.build.options import ENDPOINT_PREFIX, BuildOptions, spec_target
from mcmdpo.build.prompts import fill, read_prompt
from mcmdpo.build.records import open_image
from mcmdpo.caching import text_sha256
from mcmdpo.eval.openai_client import image_part, text_part

JUDGE_MAX_NEW_TOKENS = 16  # a verdict is a word
Scored = dict[str, Any]  # {"scores": [...], "reference_score": float | None, "details": {...}}


class Ranker:
    """Scores records' candidates. ``whole_pool``: scores depend on every record (ranked at once)."""

    name = ""
    whole_pool = False
    chunk = 8  # records per call of score() otherwise

    def __init__(self, options: BuildOptions, image_folder: str | None):
        self.options = options
        self.image_folder = image_folder

    def inputs(self) -> dict[str, Any]:
        return {}

    def provenance(self) -> dict[str, Any]:
        return {"name": self.name}

    def score(self, records: list[dict[str, Any]]) -> list[Scored]:
        raise NotImplementedError

    def image(self, record: dict[str, Any]) -> Any:
        return open_image(record, self.image_folder, self.options.output_dir)


def pool_scores(candidates: list[list[str]], references: list[str]) -> list[list[dict[str, float]]]:
    """{"cider", "rougel"} (x 100) of each candidate of each record against its reference, as
    pycocoevalcap computes them over the whole pool (PTB tokenizer, then Cider and Rouge)."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    keys = [f"{i}:{j}" for i, texts in enumerate(candidates) for j in range(len(texts))]
    if not keys:
        return [[] for _ in candidates]
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({f"{i}:{j}": [{"caption": references[i]}] for i, texts in enumerate(candidates) for j in range(len(texts))})
    res = tokenizer.tokenize({f"{i}:{j}": [{"caption": text}] for i, texts in enumerate(candidates) for j, text in enumerate(texts)})
    with contextlib.redirect_stdout(io.StringIO()):
        _, cider = Cider().compute_score(gts, res)
        _, rouge = Rouge().compute_score(gts, res)
    by_key = {key: {"cider": 100 * float(c), "rougel": 100 * float(r)} for key, c, r in zip(gts, cider, rouge)}
    return [[by_key[f"{i}:{j}"] for j in range(len(texts))] for i, texts in enumerate(candidates)]


class ReferenceRanker(Ranker):
    name = "reference"
    whole_pool = True

    def score(self, records: list[dict[str, Any]]) -> list[Scored]:
        pool = pool_scores([record["candidates"] for record in records], [record["alt_text"] for record in records])
        return [{"scores": [round(s["cider"] + s["rougel"], 6) for s in scores], "reference_score": None,
                 "details": {"cider": [s["cider"] for s in scores], "rougel": [s["rougel"] for s in scores]}} for scores in pool]


class ClipRanker(Ranker):
    name = "clip"

    def __init__(self, options: BuildOptions, image_folder: str | None):
        super().__init__(options, image_folder)
        self.scorer = None

    def inputs(self) -> dict[str, Any]:
        return {"clip_model": checkpoint_fingerprint(self.options.clip_model), "context_weight": self.options.clip_context_weight}

    def provenance(self) -> dict[str, Any]:
        return {"name": self.name, "clip_model": self.options.clip_model, "context_weight": self.options.clip_context_weight}

    def score(self, records: list[dict[str, Any]]) -> list[Scored]:
        if self.scorer is None:
            from mcmdpo.eval.clip_score import ClipScorer

            self.scorer = ClipScorer(self.options.clip_model, device=device_of_process())
        weight = self.options.clip_context_weight
        texts, images, posts = [], [], []
        for record in records:
            shown = [*record["candidates"], record["alt_text"]]  # the candidates, then the record's own alt-text
            texts += shown
            images += [self.image(record)] * len(shown)  # one image object per record: embedded once
            posts += [record["context"]] * len(shown)
        on_image = self.scorer.image_text(images, texts)
        asked = [i for i, post in enumerate(posts) if weight and post]
        on_post = dict(zip(asked, self.scorer.text_text([texts[i] for i in asked], [posts[i] for i in asked])))
        scored, start = [], 0
        for record in records:
            span = range(start, start + len(record["candidates"]) + 1)
            start = span.stop
            image_scores, post_scores = [on_image[i] for i in span], [on_post.get(i, 0.0) for i in span]
            total = [round(a + weight * b, 6) for a, b in zip(image_scores, post_scores)]
            details = {"image": image_scores[:-1], **({"context": post_scores[:-1]} if weight else {})}
            scored.append({"scores": total[:-1], "reference_score": total[-1], "details": details})
        return scored


class JudgeRanker(Ranker):
    name = "judge"

    def __init__(self, options: BuildOptions, image_folder: str | None):
        super().__init__(options, image_folder)
        self.template = read_prompt("judge", options.judge_prompt)
        self.endpoint = options.judge.startswith(ENDPOINT_PREFIX)
        self.client = self.cache = self.model = self.checkpoint = None

    def inputs(self) -> dict[str, Any]:
        inputs: dict[str, Any] = {"judge": self.options.judge, "prompt_sha256": text_sha256(self.template)}
        if self.endpoint:
            inputs["model_name"] = self.options.judge_model_name
        else:
            inputs.update(model=checkpoint_fingerprint(spec_target(self.options.judge)),
                          dtype=dtype_for(device_of_process(), self.options.dtype), max_new_tokens=JUDGE_MAX_NEW_TOKENS)
        return inputs

    def provenance(self) -> dict[str, Any]:
        found = {"name": self.name, "judge": self.options.judge}
        return found | ({"model_name": self.options.judge_model_name} if self.endpoint else {})

    def prompt(self, record: dict[str, Any], first: int, second: int) -> str:
        candidates = record["candidates"]
        return fill(self.template, context=record["context"] or "(no post)", first=candidates[first], second=candidates[second])

    def replies(self, record: dict[str, Any], asked: list[tuple[int, int]]) -> list[str]:
        image = self.image(record)
        prompts = [self.prompt(record, first, second) for first, second in asked]
        if self.endpoint:
            if self.client is None:
                self.client = endpoint_client(self.options, self.options.judge, self.options.judge_model_name, "judge")
                self.cache = reply_cache(self.options, "judge")
            part = image_part(image)
            ask = lambda prompt: self.cache.reply(self.client, [text_part(prompt), part], record=record["key"])  # noqa: E731
            return list(ordered_map(ask, prompts, self.options.endpoint_workers))
        if self.model is None:
            self.checkpoint, self.model = load_generator(spec_target(self.options.judge), self.options.dtype)
        from mcmdpo.eval.generation import GenerationSettings, generate_batch

        settings = GenerationSettings(temperature=0.0, num_beams=1, max_new_tokens=JUDGE_MAX_NEW_TOKENS)
        return generate_batch(self.model, self.checkpoint.processor, self.checkpoint.family.inputs, prompts,
                              [image] * len(prompts), settings)

    def score(self, records: list[dict[str, Any]]) -> list[Scored]:
        scored = []
        for record in records:
            asked = judging.comparisons(record["candidates"])
            replies = self.replies(record, asked) if asked else []
            verdicts = {pair: judging.parse_verdict(reply) for pair, reply in zip(asked, replies)}
            scores, counts = judging.score_candidates(record["candidates"], verdicts)
            comparisons = [{"first": first, "second": second, "reply": reply, "verdict": verdicts[(first, second)]}
                           for (first, second), reply in zip(asked, replies)]
            scored.append({"scores": scores, "reference_score": None,
                           "details": {"comparisons": comparisons, "counts": counts, "asked": len(asked)}})
        return scored


def human_scores(record: dict[str, Any], answers: list[Answer]) -> Scored:
    """A record's candidate scores from the answers about it: each alt-text shown (a candidate or
    the record's own) scores its share of the comparisons it took part in; answers about texts
    the record does not hold any more are stale and not counted."""
    texts = [*record["candidates"], record["alt_text"]]
    points: dict[str, float] = {}
    taken: dict[str, int] = {}
    stale = used = 0
    corrections = []
    for answer in answers:
        if answer.corrected_text:
            corrections.append({"annotator": answer.annotator, "text": answer.corrected_text})
        if answer.choice == "skip":
            continue
        if answer.first_text not in texts or answer.second_text not in texts:
            stale += 1
            continue
        used += 1
        share = {"first": (1.0, 0.0), "second": (0.0, 1.0), "tie": (0.5, 0.5), "both_bad": (0.0, 0.0)}[answer.choice]
        for text, point in zip((answer.first_text, answer.second_text), share):
            points[text] = points.get(text, 0.0) + point
            taken[text] = taken.get(text, 0) + 1
    share_of = lambda text: round(points[text] / taken[text], 6) if taken.get(text) else None  # noqa: E731
    details = {"answers": used, "stale_answers": stale, **({"annotator_corrections": corrections} if corrections else {})}
    return {"scores": [share_of(text) for text in record["candidates"]], "reference_score": share_of(record["alt_text"]),
            "details": details}


class HumanRanker(Ranker):
    name = "human"
    whole_pool = True  # the database is read once, for every record

    def __init__(self, options: BuildOptions, image_folder: str | None):
        super().__init__(options, image_folder)
        self.answers = read_answers(options.annotations)

    def inputs(self) -> dict[str, Any]:
        return {"answers_sha256": answers_digest(self.answers)}

    def provenance(self) -> dict[str, Any]:
        return {"name": self.name, "annotations": Path(self.options.annotations).name, "answers": len(self.answers)}

    def score(self, records: list[dict[str, Any]]) -> list[Scored]:
        grouped = by_record(self.answers)
        return [human_scores(record, grouped.get(record["key"], [])) for record in records]


RANKERS: dict[str, Callable[[BuildOptions, str | None], Ranker]] = {
    ranker.name: ranker for ranker in (ReferenceRanker, ClipRanker, JudgeRanker, HumanRanker)
}
