"""AMBER: its released files read into prompts, outputs scored as its inference.py scores them
(checked against hand computations), bad inputs reported before any model loads."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from mcmdpo.data.records import RecordLocation
from mcmdpo.eval.benchmarks import amber
from mcmdpo.eval.benchmarks.base import YES_NO_SUFFIX, ScoreOptions

RELATION = {
    "sky": [], "grass": ["ground"], "ground": [], "person": ["man", "woman", "people"], "road": [],
    "dog": ["puppy"], "cat": [], "car": ["vehicle"], "tree": [], "sign": [], "light": [], "kitten": [],
}
SAFE_WORDS = "light\nsign\nindividual"  # as released: one per line, no final newline
GENERATIVE = [  # id, truth, hallu
    (1, ["sky", "grass", "person", "road"], ["dog", "cat", "car"]),
    (2, ["dog", "dog", "sign"], ["cat"]),  # a repeated truth object, a truth object that is a global safe word
    (3, ["grass", "ground"], ["dog"]),  # "ground" is a synonym of grass and a truth object itself
    (4, ["car"], ["tree"]),
]
DISCRIMINATIVE = [  # id, type, truth, query
    (1005, "discriminative-attribute-state", "yes", "Is the sky sunny in this image?"),
    (1006, "discriminative-attribute-state", "no", "Is the sky gloomy in this image?"),
    (1007, "discriminative-attribute-number", "yes", "Is there one man in this image?"),
    (1008, "discriminative-attribute-number", "no", "Are there two men in this image?"),
    (1009, "discriminative-attribute-action", "yes", "Does the man walk in this image?"),
    (1010, "discriminative-attribute-action", "no", "Does the man sit in this image?"),
    (8633, "discriminative-hallucination", "no", "Is there a cloud in this image?"),
    (8634, "discriminative-hallucination", "no", "Is there a bird in this image?"),
    (8635, "discriminative-hallucination", "no", "Is there a cat in this image?"),
    (8636, "discriminative-hallucination", "no", "Is there a car in this image?"),
    (13557, "discriminative-relation", "yes", "Is there direct contact between the person and grass?"),
    (13558, "relation", "no", "Is there direct contact between the person and tree?"),
]


def write_amber(root, images=True):
    """AMBER's released layout: the checkout's data/ files and the Drive zip's image/ folder."""
    (root / "data" / "query").mkdir(parents=True)
    queries = [{"id": i, "image": f"AMBER_{i}.jpg", "query": "Describe this image."} for i, _, _ in GENERATIVE]
    queries += [{"id": i, "image": f"AMBER_{1 + n % 4}.jpg", "query": q} for n, (i, _, _, q) in enumerate(DISCRIMINATIVE)]
    annotations = [{"id": i, "type": "generative", "truth": truth, "hallu": hallu} for i, truth, hallu in GENERATIVE]
    annotations += [{"id": i, "type": kind, "truth": truth} for i, kind, truth, _ in DISCRIMINATIVE]
    (root / "data" / "query" / "query_all.json").write_text(json.dumps(queries, indent=4))
    (root / "data" / "annotations.json").write_text(json.dumps(annotations, indent=4))
    (root / "data" / "relation.json").write_text(json.dumps(RELATION, indent=4))
    (root / "data" / "safe_words.txt").write_text(SAFE_WORDS)
    if images:
        (root / "image").mkdir()
        for i in range(1, 5):
            Image.new("RGB", (40 + 8 * i, 32), (60 * i, 90, 200 - 40 * i)).save(root / "image" / f"AMBER_{i}.jpg")
    return root


@pytest.fixture
def amber_dir(tmp_path):
    return write_amber(tmp_path / "AMBER")


def outputs(responses):
    return [(RecordLocation("out.jsonl", "line", n), {"id": i, "response": r}) for n, (i, r) in enumerate(responses.items(), start=1)]


def resources_of(root):
    resources, problems = amber.load_resources(root)
    assert problems == []
    return resources


def exact_tools(resources):
    """The installed noun extraction with exact matching only: the same result whether or not
    nltk's tagger and spaCy are installed, for the sentences below (every object word a noun)."""
    return amber.LanguageTools(amber.language_tools(resources).nouns, amber.exact_similarity)


# ----------------------------------------------------------------------------- reading


def test_reader_builds_the_original_prompts_and_keeps_the_records(amber_dir):
    data = amber.read(amber_dir, None, ())
    assert data.problems == []
    assert data.image_folder == amber_dir / "image"
    by_id = {example.idx: example for example in data.examples}
    assert sorted(by_id) == [i for i, _, _ in GENERATIVE] + [i for i, _, _, _ in DISCRIMINATIVE]
    assert by_id[1].question == "Describe this image."
    assert by_id[1005].question == "Is the sky sunny in this image?" + YES_NO_SUFFIX
    assert by_id[1005].record == {"id": 1005, "image": "AMBER_1.jpg", "query": "Is the sky sunny in this image?"}
    assert by_id[3].image.path == "AMBER_3.jpg"
    assert any("--benchmark_parts generative" in note for note in data.notes)

    generative = amber.read(amber_dir, None, ("generative",))
    assert [e.idx for e in generative.examples] == [1, 2, 3, 4]
    assert not any("discriminative" in note for note in generative.notes)
    assert [e.idx for e in amber.read(amber_dir, None, ("discriminative",)).examples][:2] == [1005, 1006]


def test_reader_takes_a_flat_folder_and_splits_by_id_without_annotations(tmp_path, amber_dir):
    flat = tmp_path / "flat"
    flat.mkdir()
    queries = json.loads((amber_dir / "data" / "query" / "query_all.json").read_text())
    (flat / "query_all.json").write_text(json.dumps(queries))
    data = amber.read(flat, amber_dir / "image", ("generative",))
    assert data.problems == [] and data.image_folder == amber_dir / "image"
    assert [e.idx for e in data.examples] == [1, 2, 3, 4]
    assert any("no annotations.json" in note for note in data.notes)


def test_reader_reports_missing_files_and_fields(tmp_path, amber_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    [problem] = amber.read(empty, None, ()).problems
    assert "query_all.json" in str(problem) and "file not found" in str(problem)

    path = amber_dir / "data" / "query" / "query_all.json"
    queries = json.loads(path.read_text())
    del queries[1]["query"]
    queries[2]["id"] = "3"
    queries[3]["id"] = 1
    path.write_text(json.dumps(queries))
    messages = [str(p) for p in amber.read(amber_dir, None, ()).problems]
    assert f"{path}, record 1 (idx=2), field 'query': missing" in messages
    assert f"{path}, record 2 (idx='3'), field 'id': must be int, found str" in messages
    assert f"{path}, record 3 (idx=1), field 'id': repeated (also record 0)" in messages

    no_images = write_amber(tmp_path / "no_images", images=False)
    data = amber.read(no_images, None, ())
    assert data.examples == [] and "Google Drive" in str(data.problems[0]) and str(no_images / "image") in str(data.problems[0])


# ----------------------------------------------------------------------------- yes/no questions

# Hand computation (inference.py: every denominator starts at 0.001; "No" is the positive class).
RESPONSES = {
    1005: "Yes", 1006: "No",    # state: both right
    1007: "Yes.", 1008: "No",   # number: "Yes." is not "Yes": wrong
    1009: "No", 1010: "Yes",    # action: both wrong
    8633: "No", 8634: "No", 8635: "Yes", 8636: "Yes.",  # existence: all truths "no"
    13557: "Yes", 13558: "no",  # relation: "no" is not "No": wrong
}


def test_yes_no_metrics_match_a_hand_computation(amber_dir):
    records = outputs(RESPONSES)
    assert amber.check(records, ScoreOptions(benchmark_dir=amber_dir)) == []
    result = amber.score_with(records, resources_of(amber_dir))
    # 12 questions, 6 right (1005 1006 1008 8633 8634 13557): 6/12.001 = 49.996 -> 50.0
    # answered "No" 5 times (1006 1008 1009 8633 8634), 4 of them truly no: 4/5.001 = 79.98 -> 80.0
    # truth "no" 8 times, 4 answered "No": 4/8.001 = 49.99 -> 50.0; F1 = 2*.8*.5/(.8+.5+1e-4) = 61.53 -> 61.5
    assert result.scores == {"Accuracy": 50.0, "Precision": 80.0, "Recall": 50.0, "F1": 61.5}
    # compared as they are, as inference.py compares them: " No\n" is not "No"
    assert amber.score_with(outputs({8634: " No\n"}), resources_of(amber_dir)).scores["Accuracy"] == 0.0
    assert list(result.groups) == ["existence", "attribute", "state", "number", "action", "relation"]
    # existence: 2/4.001 right = 50.0; P = 2/2.001 = 99.95 -> 100.0; R = 50.0;
    # F1 with its eps 1e-3: 2*1*.5/(1.5+1e-3) = 66.62 -> 66.6 (66.7 with 1e-4)
    assert result.groups["existence"] == {"Accuracy": 50.0, "Precision": 100.0, "Recall": 50.0, "F1": 66.6}
    # state: 2/2.001 = 99.95 -> 100.0; P = R = 1/1.001 = 99.90 -> 99.9; F1 = 2*.999*.999/(1.998+1e-4) = 99.895 -> 99.9
    assert result.groups["state"] == {"Accuracy": 100.0, "Precision": 99.9, "Recall": 99.9, "F1": 99.9}
    # number: 1/2.001 = 49.98 -> 50.0; P = R = 1/1.001 -> 99.9; F1 99.9
    assert result.groups["number"] == {"Accuracy": 50.0, "Precision": 99.9, "Recall": 99.9, "F1": 99.9}
    # action: 0 right; one "No" on a "yes": P = 0/1.001 = 0; R = 0/1.001 = 0; F1 = 0
    assert result.groups["action"] == {"Accuracy": 0.0, "Precision": 0.0, "Recall": 0.0, "F1": 0.0}
    # attribute pools the three counters, 0.001s included: 3/6.003 = 49.975 -> 50.0;
    # P = 2/3.003 = 66.60 -> 66.6; R = 2/3.003 -> 66.6; F1 = 2*.666*.666/(1.332+1e-4) = 66.595 -> 66.6
    assert result.groups["attribute"] == {"Accuracy": 50.0, "Precision": 66.6, "Recall": 66.6, "F1": 66.6}
    # relation: "discriminative-relation" and "relation" together: 1/2.001 -> 50.0; no "No" answer: P = 0; R = 0/1.001 = 0
    assert result.groups["relation"] == {"Accuracy": 50.0, "Precision": 0.0, "Recall": 0.0, "F1": 0.0}
    assert result.counts == {"questions": 12, "correct": 6, "not_yes_or_no": 3}
    assert any("3 of 12 yes/no responses are neither exactly \"Yes\" nor \"No\"" in note for note in result.notes)
    rows = {row["id"]: row for row in result.per_record}
    assert rows[1007] == {"line": 3, "id": 1007, "type": "discriminative-attribute-number", "dimension": "number",
                          "truth": "yes", "prediction": None, "correct": False}
    assert rows[8634]["prediction"] == "No" and rows[8634]["correct"] is True
    assert rows[13558]["dimension"] == "relation" and rows[13558]["prediction"] is None


# ----------------------------------------------------------------------------- descriptions

DESCRIPTIONS = {
    # man (a synonym of person: covers it), dog (a hallucination target: hallucinated, counts toward Cog),
    # grass, sky (truth), light (a global safe word: a mention, never hallucinated); "walks" is no object word.
    1: "A man walks a dog on the grass under the sky near a light.",
    # dogs -> dog covers the first "dog" only; cat: a target, hallucinated; sign: global safe, so the truth
    # object "sign" is never covered; tree: an object word not in the truth: hallucinated.
    2: "Two dogs and a cat near a sign and a tree.",
    # puppy: a synonym of the target dog: hallucinated, counts toward Cog; ground: the synonym of grass is
    # found first, so it covers grass and never the truth object "ground".
    3: "The puppy sits on the ground.",
    # vehicle: a synonym of car: covered, nothing hallucinated.
    4: "A vehicle.",
}


def test_description_metrics_match_a_hand_computation(amber_dir):
    resources = resources_of(amber_dir)
    result = amber.score_with(outputs(DESCRIPTIONS), resources, exact_tools(resources))
    rows = {row["id"]: row for row in result.per_record}
    assert rows[1] == {"line": 1, "id": 1, "type": "generative", "nouns": ["man", "dog", "grass", "sky", "light"],
                       "hallucinated": ["dog"], "truth_covered": ["sky", "grass", "person"], "hallu_mentioned": ["dog"]}
    assert (rows[2]["nouns"], rows[2]["hallucinated"]) == (["dog", "cat", "sign", "tree"], ["cat", "tree"])
    assert (rows[2]["truth_covered"], rows[2]["hallu_mentioned"]) == (["dog"], ["cat"])
    assert (rows[3]["nouns"], rows[3]["hallucinated"]) == (["puppy", "ground"], ["puppy"])
    assert (rows[3]["truth_covered"], rows[3]["hallu_mentioned"]) == (["grass"], ["dog"])
    assert (rows[4]["hallucinated"], rows[4]["truth_covered"], rows[4]["hallu_mentioned"]) == ([], ["car"], [])
    # mentions 5+4+2+1 = 12, hallucinated 1+2+1+0 = 4: CHAIR = 4/12.001 = 33.33 -> 33.3
    # truth objects 4+3+2+1 = 10, covered 3+1+1+1 = 6: Cover = 6/10.001 = 59.99 -> 60.0
    # responses with a hallucination: 3 of 4: Hal = 100 - 1/4.001*100 = 75.006 -> 75.0
    # targets 3+1+1+1 = 6, mentioned 1+1+1+0 = 3: Cog = 3/6.001 = 49.99 -> 50.0
    assert result.scores == {"CHAIR": 33.3, "Cover": 60.0, "Hal": 75.0, "Cog": 50.0}
    assert result.counts == {"descriptions": 4, "object_mentions": 12, "hallucinated_mentions": 4, "truth_objects": 10,
                             "truth_objects_covered": 6, "hallucination_targets": 6, "hallucination_targets_mentioned": 3}

    both = amber.score_with(outputs({**DESCRIPTIONS, **RESPONSES}), resources, exact_tools(resources))
    assert both.scores["AMBER Score"] == pytest.approx((100 - 33.3 + 61.5) / 2)  # 64.1
    assert both.scores["CHAIR"] == 33.3 and both.scores["F1"] == 61.5


def test_similar_words_count_as_inference_py_counts_them(amber_dir):
    resources = resources_of(amber_dir)
    similar = {("kitten", "cat"): 0.9, ("kitten", "dog"): 0.85}

    def similarity(word, other):  # a stand-in for spaCy's en_core_web_lg
        return 1.0 if word == other else similar.get((word, other), 0.0)

    tools = amber.LanguageTools(amber.language_tools(resources).nouns, similarity)
    # kitten, similar to the truth object cat: covers it and is not hallucinated; the target loop runs
    # first and marks dog, the first similar target (through its synonym list: puppy, dog, tree).
    annotation = amber.Annotation(9, "generative", ["cat", "road"], ["dog", "tree"])
    result = amber.score_description("A kitten on the road.", annotation, resources, tools)
    assert (result["hallucinated"], result["truth_covered"], result["hallu_mentioned"]) == ([], ["cat", "road"], ["dog"])
    # With exact matching only, the kitten is hallucinated and covers nothing.
    exact = amber.score_description("A kitten on the road.", annotation, resources, exact_tools(resources))
    assert (exact["hallucinated"], exact["truth_covered"], exact["hallu_mentioned"]) == (["kitten"], ["road"], [])
    # An exact target match does not stop the similarity loop: kitten marks the target kitten exactly
    # and the target dog by similarity; similar to no truth object, it is hallucinated.
    annotation = amber.Annotation(10, "generative", ["road"], ["dog", "kitten"])
    result = amber.score_description("A kitten.", annotation, resources, tools)
    assert (result["hallucinated"], result["truth_covered"], result["hallu_mentioned"]) == (["kitten"], [], ["dog", "kitten"])


def test_missing_language_data_is_said(amber_dir):
    resources = resources_of(amber_dir)
    tools = amber.language_tools(resources)
    tagger, _ = amber.nltk_tagger()
    spacy_similarity, _ = amber.spacy_similarity()
    assert any("every word was taken as a noun candidate" in note for note in tools.notes) == (tagger is None)
    assert any("only exactly" in note for note in tools.notes) == (spacy_similarity is None)
    result = amber.score_with(outputs({1: DESCRIPTIONS[1]}), resources)
    assert set(tools.notes) <= set(result.notes)


# ----------------------------------------------------------------------------- checking


def test_check_reports_missing_files_and_unknown_ids(tmp_path, amber_dir):
    records = outputs({1: "A dog.", 1005: "Yes"})
    [problem] = amber.check(records, ScoreOptions())
    assert "--benchmark_dir" in str(problem)

    (amber_dir / "data" / "annotations.json").unlink()
    [problem] = amber.check(records, ScoreOptions(benchmark_dir=amber_dir))
    assert "annotations.json" in str(problem) and "file not found" in str(problem)

    other = write_amber(tmp_path / "other", images=False)
    bad = outputs({1: "A dog.", 77: "Yes"}) + [(RecordLocation("out.jsonl", "line", 3), {"response": "No"})]
    messages = [str(p) for p in amber.check(bad, ScoreOptions(benchmark_dir=other))]
    assert messages == ["out.jsonl, line 2 (idx=77), field 'id': not in annotations.json",
                        "out.jsonl, line 3, field 'id': missing or not an integer (found None); is this an AMBER output?"]

    annotations = json.loads((other / "data" / "annotations.json").read_text())
    annotations[0]["truth"].append("unicorn")
    annotations[4]["truth"] = "maybe"
    (other / "data" / "annotations.json").write_text(json.dumps(annotations))
    messages = [str(p) for p in amber.check(outputs({1: "A dog."}), ScoreOptions(benchmark_dir=other))]
    path = other / "data" / "annotations.json"
    assert messages == [(f"{path}, record 0 (idx=1), field 'truth': 'unicorn' not a key of relation.json "
                         "(inference.py needs every object word there)"),
                        f"{path}, record 4 (idx=1005), field 'truth': must be \"yes\" or \"no\", found 'maybe'"]


# ----------------------------------------------------------------------------- end to end


def test_inference_then_scoring_end_to_end(tiny_checkpoint, amber_dir, tmp_path, capsys):
    from mcmdpo.eval.inference import main as infer
    from mcmdpo.eval.score_cli import main as get_score

    output = tmp_path / "amber.jsonl"
    assert infer(["--model_name", str(tiny_checkpoint), "--test_datasets", "amber", "--benchmark_dir", str(amber_dir),
                  "--eval_output", str(output), "--max_new_tokens", "8", "--num_beams", "1", "--quiet"]) == 0
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(lines) == len(GENERATIVE) + len(DISCRIMINATIVE)
    first = min(lines, key=lambda line: line["id"])
    assert first == {"id": 1, "image": "AMBER_1.jpg", "query": "Describe this image.", "response": first["response"]}
    assert all(set(line) == {"id", "image", "query", "response"} for line in lines)
    assert "--benchmark_parts generative" in capsys.readouterr().err

    summary, plot = tmp_path / "summary.json", tmp_path / "plot.png"
    assert get_score(["--benchmark", "amber", "--file", str(output), "--benchmark_dir", str(amber_dir),
                      "--summary_json", str(summary), "--plot", str(plot), "--quiet"]) == 0
    [result] = json.loads(summary.read_text())
    assert result["benchmark"] == "amber" and result["num_scored"] == len(lines)
    assert set(result["scores"]) == {"CHAIR", "Cover", "Hal", "Cog", "Accuracy", "Precision", "Recall", "F1", "AMBER Score"}
    assert set(result["groups"]) == {"existence", "attribute", "state", "number", "action", "relation"}
    assert plot.is_file()
    rows = [json.loads(line) for line in (tmp_path / "amber.amber.scores.jsonl").read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == sorted(line["id"] for line in lines)


def test_bad_inputs_stop_before_any_model_loads(tmp_path, amber_dir, capsys):
    from mcmdpo.eval.inference import main as infer
    from mcmdpo.eval.score_cli import main as get_score

    def run(benchmark_dir):  # a checkpoint that does not exist: reaching the model would fail differently
        return infer(["--model_name", str(tmp_path / "no_model"), "--test_datasets", "amber", "--benchmark_dir",
                      str(benchmark_dir), "--eval_output", str(tmp_path / "out.jsonl"), "--quiet"])

    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(empty) == 2
    err = capsys.readouterr().err
    assert "query_all.json" in err and "file not found" in err and "no_model" not in err

    path = amber_dir / "data" / "query" / "query_all.json"
    queries = json.loads(path.read_text())
    del queries[4]["query"]
    path.write_text(json.dumps(queries))
    assert run(amber_dir) == 2
    err = capsys.readouterr().err
    assert f"{path}, record 4 (idx=1005), field 'query': missing" in err and "no_model" not in err
    assert not (tmp_path / "out.jsonl").exists()

    output = tmp_path / "given.jsonl"
    output.write_text(json.dumps({"id": 1, "image": "AMBER_1.jpg", "query": "Describe this image.", "response": "A dog."}) + "\n")
    (amber_dir / "data" / "annotations.json").unlink()
    assert get_score(["--benchmark", "amber", "--file", str(output), "--benchmark_dir", str(amber_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "annotations.json" in err and "file not found" in err
    assert get_score(["--benchmark", "amber", "--file", str(output), "--quiet"]) == 2
    assert "--benchmark_dir" in capsys.readouterr().err
