"""Object HalBench (judge-free CHAIR) and MMHal-Bench (an LLM judge), from their released files to
their scores: fixtures in the released formats, CHAIR against a hand computation, the judge
against a real local HTTP server (retries, an interruption, a resume), bad input reported before
any model loads."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from mcmdpo.eval import inference, score_cli
from mcmdpo.eval.benchmarks import find_benchmark, judge
from mcmdpo.eval.benchmarks.chair import ObjectMatcher, Synonyms
from mcmdpo.eval.benchmarks.mmhal_bench import official_rating
from mcmdpo.eval.language_data import word_tokenizer, wordnet

needs_wordnet = pytest.mark.skipif(wordnet()[0] is None, reason="WordNet (nltk data or Debian's wordnet-base) not installed")


# ---------------------------------------------------------------- fixtures in the released formats

def image_base64(color: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 20), color).save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# RLAIF-V's synonyms_refine.txt layout (", "-separated, the COCO class first), a few classes only.
SYNONYMS = """person, girl, boy, man, woman, kid, child, baby, people, adult, child
bird
cat, kitty, kitten
dog, puppy, pup
hot dog, hotdog
chair, seat, stool
dining table, table, desk, coffee table
toilet
cell phone, mobile phone, phone, cellphone
"""
CATEGORIES = {1: "person", 16: "bird", 17: "cat", 18: "dog", 58: "hot dog", 62: "chair", 67: "dining table",
              70: "toilet", 77: "cell phone"}
# image id -> (instance categories, reference captions)
COCO_IMAGES = {
    1: ([18, 18, 67], ["A puppy sits beside a table.", "Two dogs on a couch."]),
    2: ([1, 16], ["A woman feeds a bird."]),
    3: ([70], ["A toilet with the seat up."]),  # "seat" must not make it a chair
    4: ([77], ["A man holds a mobile phone."]),
}
OBJHAL_QUESTIONS = ["Provide a thorough description of the given image.",
                    "What is this photo about? Please answer in great detail."]


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory) -> Path:
    """COCO 2014's instances_val2014.json and captions_val2014.json, for four images."""
    folder = tmp_path_factory.mktemp("coco_annotations")
    images = [{"id": image_id, "file_name": f"COCO_val2014_{image_id:012d}.jpg", "height": 20, "width": 24}
              for image_id in COCO_IMAGES]
    instances = [{"id": 100 * image_id + i, "image_id": image_id, "category_id": category, "bbox": [0, 0, 5, 5],
                  "area": 25.0, "iscrowd": 0, "segmentation": [[0, 0, 5, 0, 5, 5]]}
                 for image_id, (categories, _) in COCO_IMAGES.items() for i, category in enumerate(categories)]
    captions = [{"id": 1000 * image_id + i, "image_id": image_id, "caption": caption}
                for image_id, (_, texts) in COCO_IMAGES.items() for i, caption in enumerate(texts)]
    common = {"info": {"description": "tiny"}, "licenses": [], "images": images}
    (folder / "instances_val2014.json").write_text(json.dumps({
        **common, "annotations": instances,
        "categories": [{"id": cid, "name": name, "supercategory": "x"} for cid, name in CATEGORIES.items()]}))
    (folder / "captions_val2014.json").write_text(json.dumps({**common, "annotations": captions}))
    return folder


@pytest.fixture(scope="module")
def objhal_dir(tmp_path_factory) -> Path:
    """RLAIF-V's eval/data: obj_halbench_300_with_image.jsonl (three images) and synonyms_refine.txt."""
    folder = tmp_path_factory.mktemp("objhal")
    records = [{"image_id": image_id, "question": OBJHAL_QUESTIONS[i % 2], "image": image_base64((40 * i, 90, 200)),
                "org_idx": 10 + i, "source": "tiny"} for i, image_id in enumerate((1, "2", 3))]
    write_jsonl(folder / "obj_halbench_300_with_image.jsonl", records)
    (folder / "synonyms_refine.txt").write_text(SYNONYMS)
    return folder


def mmhal_record(i: int, question_type: str) -> dict:
    return {"question_type": question_type, "question_topic": "outdoor", "image_id": f"{i:016x}",
            "image_src": f"https://example.org/{i}.jpg", "image_content": ["Fire hydrant", "Tree"][: 1 + i % 2],
            "question": f"What color is object {i}?", "gt_answer": f"Object {i} is yellow.",
            "image": image_base64((200, 30 * i, 40))}


# Our own stand-in for the official eval_gpt4.py: its prompt is read from the `template` string.
EVAL_SCRIPT = '''import argparse

template = """Judge the answer.

### Image Contents
{}

### Question
{}

### Standard Human-Generated Answer
{}

### LMM Response to Evaluate
{}
"""

if __name__ == "__main__":
    argparse.ArgumentParser().parse_args()
'''


@pytest.fixture(scope="module")
def mmhal_dir(tmp_path_factory) -> Path:
    """mmhal-bench_with_image.jsonl (three questions) and an eval_gpt4.py."""
    folder = tmp_path_factory.mktemp("mmhal")
    write_jsonl(folder / "mmhal-bench_with_image.jsonl",
                [mmhal_record(i, t) for i, t in enumerate(("attribute", "adversarial", "comparison"))])
    (folder / "eval_gpt4.py").write_text(EVAL_SCRIPT)
    return folder


def infer(checkpoint, benchmark: str, benchmark_dir, output, *extra) -> int:
    return inference.main(["--model_name", str(checkpoint), "--test_datasets", benchmark, "--benchmark_dir", str(benchmark_dir),
                           "--eval_output", str(output), "--max_new_tokens", "8", "--num_beams", "1", "--quiet", *extra])


# ---------------------------------------------------------------- end to end

def test_names_find_both_benchmarks():
    assert find_benchmark("obj_halbench_300").name == find_benchmark("object_halbench").name == "object_halbench"
    assert find_benchmark("MMHal-Bench").name == find_benchmark("mmhal").name == "mmhal_bench"


@needs_wordnet
def test_object_halbench_end_to_end(tiny_checkpoint, objhal_dir, coco_dir, tmp_path, capsys):
    output = tmp_path / "objhal.jsonl"
    assert infer(tiny_checkpoint, "obj_halbench_300", objhal_dir, output) == 0
    written = read_jsonl(output)
    released = read_jsonl(objhal_dir / "obj_halbench_300_with_image.jsonl")
    assert len(written) == 3
    for record, original in zip(written, released):
        assert "image" not in record and isinstance(record["response"], str)
        assert {k: v for k, v in record.items() if k != "response"} == {k: v for k, v in original.items() if k != "image"}
    summary = tmp_path / "summary.json"
    assert score_cli.main(["--file", str(output), "--benchmark", "obj_halbench_300", "--benchmark_dir", str(objhal_dir),
                         "--coco_annotations", str(coco_dir), "--summary_json", str(summary), "--quiet"]) == 0
    [result] = json.loads(summary.read_text())
    assert set(result["scores"]) == {"CHAIRs", "CHAIRs_refine", "CHAIRi", "obj_rec", "avg_word_len"}
    assert result["units"] == {"avg_word_len": "words"} and result["counts"]["responses"] == 3
    assert any("GPT" in note for note in result["notes"])  # judge-free: not the papers' numbers
    rows = read_jsonl(tmp_path / "objhal.object_halbench.scores.jsonl")
    assert [row["image_id"] for row in rows] == [1, 2, 3]
    assert rows[2]["gt_objects"] == ["toilet"]
    assert "CHAIRs" in capsys.readouterr().out


def test_mmhal_end_to_end_without_a_judge_writes_the_official_input(tiny_checkpoint, mmhal_dir, tmp_path, capsys):
    output = tmp_path / "mmhal.jsonl"
    assert infer(tiny_checkpoint, "mmhal_bench", mmhal_dir, output) == 0
    written = read_jsonl(output)
    assert len(written) == 3 and all("image" not in record for record in written)
    capsys.readouterr()
    summary = tmp_path / "summary.json"
    assert score_cli.main(["--file", str(output), "--benchmark", "MMHal-Bench", "--summary_json", str(summary), "--quiet"]) == 0
    out = capsys.readouterr().out
    judge_input = tmp_path / "mmhal.mmhal_bench.judge_input.json"
    assert str(judge_input) in out and "eval_gpt4.py --response" in out
    rows = json.loads(judge_input.read_text())
    assert [list(row) for row in rows] == [["question_type", "question_topic", "image_id", "image_src", "image_content",
                                            "question", "gt_answer", "model_answer"]] * 3
    assert [row["model_answer"] for row in rows] == [record["response"] for record in written]
    assert json.loads(summary.read_text())[0]["scores"] == {}


# ---------------------------------------------------------------- CHAIR by hand

RESPONSES = {
    # synonym (puppy -> dog) in a plural; a double word that is another class (hot dog: hallucinated)
    1: "Two puppies play near a hot dog on the dining table.",
    # "baby bird" is a bird, not a person; a repeated mention counts twice
    2: "A woman feeds a baby bird, and the bird eats.",
    # no COCO object at all
    3: "A white bathroom wall.",
    # "Assistant:" removed as RLAIF-V's reader removes it; chair is hallucinated
    4: "Assistant: A man talks on his phone while sitting on a chair.",
}


def chair_output(path: Path, responses: dict) -> Path:
    # image ids as int or as a string of digits, as the released file may hold them
    return write_jsonl(path, [{"image_id": str(image_id) if image_id == 3 else image_id, "question": OBJHAL_QUESTIONS[0],
                               "org_idx": image_id, "response": response} for image_id, response in responses.items()])


def score_objhal(output, objhal_dir, coco_dir, tmp_path, *extra) -> tuple[int, dict | None]:
    summary = tmp_path / "chair_summary.json"
    summary.unlink(missing_ok=True)
    arguments = ["--file", str(output), "--benchmark", "object_halbench", "--summary_json", str(summary), "--quiet"]
    if objhal_dir is not None:
        arguments += ["--benchmark_dir", str(objhal_dir)]
    if coco_dir is not None:
        arguments += ["--coco_annotations", str(coco_dir)]
    rc = score_cli.main(arguments + list(extra))
    return rc, json.loads(summary.read_text())[0] if summary.exists() else None


@needs_wordnet
def test_chair_equals_a_hand_computation(objhal_dir, coco_dir, tmp_path):
    output = chair_output(tmp_path / "hand.jsonl", RESPONSES)
    rc, result = score_objhal(output, objhal_dir, coco_dir, tmp_path)
    assert rc == 0
    rows = read_jsonl(tmp_path / "hand.object_halbench.scores.jsonl")
    # Ground truth: instances and caption mentions; "seat" beside "toilet" is no chair.
    assert [row["gt_objects"] for row in rows] == [["dining table", "dog"], ["bird", "person"], ["toilet"], ["cell phone", "person"]]
    assert [row["mentioned_objects"] for row in rows] == [
        [["puppy", "dog"], ["hot dog", "hot dog"], ["dining table", "dining table"]],
        [["woman", "person"], ["bird", "bird"], ["bird", "bird"]],
        [],
        [["man", "person"], ["phone", "cell phone"], ["chair", "chair"]],
    ]
    assert [row["hallucinated_objects"] for row in rows] == [[["hot dog", "hot dog"]], [], [], [["chair", "chair"]]]
    # 4 responses, 2 hallucinate, 3 mention a COCO object; 9 mentions, 2 hallucinated; 6 of 7 gt objects recalled;
    # 11 + 10 + 4 + 11 words.
    scores = result["scores"]
    assert scores["CHAIRs"] == pytest.approx(100 * 2 / 4)
    assert scores["CHAIRs_refine"] == pytest.approx(100 * 2 / 3)
    assert scores["CHAIRi"] == pytest.approx(100 * 2 / 9)
    assert scores["obj_rec"] == pytest.approx(100 * 6 / 7)
    assert scores["avg_word_len"] == pytest.approx(36 / 4)
    assert result["counts"] == {"responses": 4, "responses_with_coco_mention": 3, "hallucinated_responses": 2, "mentions": 9,
                                "hallucinated_mentions": 2, "recalled_objects": 6, "gt_objects": 7}
    assert any("4 distinct images scored" in note for note in result["notes"])


@needs_wordnet
def test_lemmas_are_nltks_wordnet_lemmatizer(tmp_path):
    from nltk.stem import WordNetLemmatizer

    (tmp_path / "synonyms.txt").write_text(SYNONYMS)
    matcher = ObjectMatcher(Synonyms.read(tmp_path / "synonyms.txt"), word_tokenizer()[0], wordnet()[0])
    words = ["puppies", "dogs", "people", "men", "women", "children", "glasses", "buses", "teeth", "mice", "geese",
             "boxes", "knives", "us", "has", "scissors"]
    assert [matcher.lemmatize(w) for w in words] == [WordNetLemmatizer().lemmatize(w) for w in words]
    assert matcher.words("Baby birds and an adult dog near the toilet seat.") == ["bird", "and", "an", "dog", "near", "the", "toilet", "."]


def test_chair_reports_every_problem_before_scoring(objhal_dir, coco_dir, tmp_path, capsys):
    output = write_jsonl(tmp_path / "bad.jsonl", [
        {"image_id": 1, "response": "A dog."},
        {"question": "q", "response": "A cat."},  # no image_id
        {"image_id": 999, "response": "A cat."},  # not in COCO
        {"image_id": "x12", "response": "A cat."},
    ])
    rc, _ = score_objhal(output, objhal_dir, coco_dir, tmp_path)
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{output}, line 2, field 'image_id': missing" in err
    assert f"{output}, line 3 (idx=999), field 'image_id': image 999 is not in the COCO 2014 annotations" in err
    assert "line 4, field 'image_id': must be a COCO image id" in err
    assert not (tmp_path / "bad.object_halbench.scores.jsonl").exists()

    good = chair_output(tmp_path / "good.jsonl", {1: "A dog."})
    rc, _ = score_objhal(good, None, None, tmp_path)
    err = capsys.readouterr().err
    assert rc == 2 and "--coco_annotations" in err and "synonyms_refine.txt" in err
    rc, _ = score_objhal(good, tmp_path, tmp_path, tmp_path)  # folders without the files
    err = capsys.readouterr().err
    assert rc == 2 and f"{tmp_path / 'synonyms_refine.txt'}: file not found" in err
    assert f"{tmp_path / 'instances_val2014.json'}: file not found" in err


def test_chair_without_wordnet_is_a_clear_error(objhal_dir, coco_dir, tmp_path, monkeypatch, capsys):
    from mcmdpo.eval import language_data

    monkeypatch.setattr(language_data, "wordnet", lambda: (None, "no WordNet"))
    rc, _ = score_objhal(chair_output(tmp_path / "good.jsonl", {1: "A dog."}), objhal_dir, coco_dir, tmp_path)
    assert rc == 2 and "WordNet" in capsys.readouterr().err


# ---------------------------------------------------------------- MMHal-Bench's judge, over HTTP

class FakeJudge:
    """An OpenAI-compatible chat-completions server: a reply per model answer, failures on demand."""

    def __init__(self, replies: dict[str, str]):
        self.replies = replies
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.script: dict[int, str] = {}  # call number -> "500", "401" or "slow"
        self.fail_after: int | None = None  # successful answers after which every call fails
        self.answered = 0
        judge_server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                call = len(judge_server.requests)
                judge_server.requests.append(body | {"path": self.path})
                judge_server.headers.append(dict(self.headers))
                action = judge_server.script.get(call)
                if judge_server.fail_after is not None and judge_server.answered >= judge_server.fail_after:
                    action = "500"
                if action == "slow":  # longer than the client waits: it has given up when this returns
                    time.sleep(1.0)
                    return
                if action in ("500", "401"):
                    self.send_response(int(action))
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "scripted failure"}}')
                    return
                prompt = body["messages"][0]["content"]
                answer = prompt.split("### LMM Response to Evaluate\n")[1].strip()
                judge_server.answered += 1
                payload = {"id": "x", "object": "chat.completion", "model": body["model"],
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": judge_server.replies[answer]},
                                        "finish_reason": "stop"}]}
                data = json.dumps(payload).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


# (question type, response, judge reply, the score the official parsing gives)
JUDGED = [
    ("attribute", "It is yellow.", "The response matches.\nRating: 5, very informative, no hallucination", 5),
    ("adversarial", "There are two.", "rating: 2", 2),
    ("comparison", "Left one.", "I cannot rate this.", 0),  # no rating: unparsed, 0
    ("attribute", "Red.", "Rating: 4 at first, but on reflection Rating: 1", 0),  # two ratings: unparsed, 0
    ("adversarial", "None visible.", "Rating: 3", 3),
    ("comparison", "The right one is larger.", "RATING: 6", 6),
]


def judged_output(path: Path) -> Path:
    records = []
    for i, (question_type, response, _, _) in enumerate(JUDGED):
        record = mmhal_record(i, question_type)
        del record["image"]
        records.append(record | {"response": response})
    return write_jsonl(path, records)


def score_mmhal(output, benchmark_dir, url, summary, *extra) -> int:
    return score_cli.main(["--file", str(output), "--benchmark", "mmhal_bench", "--benchmark_dir", str(benchmark_dir),
                         "--judge_url", url, "--judge_model", "judge-1", "--judge_api_key_env", "TEST_JUDGE_KEY",
                         "--summary_json", str(summary), "--quiet", *extra])


def test_official_rating_rule():
    assert official_rating("Explanation.\nRating: 6, very informative") == 6
    assert official_rating("no rating here") is None
    assert official_rating("Rating: 2 ... rating: 5") is None
    assert official_rating("rating: 3 and again Rating: 3") == 3  # one distinct rating


def test_mmhal_judge_retries_stops_clearly_and_resumes(mmhal_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(judge, "BACKOFF_S", 0.0)
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    output = judged_output(tmp_path / "answers.jsonl")
    summary = tmp_path / "summary.json"
    cache = tmp_path / "answers.mmhal_bench.judge.jsonl"
    with FakeJudge({response: reply for _, response, reply, _ in JUDGED}) as server:
        # A 500, then a timeout: both retried. After three answers the judge fails for good.
        server.script = {0: "500", 1: "slow"}
        server.fail_after = 3
        assert score_mmhal(output, mmhal_dir, server.url, summary, "--judge_retries", "3", "--judge_timeout", "0.3") == 2
        err = capsys.readouterr().err
        assert f"the judge at {server.url}/chat/completions failed 3 time(s)" in err
        assert f"3 of 6 records are judged and kept in {cache}" in err
        assert len(read_jsonl(cache)) == 3 and not summary.exists()
        assert len(server.requests) == 2 + 3 + 3  # 2 retried attempts, 3 answers, 3 failed attempts

        first = server.requests[2]
        assert first["path"] == "/v1/chat/completions" and first["model"] == "judge-1" and first["temperature"] == 0
        assert first["messages"] == [{"role": "user", "content": (
            "Judge the answer.\n\n### Image Contents\nFire hydrant\n\n### Question\nWhat color is object 0?\n\n"
            "### Standard Human-Generated Answer\nObject 0 is yellow.\n\n### LMM Response to Evaluate\nIt is yellow.\n")}]
        assert server.headers[2]["Authorization"] == "Bearer sk-test"
        assert "Fire hydrant, Tree" in server.requests[3]["messages"][0]["content"]  # labels comma-joined

        # The judge is back: a rerun asks only for the three records not judged.
        server.fail_after = None
        asked = len(server.requests)
        assert score_mmhal(output, mmhal_dir, server.url, summary) == 0
        resumed = [request["messages"][0]["content"].split("Evaluate\n")[1].strip() for request in server.requests[asked:]]
        assert resumed == [response for _, response, _, _ in JUDGED[3:]]

        # All cached now: nothing is asked.
        asked = len(server.requests)
        assert score_mmhal(output, mmhal_dir, server.url, summary) == 0
        assert len(server.requests) == asked

    [result] = json.loads(summary.read_text())
    assert result["counts"] == {"responses": 6, "judge_calls": 0, "from_cache": 6, "unparsed": 2}
    assert result["units"] == {"average_score": "points (0-6)"}
    ratings = [score for *_, score in JUDGED]  # 5 2 0 0 3 6
    assert result["scores"]["average_score"] == pytest.approx(16 / 6)
    assert result["scores"]["hallucination_rate"] == pytest.approx(100 * 3 / 6)  # 2, 0, 0
    assert result["scores"]["informativeness"] == pytest.approx(100 * (2 + 2 + 0 + 0 + 0 + 3) / 18)
    assert list(result["groups"]) == ["attribute", "adversarial", "comparison"]
    assert {name: group["average_score"] for name, group in result["groups"].items()} == pytest.approx(
        {"attribute": 2.5, "adversarial": 2.5, "comparison": 3.0})
    rows = read_jsonl(tmp_path / "answers.mmhal_bench.scores.jsonl")
    assert [row["score"] for row in rows] == ratings
    assert [row["parsed"] for row in rows] == [True, True, False, False, True, True]


def test_judge_cache_cuts_a_partial_last_line_and_refuses_a_damaged_one(tmp_path):
    path = tmp_path / "x.mmhal_bench.judge.jsonl"
    cache = judge.JudgeCache(path)
    cache.add({"key": "a", "reply": "Rating: 1"})
    cache.add({"key": "b", "reply": "Rating: 2"})
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"key": "c", "rep')  # a write cut short
    assert set(judge.JudgeCache(path).entries) == {"a", "b"} and path.read_bytes() == whole
    path.write_bytes(b"not json\n" + whole)
    with pytest.raises(judge.JudgeError, match="line 1: not a JSON record"):
        judge.JudgeCache(path)


def test_mmhal_judge_refusal_and_missing_prompt_are_clear(mmhal_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(judge, "BACKOFF_S", 0.0)
    output = judged_output(tmp_path / "answers.jsonl")
    summary = tmp_path / "summary.json"
    with FakeJudge({}) as server:
        server.script = {0: "401"}  # a bad key is not retried
        assert score_mmhal(output, mmhal_dir, server.url, summary) == 2
        assert "answered HTTP 401" in capsys.readouterr().err and len(server.requests) == 1
        # Without the official eval_gpt4.py the prompt is unknown: an error before any request.
        assert score_mmhal(output, tmp_path, server.url, summary) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / 'eval_gpt4.py'}: file not found" in err and len(server.requests) == 1
    # A record without the judge's fields is named before anything is asked.
    broken = write_jsonl(tmp_path / "broken.jsonl", [{"question_type": "attribute", "question": "q", "gt_answer": "a",
                                                      "image_content": "Tree", "response": "r"},
                                                     {"question_type": "other", "image_content": [], "response": "r"}])
    assert score_mmhal(broken, mmhal_dir, "http://127.0.0.1:9", summary) == 2
    err = capsys.readouterr().err
    assert f"{broken}, line 1, field 'image_content': must be list, found str" in err
    assert f"{broken}, line 2, field 'question': missing" in err


# ---------------------------------------------------------------- bad input, before any model loads

@pytest.mark.parametrize("benchmark, file_name", [("obj_halbench_300", "obj_halbench_300_with_image.jsonl"),
                                                  ("mmhal_bench", "mmhal-bench_with_image.jsonl")])
def test_missing_question_file(benchmark, file_name, tmp_path, capsys):
    assert infer(tmp_path / "no-model", benchmark, tmp_path, tmp_path / "out.jsonl") == 2
    assert f"{tmp_path / file_name}: file not found" in capsys.readouterr().err


def test_bad_records_are_named_before_the_model_loads(tmp_path, capsys):
    objhal = tmp_path / "objhal"
    objhal.mkdir()
    not_an_image = base64.b64encode(b"not a jpeg").decode()
    write_jsonl(objhal / "obj_halbench_300_with_image.jsonl", [
        {"image_id": 1, "question": "Describe.", "image": image_base64((1, 2, 3)), "org_idx": 0},
        {"image_id": 2, "image": image_base64((1, 2, 3)), "org_idx": 1},  # no question
        {"image_id": 3, "question": "Describe.", "image": "%%% not base64 %%%", "org_idx": 2},
        {"image_id": "abc", "question": "Describe.", "image": image_base64((1, 2, 3)), "org_idx": 3},
        {"image_id": 5, "question": "Describe.", "image": not_an_image, "org_idx": 4},
    ])
    model = tmp_path / "no-model"  # loading it would fail differently: the data must be refused first
    assert infer(model, "obj_halbench_300", objhal, tmp_path / "out.jsonl") == 2
    err = capsys.readouterr().err
    path = objhal / "obj_halbench_300_with_image.jsonl"
    assert f"{path}, line 2 (idx=2), field 'question': missing" in err
    assert f"{path}, line 3 (idx=3), field 'image': is not valid base64" in err
    assert f"{path}, line 4 (idx='abc'), field 'image_id': must be a COCO image id" in err
    assert f"{path}, line 5 (idx=5), field 'image'" in err  # decodes to no image
    assert "4 problem(s)" in err
    assert not (tmp_path / "out.jsonl").exists()

    mmhal = tmp_path / "mmhal"
    mmhal.mkdir()
    good = mmhal_record(0, "attribute")
    write_jsonl(mmhal / "mmhal-bench_with_image.jsonl", [
        good,
        {k: v for k, v in good.items() if k != "gt_answer"},
        good | {"image_content": ["Tree", 3]},
        good | {"image": "@@"},
    ])
    assert infer(model, "MMHal-Bench", mmhal, tmp_path / "out.jsonl") == 2
    err = capsys.readouterr().err
    path = mmhal / "mmhal-bench_with_image.jsonl"
    assert f"{path}, line 2 (idx='0000000000000000'), field 'gt_answer': missing" in err
    assert f"{path}, line 3 (idx='0000000000000000'), field 'image_content': must be a list of strings" in err
    assert f"{path}, line 4 (idx='0000000000000000'), field 'image': is not valid base64" in err
    assert "3 problem(s)" in err
