"""The builder's rankers on candidates a test writes: ``reference`` equal to pycocoevalcap on the
same pool (CIDEr-D's statistics are the pool's), ``judge`` through a fake endpoint on 127.0.0.1
(every pair asked in both orders with the image, a position-biased verdict and a planted
unparsable reply counted as ties, identical candidates not asked) and through a local VLM,
``clip`` equal to CLIPScore computed here, and ``human`` from an annotation database the test
writes."""

from __future__ import annotations

import contextlib
import io
import re
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from build_support import FakeChatServer, copy_stages, message_text, prepared, quick_options, read_stage_lines
from mcmdpo.build import build, run_rank
from mcmdpo.build.annotations import AnnotationError, add_answer, create_database
from mcmdpo.build.cli import main as build_main
from mcmdpo.build.judging import parse_verdict
from mcmdpo.build.prompts import PROMPT_FOLDER
from mcmdpo.build.sample import sample_inputs
from mcmdpo.build.stage_files import read_stage, stage_path, write_complete
from mcmdpo.eval import openai_client
from mcmdpo.eval.generation import GenerationSettings, generate_batch
from mcmdpo.model.loading import load_checkpoint

CANDIDATES = [
    ["A wooden orange triangle on the right.", "A red triangle on the left, beside an orange one.", "Some shapes."],
    ["Shapes on a white background.", "A knitted blue circle on the left.", "A blue circle, left, beside a triangle."],
    ["A purple square.", "A purple square.", "An image."],
    ["A paper green square on the right, beside a yellow circle.", "A green square.", "A yellow circle on the left."],
]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, tiny_checkpoint, synthetic_dir) -> Path:
    return prepared(tmp_path_factory, tiny_checkpoint, synthetic_dir, count=4)


def with_candidates(upstream: Path, folder: Path, tiny_checkpoint: Path, candidates=CANDIDATES) -> Path:
    """A folder whose sample stage holds ``candidates`` (as if the sampler had written them)."""
    copy_stages(upstream, folder, "collect", "correct")
    options = quick_options(None, None, folder, tiny_checkpoint)
    corrected = read_stage(folder, "correct")
    lines = [record | {"candidates": texts} for record, texts in zip(corrected.records, candidates)]
    write_complete(stage_path(folder, "sample"), "sample", sample_inputs(options, corrected.sha256), lines)
    return folder


def rank_options(folder: Path, **settings):
    return quick_options(None, None, folder, **{"stages": ["rank", "pair"], **settings})


def ranked(folder: Path) -> list[dict]:
    return read_stage_lines(folder / "rank.jsonl")


def test_reference_scores_equal_pycocoevalcap_on_the_same_pool(upstream, tiny_checkpoint, tmp_path):
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    folder = with_candidates(upstream, tmp_path / "out", tiny_checkpoint)
    build(rank_options(folder), echo=None)
    lines = ranked(folder)
    references = [line["alt_text"] for line in lines]
    pool = {f"record{i}/candidate{j}": (text, references[i]) for i, texts in enumerate(CANDIDATES) for j, text in enumerate(texts)}
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({key: [{"caption": reference}] for key, (_, reference) in pool.items()})
    res = tokenizer.tokenize({key: [{"caption": text}] for key, (text, _) in pool.items()})
    with contextlib.redirect_stdout(io.StringIO()):
        _, cider = Cider().compute_score(gts, res)
        _, rouge = Rouge().compute_score(gts, res)
    expected = iter(zip(cider, rouge))
    for line in lines:
        for j in range(3):
            c, r = next(expected)
            assert line["ranking"]["cider"][j] == pytest.approx(100 * c, abs=1e-9)
            assert line["ranking"]["rougel"][j] == pytest.approx(100 * r, abs=1e-9)
            assert line["scores"][j] == pytest.approx(100 * (c + r), abs=1e-5)
    # The pool's statistics, not one record's: CIDEr-D of record 0 alone differs.
    alone_gts = {key: value for key, value in gts.items() if key.startswith("record0/")}
    with contextlib.redirect_stdout(io.StringIO()):
        _, alone = Cider().compute_score(alone_gts, {key: res[key] for key in alone_gts})
    assert [round(100 * value, 6) for value in alone] != [round(value, 6) for value in lines[0]["ranking"]["cider"]]
    # The pairs: the corrected alt-text against each record's lowest-ranked candidate.
    pairs = read_stage_lines(folder / "pair.jsonl")
    assert [line.get("pair", {}).get("provenance", {}).get("rejected", {}).get("candidate") for line in pairs] == [
        min(range(3), key=lambda j: (line["scores"][j], j)) for line in lines]


# ---------------------------------------------------------------- the judge

QUALITY = [  # per record: candidate text -> how good the fake judge finds it
    {CANDIDATES[0][0]: 3, CANDIDATES[0][1]: 2, CANDIDATES[0][2]: 1},
    {CANDIDATES[1][0]: 1, CANDIDATES[1][1]: 3, CANDIDATES[1][2]: 2},
    {CANDIDATES[2][0]: 2, CANDIDATES[2][2]: 1},
    {CANDIDATES[3][0]: 3, CANDIDATES[3][1]: 1, CANDIDATES[3][2]: 2},
]
SHOWN = re.compile(r"First alt-text:\n(.*)\n\nSecond alt-text:\n(.*)\n\nWhich", re.S)


def judge_reply(body: dict) -> str:
    first, second = SHOWN.search(message_text(body)).groups()
    if {first, second} == {CANDIDATES[0][0], CANDIDATES[0][2]}:
        return "First."  # a judge that prefers whatever it is shown first: the orders disagree
    if (first, second) == (CANDIDATES[1][1], CANDIDATES[1][0]):
        return "Both have merits, I cannot decide."  # planted: unparsable
    if {first, second} == {CANDIDATES[1][1], CANDIDATES[1][2]}:
        return "Tie"
    quality = next(q for q in QUALITY if first in q and second in q)
    return "Answer: first" if quality[first] > quality[second] else "second"


def test_the_judge_asks_both_orders_and_counts_disagreements_and_unparsable_replies(upstream, tiny_checkpoint, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.setattr(openai_client, "BACKOFF_S", 0.0)
    folder = with_candidates(upstream, tmp_path / "out", tiny_checkpoint)
    with FakeChatServer(judge_reply) as server:
        options = rank_options(folder, ranker="judge", judge=f"endpoint:{server.url}", judge_model_name="judge-1",
                               endpoint_workers=3)
        report = build(options, echo=None)
        requests = server.requests
        assert len(requests) == 6 + 6 + 2 + 6  # every two distinct texts, both orders: record 2's twins asked about once
        asked = {}
        for body in requests:
            text, image = body["messages"][0]["content"]
            assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,")
            assert body["model"] == "judge-1" and body["temperature"] == 0
            first, second = SHOWN.search(text["text"]).groups()
            asked[(first, second)] = asked.get((first, second), 0) + 1
        for texts in CANDIDATES:
            distinct = list(dict.fromkeys(texts))
            assert {(a, b) for a in distinct for b in distinct if a != b} <= set(asked)
        assert set(asked.values()) == {1}
        template = (PROMPT_FOLDER / "judge.txt").read_text()
        line0 = ranked(folder)[0]
        expected = template.replace("{context}", line0["context"]).replace("{first}", CANDIDATES[0][0]).replace(
            "{second}", CANDIDATES[0][1]).strip()
        assert expected in [body["messages"][0]["content"][0]["text"] for body in requests]  # three in flight: any order

        lines = ranked(folder)
        assert [line["scores"] for line in lines] == [[0.75, 0.5, 0.25], [0.25, 0.5, 0.75], [0.75, 0.75, 0.0], [1.0, 0.0, 0.5]]
        assert [line["ranking"]["counts"] for line in lines] == [
            {"agreed": 2, "disagreed": 1, "tied": 0, "unparsable": 0},
            {"agreed": 1, "disagreed": 0, "tied": 1, "unparsable": 1},
            {"agreed": 1, "disagreed": 0, "tied": 0, "unparsable": 0},
            {"agreed": 3, "disagreed": 0, "tied": 0, "unparsable": 0},
        ]
        unparsable = [c for c in lines[1]["ranking"]["comparisons"] if c["verdict"] is None]
        assert unparsable == [{"first": 1, "second": 0, "reply": "Both have merits, I cannot decide.", "verdict": None}]
        assert report["rank"]["counts"] == {"comparisons_asked": 20, "agreed": 7, "disagreed": 1, "tied": 1, "unparsable": 1}
        assert report["pair"]["pairs"] == 4

        # A rerun with another pairing reads the judge's replies from its cache.
        before = len(server.requests)
        (folder / "rank.jsonl").unlink()
        build(rank_options(folder, ranker="judge", judge=f"endpoint:{server.url}", judge_model_name="judge-1",
                           pairing="best_vs_worst"), echo=None)
        assert len(server.requests) == before and ranked(folder) == lines


def test_verdicts_are_read_strictly():
    assert [parse_verdict(reply) for reply in ("first", "Second.", "TIE", "Answer: first", "1", "The second one is better.")] == [
        "first", "second", "tie", "first", "first", "second"]
    assert [parse_verdict(reply) for reply in ("", "I cannot tell", "first, no, second", "firstly")] == [None] * 4


def test_a_local_vlm_judges_with_the_image_through_the_inference_code(upstream, tiny_checkpoint, synthetic_dir, tmp_path):
    folder = with_candidates(upstream, tmp_path / "out", tiny_checkpoint, [texts[:3] for texts in CANDIDATES[:1]] + CANDIDATES[1:2])
    # Only two records were given candidates: rank those two.
    sample = read_stage(folder, "sample")
    write_complete(stage_path(folder, "sample"), "sample", sample.inputs, sample.records[:2])
    section = run_rank(quick_options(None, None, folder, ranker="judge", judge=f"model:{tiny_checkpoint}", stages=["rank"]))
    lines = ranked(folder)
    for line in lines:
        comparisons = line["ranking"]["comparisons"]
        assert [(c["first"], c["second"]) for c in comparisons] == [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)]
        assert all(c["verdict"] == parse_verdict(c["reply"]) for c in comparisons)
        assert line["ranking"]["counts"]["unparsable"] == sum(c["verdict"] is None for c in comparisons)
    assert section["counts"]["comparisons_asked"] == 12
    checkpoint = load_checkpoint(tiny_checkpoint, padding_side="left")
    template = (PROMPT_FOLDER / "judge.txt").read_text()
    prompt = template.replace("{context}", lines[0]["context"]).replace("{first}", CANDIDATES[0][1]).replace(
        "{second}", CANDIDATES[0][0]).strip()
    image = Image.open(synthetic_dir / "image" / lines[0]["image"]["path"]).convert("RGB")
    [reply] = generate_batch(checkpoint.model.eval(), checkpoint.processor, checkpoint.family.inputs, [prompt], [image],
                             GenerationSettings(temperature=0.0, num_beams=1, max_new_tokens=16))
    assert lines[0]["ranking"]["comparisons"][1]["reply"] == reply


# ---------------------------------------------------------------- CLIPScore

def test_clip_scores_image_and_post(upstream, tiny_checkpoint, synthetic_dir, tmp_path):
    from mcmdpo.eval.clip_score import ClipScorer
    from mcmdpo.tiny.clip import write_tiny_clip

    clip = write_tiny_clip(tmp_path / "clip")
    folder = with_candidates(upstream, tmp_path / "out", tiny_checkpoint)
    build(rank_options(folder, ranker="clip", clip_model=str(clip), clip_context_weight=0.5), echo=None)
    scorer = ClipScorer(str(clip), device="cpu")
    for line in ranked(folder):
        image = Image.open(synthetic_dir / "image" / line["image"]["path"]).convert("RGB")
        texts = [*line["candidates"], line["alt_text"]]
        on_image = scorer.image_text([image] * len(texts), texts)
        on_post = scorer.text_text(texts, [line["context"]] * len(texts))
        expected = [a + 0.5 * b for a, b in zip(on_image, on_post)]
        assert line["scores"] == pytest.approx(expected[:-1], abs=1e-5)
        assert line["reference_score"] == pytest.approx(expected[-1], abs=1e-5)
        assert line["ranking"]["image"] == pytest.approx(on_image[:-1], abs=1e-5)  # float32: other batch compositions
    pairs = read_stage_lines(folder / "pair.jsonl")
    provenance = next(line["pair"]["provenance"] for line in pairs if "pair" in line)
    assert provenance["ranker"] == {"name": "clip", "clip_model": str(clip), "context_weight": 0.5}


# ---------------------------------------------------------------- people

def test_human_answers_rank_the_candidates(upstream, tiny_checkpoint, tmp_path, capsys):
    folder = with_candidates(upstream, tmp_path / "out", tiny_checkpoint)
    keys = [line["key"] for line in read_stage(folder, "sample").records]
    alt_texts = [line["alt_text"] for line in read_stage(folder, "sample").records]
    database = create_database(tmp_path / "answers.sqlite")
    c0 = CANDIDATES[0]
    add_answer(database, keys[0], c0[0], c0[1], "ann1", "first", 0, 1)
    add_answer(database, keys[0], c0[1], c0[2], "ann1", "first", 1, 2)
    add_answer(database, keys[0], c0[2], c0[0], "ann2", "tie", 2, 0)
    add_answer(database, keys[0], alt_texts[0], c0[2], "ann2", "both_bad", None, 2, corrected_text="An orange triangle.")
    add_answer(database, keys[0], c0[0], c0[1], "ann2", "skip", 0, 1)
    add_answer(database, keys[0], "a candidate sampled before", c0[1], "ann3", "first")  # stale: not counted
    c1 = CANDIDATES[1]
    add_answer(database, keys[1], alt_texts[1], c1[0], "ann1", "first", None, 0)  # only one candidate ranked: no pair
    report = build(rank_options(folder, ranker="human", annotations=str(database)), echo=None)
    lines = ranked(folder)
    # candidate 0: won 1, tied 1 of 2; candidate 1: lost 1, won 1; candidate 2: lost, tied, both bad.
    assert lines[0]["scores"] == [0.75, 0.5, round(0.5 / 3, 6)]
    assert lines[0]["reference_score"] == 0.0
    assert lines[0]["ranking"] == {"answers": 4, "stale_answers": 1,
                                   "annotator_corrections": [{"annotator": "ann2", "text": "An orange triangle."}]}
    assert lines[1]["scores"] == [0.0, None, None] and lines[1]["reference_score"] == 1.0
    assert lines[2]["scores"] == [None, None, None]
    assert report["rank"]["counts"] == {"answers": 5, "stale_answers": 1, "unranked_candidates": 0 + 2 + 3 + 3}
    assert report["pair"]["pairs"] == 1
    assert report["pair"]["skipped"]["fewer_than_two_ranked_candidates"]["count"] == 3

    # A database of another schema is refused before any stage runs.
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE answers (x)")
    assert build_main(["--output_dir", str(folder), "--stages", "rank", "--ranker", "human", "--annotations", str(other)]) == 2
    assert "schema version 0" in capsys.readouterr().err
    with pytest.raises(AnnotationError, match="choice must be one of"):
        add_answer(database, keys[0], c0[0], c0[1], "ann1", "maybe")
