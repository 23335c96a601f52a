"""The annotation page (``python -m mcmdpo.app annotate``) and its export: candidates files read
and checked before the server starts, each annotator's queue with its overlap under concurrent
answers, undo and corrections, the server's authentication and its refusal of paths, agreement
equal to scikit-learn's and krippendorff's values, pairs by majority that validate and train, the
human ranker reading the same database; and, in a real headless Chromium, an annotator labelling
with the keyboard across a SIGKILL of the server, and two annotators with ``--overlap 2``."""

from __future__ import annotations

import base64
import http.client
import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from build_support import train_two_mcmdpo_steps
from mcmdpo.app.agreement import agreement_report, label_of
from mcmdpo.app.annotate_cli import main as annotate_main
from mcmdpo.app.annotate_server import AnnotationServer, ServerSettings
from mcmdpo.app.annotation_store import AnnotationQueue, AnswerError
from mcmdpo.app.candidates_file import CandidatesError, pick_two, read_candidates
from mcmdpo.app.export import REPORT_FILE, ExportOptions, export
from mcmdpo.app.export import main as export_main
from mcmdpo.build.annotations import SCHEMA_VERSION, add_items, create_database, read_answers, read_items
from mcmdpo.build.records import context_of
from mcmdpo.build.stage_files import write_complete
from mcmdpo.data.validate import main as validate_main

REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO_ROOT / "docs" / "annotation.png"


# ---------------------------------------------------------------- inputs the tests write

def stage_records(synthetic_dir: Path, count: int) -> list[dict]:
    """Builder records (as the sample stage writes them) of the first ``count`` synthetic
    preference records: their two candidates, the record's chosen and rejected."""
    records = []
    for number, record in enumerate(json.loads((synthetic_dir / "pref_test.json").read_text())[:count]):
        text = json.loads(record["text"])
        records.append({"key": f"rec{number}", "id": number, "source": {"file": "pref_test.json", "position": number},
                        "image": {"path": record["image_path"]}, "question": text["question"],
                        "context": context_of(text["question"]), "alt_text": text["chosen"], "alt_text_original": text["chosen"],
                        "correction": None, "candidates": [text["chosen"], text["rejected"]]})
    return records


def write_stage(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_complete(path, "sample", {"written_by": "the test"}, records)
    return path


def loaded_queue(synthetic_dir: Path, folder: Path, count: int, overlap: int) -> AnnotationQueue:
    """A database holding ``count`` records, and its queue."""
    candidates = read_candidates(write_stage(folder / "sample.jsonl", stage_records(synthetic_dir, count)), synthetic_dir / "image")
    database = create_database(folder / "annotations.sqlite")
    add_items(database, candidates.items, candidates.images, {"image_folder": str(synthetic_dir / "image")})
    return AnnotationQueue(database, overlap)


def choice_for(label: str, shown: tuple[str, str], item) -> str:
    """The choice an annotator makes on the page for a label about the record's texts A, B."""
    if label in ("tie", "both_bad", "skip"):
        return label
    better = item.first_text if label == "A" else item.second_text
    return "first" if shown[0] == better else "second"


# ---------------------------------------------------------------- the candidates file

def test_candidates_files_become_items(synthetic_dir, tmp_path):
    image = "pref_test_000000.png"
    base = {"question": "Q\nContext:\nA post", "context": "A post", "image": {"path": image}}
    records = [
        {"key": "four", "id": 4, **base, "candidates": ["A red dot.", "a  RED dot.", "A <image> dot.", "A blue dot.", "Green."]},
        {"key": "same", "id": 5, **base, "candidates": ["One text.", "one text. "]},
        {"key": "stored", "id": 6, **base, "image": {"stored": "images/kept.png"}, "candidates": ["A cat.", "A dog."]},
    ]
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "kept.png").write_bytes((synthetic_dir / "image" / image).read_bytes())
    found = read_candidates(write_stage(tmp_path / "sample.jsonl", records), synthetic_dir / "image", seed=0)
    assert found.kind == "build" and found.complete and [item.record_id for item in found.items] == ["four", "stored"]
    assert found.skipped == {"fewer_than_two_distinct_alt_texts": ["same"]}
    four = found.items[0]
    # Two distinct usable candidates (a repeat in other case and spacing, and the placeholder, never).
    assert (four.first_candidate, four.second_candidate) in {(0, 3), (0, 4), (3, 4)}
    assert (four.first_text, four.second_text) == (records[0]["candidates"][four.first_candidate], records[0]["candidates"][four.second_candidate])
    assert (four.record_idx, four.question, four.context, four.image_path) == (4, base["question"], "A post", image)
    stored = found.items[1]
    assert stored.image_path is None and found.images[stored.image_sha256] == (tmp_path / "images" / "kept.png").read_bytes()
    # The draw depends on the seed and the record's key only.
    assert pick_two("four", records[0]["candidates"], 0) == (four.first_candidate, four.second_candidate)
    draws = {pick_two(f"key{n}", ["a", "b", "c", "d"], seed) for n in range(20) for seed in (0, 1)}
    assert len(draws) > 1

    preference = read_candidates(synthetic_dir / "pref_test.json", synthetic_dir / "image")
    first = json.loads(json.loads((synthetic_dir / "pref_test.json").read_text())[0]["text"])
    item = preference.items[0]
    assert preference.kind == "preference" and item.record_id == "0" and item.record_idx == 0
    assert (item.first_text, item.second_text, item.question) == (first["chosen"], first["rejected"], first["question"])
    assert item.context == context_of(first["question"]) and item.first_candidate is None


def test_bad_input_is_named_before_the_server_starts(synthetic_dir, tmp_path, capsys):
    folder = synthetic_dir / "image"
    good = stage_records(synthetic_dir, 3)
    without_image = [good[0], {key: value for key, value in good[1].items() if key != "image"}]
    missing_image = [{**good[0], "image": {"path": "nowhere.png"}}]
    outside = [{**good[0], "image": {"path": "../pref_test.json"}}]
    twice = [good[0], good[0]]

    def refused(extra: list[str], candidates: Path | None = None, db: Path | None = None) -> str:
        candidates = candidates or write_stage(tmp_path / "good.jsonl", good)
        arguments = ["--candidates", str(candidates), "--image_folder", str(folder), "--db", str(db or tmp_path / "a.sqlite"), *extra]
        assert annotate_main(arguments) == 2
        return capsys.readouterr().err

    assert f"--candidates {tmp_path / 'missing.jsonl'}: file not found" in refused([], tmp_path / "missing.jsonl")
    assert "line 3 (key='rec1'), field 'image': missing (a record without an image)" in refused([], write_stage(tmp_path / "a.jsonl", without_image))
    assert "line 2 (key='rec0'), field 'image.path': image not found" in refused([], write_stage(tmp_path / "b.jsonl", missing_image))
    assert "field 'image.path': image path ../pref_test.json leaves --image_folder" in refused([], write_stage(tmp_path / "c.jsonl", outside))
    assert "line 3 (key='rec0'), field 'key': also the key of line 2" in refused([], write_stage(tmp_path / "d.jsonl", twice))
    assert "--overlap 0: each record needs at least 1 annotator" in refused(["--overlap", "0"])
    assert "--auth: give USER:PASS" in refused(["--auth", "nopassword"])
    assert "--auth: give USER:PASS" in refused(["--auth", ":only-a-password"])
    assert "--auth_file" in refused(["--auth_file", str(tmp_path / "no-such-file")])
    assert "--host 0.0.0.0 serves other machines: it needs --auth USER:PASS or --auth_file FILE" in refused(["--host", "0.0.0.0"])
    assert "--db" in refused([], db=tmp_path / "no-folder" / "a.sqlite")
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE notes (x)")
    assert "not an annotation database this code writes" in refused([], db=other)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"idx": 1, "image_path": "pref_test_000000.png", "text": json.dumps({"question": "Q"})}]))
    assert "field 'text.chosen'" in refused([], broken)
    collected = tmp_path / "collect.jsonl"
    write_complete(collected, "collect", {}, good)
    assert "the builder's collect stage file, whose records have no candidates" in refused([], collected)
    with pytest.raises(CandidatesError, match="not a folder"):
        read_candidates(tmp_path / "good.jsonl", tmp_path / "no-images")


# ---------------------------------------------------------------- the queue

def work_through(queue: AnnotationQueue, annotator: str, seen: list[str], choose=lambda n: "tie") -> None:
    """Answer every record the annotator is shown until their queue is empty."""
    progress = queue.current(annotator)
    while progress.record is not None:
        seen.append(progress.record.record_id)
        progress = queue.answer(annotator, progress.record.record_id, choose(len(seen)))


@pytest.mark.parametrize("overlap, annotators", [(1, 3), (2, 4)])
def test_annotators_at_once_share_records_up_to_the_overlap(synthetic_dir, tmp_path, overlap, annotators):
    queue = loaded_queue(synthetic_dir, tmp_path, 12, overlap)
    seen: dict[str, list[str]] = {f"ann{n}": [] for n in range(annotators)}
    threads = [threading.Thread(target=work_through, args=(queue, name, shown)) for name, shown in seen.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    answers = read_answers(queue.database)
    for name, shown in seen.items():
        assert len(shown) == len(set(shown)), f"{name} was shown a record twice: {shown}"
        assert sorted(a.record_id for a in answers if a.annotator == name) == sorted(shown)
    by_record = {record: [a.annotator for a in answers if a.record_id == record] for record in {a.record_id for a in answers}}
    assert sorted(by_record) == sorted(f"rec{n}" for n in range(12))
    assert all(len(names) == overlap == len(set(names)) for names in by_record.values()), by_record
    assert all(queue.current(name).left == 0 for name in seen)


def test_undo_skip_corrections_and_names(synthetic_dir, tmp_path):
    queue = loaded_queue(synthetic_dir, tmp_path, 4, overlap=1)
    first = queue.current("ann")
    assert (first.answered, first.left, first.record.record_id, first.record.again) == (0, 4, "rec0", False)
    after = queue.answer("ann", "rec0", "first")
    assert (after.answered, after.left, after.record.record_id, after.message) == (1, 3, "rec1", "Saved: 1 is better.")
    undone = queue.undo("ann")
    assert (undone.answered, undone.left, undone.record.record_id, undone.record.again) == (0, 4, "rec0", True)
    assert undone.record.texts == first.record.texts  # the same sides again
    item = queue.item("rec0")
    corrected = "A clay green square on the right."
    shown = queue.answer("ann", "rec0", "second", f"  {corrected} ")
    assert shown.record.record_id == "rec1" and shown.message == "Saved: 2 is better with your correction."
    kept = read_answers(queue.database, include_undone=True)
    assert [(a.choice, a.undone, a.corrected_text) for a in kept] == [("first", True, None), ("second", False, corrected)]
    assert [a.answer_id for a in read_answers(queue.database)] == [kept[1].answer_id]  # undone answers count nowhere
    assert (kept[1].first_text, kept[1].second_text) == first.record.texts
    assert label_of(kept[1], item) == ("B" if first.record.texts[1] == item.second_text else "A")

    with pytest.raises(AnswerError, match="Record rec0 is not waiting for an answer from ann"):
        queue.answer("ann", "rec0", "first")
    with pytest.raises(AnswerError, match="Record rec2 is not waiting"):
        queue.answer("ann", "rec2", "first")
    with pytest.raises(AnswerError, match="A correction goes with the text you choose as better"):
        queue.answer("ann", "rec1", "tie", "Some text.")
    with pytest.raises(AnswerError, match="The corrected alt-text is empty"):
        queue.answer("ann", "rec1", "first", "   ")
    unchanged = queue.answer("ann", "rec1", "first", shown.record.texts[0])
    assert read_answers(queue.database)[-1].corrected_text is None and unchanged.message == "Saved: 1 is better."

    # A skip frees the record for someone else; the one who skipped never gets it again.
    assert queue.answer("ann", "rec2", "skip").record.record_id == "rec3"
    assert queue.current("bob").record.record_id == "rec2"
    assert queue.answer("bob", "rec2", "both_bad").record is None  # rec3 is ann's: overlap 1
    assert queue.undo("nobody").message == "Nothing to undo."

    for bad, message in (("", "Give your name"), ("   ", "Give your name"), ("a\nb", "without control characters"),
                         ("x" * 65, "at most 64 characters"), (None, "an annotator's name is text")):
        with pytest.raises(AnswerError, match=message):
            queue.current(bad)
    # A name is text: stored as given, never a path or SQL.
    wider = AnnotationQueue(queue.database, overlap=5)
    for name in ("Robert'); DROP TABLE answers;--", "../../etc/passwd", "Zoë 🦉"):
        progress = wider.answer(name, wider.current(name).record.record_id, "tie")
        assert progress.annotator == name and progress.answered == 1
    assert {a.annotator for a in read_answers(queue.database)} >= {"Robert'); DROP TABLE answers;--", "../../etc/passwd", "Zoë 🦉"}
    assert len(read_items(queue.database)) == 4


def test_the_human_ranker_reads_the_page_answers(synthetic_dir, tmp_path):
    from mcmdpo.build.annotations import by_record
    from mcmdpo.build.rankers import human_scores

    records = stage_records(synthetic_dir, 1)
    records[0]["candidates"].append("A third candidate, never shown.")
    candidates = read_candidates(write_stage(tmp_path / "sample.jsonl", records), synthetic_dir / "image")
    database = create_database(tmp_path / "a.sqlite")
    add_items(database, candidates.items, {}, {})
    queue = AnnotationQueue(database)
    item = queue.item("rec0")
    shown = queue.current("ann").record.texts
    queue.answer("ann", "rec0", choice_for("A", shown, item))
    assert queue.current("bob").record is None  # overlap 1: the one record is ann's
    scored = human_scores(records[0], by_record(read_answers(database))["rec0"])
    expected = [None, None, None]
    expected[item.first_candidate], expected[item.second_candidate] = 1.0, 0.0
    assert scored["scores"] == expected and scored["details"]["answers"] == 1

    # A version-1 database (the answers table alone) is read, and upgraded in place keeping its answers.
    old = tmp_path / "v1.sqlite"
    with sqlite3.connect(old) as connection:
        connection.execute("CREATE TABLE answers (answer_id INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT NOT NULL, "
                           "first_text TEXT NOT NULL, second_text TEXT NOT NULL, first_candidate INTEGER, second_candidate INTEGER, "
                           "annotator TEXT NOT NULL, choice TEXT NOT NULL, corrected_text TEXT, created_at TEXT)")
        connection.execute("INSERT INTO answers (record_id, first_text, second_text, annotator, choice) VALUES ('k', 'a', 'b', 'x', 'first')")
        connection.execute("PRAGMA user_version = 1")
    assert [(a.record_id, a.choice, a.undone) for a in read_answers(old)] == [("k", "first", False)]
    create_database(old)
    with sqlite3.connect(old) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [(a.record_id, a.choice, a.undone) for a in read_answers(old)] == [("k", "first", False)]


# ---------------------------------------------------------------- agreement and export

def test_agreement_is_the_libraries_value():
    import krippendorff
    import numpy as np
    from sklearn.metrics import cohen_kappa_score

    ann = ["A", "B", "A", "tie", "both_bad", "A", "B", "B"]
    bea = ["A", "B", "B", "tie", "both_bad", "A", "A", "B"]
    labels = {f"r{n}": {"ann": a, "bea": b} for n, (a, b) in enumerate(zip(ann, bea))}
    labels["r8"] = {"ann": "A"}  # one label: in no agreement
    report = agreement_report(labels)
    overall = report["overall"]
    assert overall["measure"] == "cohen_kappa" and overall["records_with_two_or_more_labels"] == 8
    assert overall["value"] == pytest.approx(cohen_kappa_score(ann, bea), abs=1e-12) and 0 < overall["value"] < 1
    assert overall["observed_agreement"] == 6 / 8
    assert report["annotators"]["ann"]["kappa_with"]["bea"] == {"cohen_kappa": overall["value"], "shared_records": 8}
    assert report["annotators"]["ann"]["labels"] == 9 and report["annotators"]["bea"]["agreement_with_others_majority"] == 6 / 8

    cid = ["A", "B", "A", "tie", "A", "A", "B", "tie"]
    three = {f"r{n}": {"ann": a, "bea": b, "cid": c} for n, (a, b, c) in enumerate(zip(ann, bea, cid))}
    del three["r2"]["cid"]
    report = agreement_report(three)
    codes = {label: code for code, label in enumerate(["A", "B", "tie", "both_bad"])}
    matrix = np.array([[codes[three[r][name]] if name in three[r] else np.nan for r in sorted(three)] for name in ("ann", "bea", "cid")])
    assert report["overall"]["measure"] == "krippendorff_alpha"
    assert report["overall"]["value"] == pytest.approx(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"), abs=1e-12)
    mine, theirs = zip(*[(three[r]["cid"], three[r]["ann"]) for r in sorted(three) if "cid" in three[r]])
    assert report["annotators"]["cid"]["kappa_with"]["ann"]["cohen_kappa"] == pytest.approx(cohen_kappa_score(mine, theirs), abs=1e-12)

    same = agreement_report({"r0": {"ann": "A", "bea": "A"}, "r1": {"ann": "A", "bea": "A"}})["overall"]
    assert same["value"] is None and same["note"].startswith("undefined") and same["observed_agreement"] == 1.0
    assert agreement_report({"r0": {"ann": "A"}})["overall"]["measure"] is None


# What three annotators answer about records rec0..rec5 (rec6 stays unanswered), as labels about
# each record's texts A and B; (label, correction) where one corrects the text they chose.
THREE_ANNOTATORS = {
    "rec0": ["A", "A", "B"],
    "rec1": ["B", ("B", "A clay orange square on the right, next to a yellow circle."), "B"],
    "rec2": ["tie", "tie", "A"],
    "rec3": ["both_bad", "A", "both_bad"],
    "rec4": ["A", "B", "tie"],
    "rec5": ["skip", "skip", "skip"],
}


def answer_three(synthetic_dir: Path, folder: Path) -> AnnotationQueue:
    queue = loaded_queue(synthetic_dir, folder, 7, overlap=3)
    for number, name in enumerate(("ann", "bea", "cid")):
        if name == "ann":  # an answer undone, then replaced: only the second counts
            shown = queue.current(name).record
            queue.answer(name, "rec0", choice_for("B", shown.texts, queue.item("rec0")))
            queue.undo(name)
        for record, answers in THREE_ANNOTATORS.items():
            progress = queue.current(name)
            assert progress.record.record_id == record
            label, correction = answers[number] if isinstance(answers[number], tuple) else (answers[number], None)
            queue.answer(name, record, choice_for(label, progress.record.texts, queue.item(record)), correction)
    return queue


@pytest.fixture(scope="module")
def exported(synthetic_dir, tmp_path_factory):
    """(queue, pairs file, report) of the three annotators' answers."""
    folder = tmp_path_factory.mktemp("three")
    queue = answer_three(synthetic_dir, folder)
    report = export(ExportOptions(db=str(queue.database), output=str(folder / "pairs.json")))
    return queue, folder / "pairs.json", report


def test_export_pairs_by_majority_with_corrections(exported, synthetic_dir, tmp_path, capsys):
    queue, pairs_file, report = exported
    assert report == json.loads((pairs_file.parent / REPORT_FILE).read_text())
    assert [path.name for path in pairs_file.parent.iterdir() if path.name.startswith(".")] == []  # no temporary file left
    assert {reason: group["count"] for reason, group in report["left_out"].items()} == {
        "unanswered": 1, "only_skipped": 1, "tie": 1, "both_bad": 1, "no_majority": 1, "below_min_agreement": 0}
    assert report["left_out"]["tie"]["records"] == ["rec2"] and report["left_out"]["unanswered"]["records"] == ["rec6"]
    assert (report["records"], report["answers"], report["undone_answers"], report["skips"]) == (7, 18, 1, 3)
    assert (report["pairs"], report["pairs_with_correction"]) == (2, 1)

    pairs = json.loads(pairs_file.read_text())
    items = {item.record_id: item for item in read_items(queue.database)}
    texts = [json.loads(pair["text"]) for pair in pairs]
    assert [pair["idx"] for pair in pairs] == [0, 1] and [pair["image_path"] for pair in pairs] == [items["rec0"].image_path, items["rec1"].image_path]
    assert texts[0] == {"question": items["rec0"].question, "chosen": items["rec0"].first_text, "rejected": items["rec0"].second_text}
    correction = THREE_ANNOTATORS["rec1"][1][1]
    assert texts[1] == {"question": items["rec1"].question, "chosen": correction, "rejected": items["rec1"].first_text}
    assert pairs[1]["provenance"]["chosen"] == {"candidate": 1, "corrected_from": items["rec1"].second_text}
    assert pairs[0]["provenance"]["votes"] == {"A": 2, "B": 1} and pairs[0]["provenance"]["agreement"] == pytest.approx(2 / 3)
    assert report["agreement"]["overall"]["measure"] == "krippendorff_alpha"

    assert validate_main([str(pairs_file), "--image_folder", str(synthetic_dir / "image"), "--quiet"]) == 0
    assert "2 valid preference record(s), OK" in capsys.readouterr().out

    strict = tmp_path / "strict.json"
    assert export_main(["--db", str(queue.database), "--output", str(strict), "--min_agreement", "0.9"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 pairs of 7 records (1 with a correction) from 18 answers; left out: unanswered 1, only_skipped 1, tie 1, "
                          "both_bad 1, no_majority 1, below_min_agreement 1; krippendorff_alpha")
    assert json.loads((tmp_path / REPORT_FILE).read_text())["left_out"]["below_min_agreement"]["records"] == ["rec0"]
    assert export_main(["--db", str(queue.database), "--output", str(strict), "--min_agreement", "2"]) == 2
    assert "--min_agreement 2.0: a share, 0 to 1" in capsys.readouterr().err
    assert export_main(["--db", str(tmp_path / "none.sqlite"), "--output", str(strict)]) == 2
    assert "none.sqlite: file not found" in capsys.readouterr().err


@pytest.mark.slow
def test_exported_pairs_train_two_mcmdpo_steps(exported, tiny_checkpoint, synthetic_dir, tmp_path):
    _, pairs_file, _ = exported
    steps = train_two_mcmdpo_steps(tiny_checkpoint, pairs_file, synthetic_dir / "image", tmp_path)
    assert [entry["step"] for entry in steps] == [1, 2] and all(entry["loss"] > 0 for entry in steps)
    assert "margins/image" in steps[0] and "margins/context" in steps[0]


# ---------------------------------------------------------------- the server's refusals

def request(port: int, method: str, path: str, credentials: tuple[str, str] | None = None, body: bytes | None = None,
            content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
    """One raw request (the path sent exactly as given, '..' included)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": content_type} if body is not None else {}
    if credentials:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    found = response.status, dict(response.getheaders()), response.read()
    connection.close()
    return found


def test_the_server_asks_for_credentials_and_serves_nothing_outside(synthetic_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "one.png").write_bytes((synthetic_dir / "image" / "pref_test_000000.png").read_bytes())
    (tmp_path / "secret.txt").write_text("the password list")
    records = [{**stage_records(synthetic_dir, 1)[0], "image": {"path": "one.png"}}]
    candidates = read_candidates(write_stage(tmp_path / "sample.jsonl", records), images)
    database = create_database(tmp_path / "a.sqlite")
    add_items(database, candidates.items, {}, {})
    credentials = ("lead", "s3cret:with-colon")
    server = AnnotationServer(("127.0.0.1", 0), AnnotationQueue(database), ServerSettings(images, credentials))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        status, headers, _ = request(port, "GET", "/")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic realm=")
        assert request(port, "GET", "/", ("lead", "wrong"))[0] == 401
        assert request(port, "GET", "/image?record=rec0")[0] == 401
        status, headers, page = request(port, "GET", "/", credentials)
        assert status == 200 and b"Which alt-text is better?" in page and "default-src 'none'" in headers["Content-Security-Policy"]
        status, headers, image = request(port, "GET", "/image?record=rec0", credentials)
        assert (status, headers["Content-Type"], image) == (200, "image/png", (images / "one.png").read_bytes())
        for path in ("/../secret.txt", "/image/../../secret.txt", "/%2e%2e/secret.txt", "/image/..%2F..%2Fsecret.txt",
                     "/image?record=../secret.txt", "/secret.txt", "/images/one.png"):
            status, _, body = request(port, "GET", path, credentials)
            assert status in (403, 404) and b"password list" not in body, (path, status, body)
        assert request(port, "GET", "/../secret.txt", credentials)[0] == 403
        assert request(port, "POST", "/api/next", credentials, b'{"annotator": "ann"}', "text/plain")[0] == 415
        status, _, body = request(port, "POST", "/api/next", credentials, b'{"annotator": "ann"}')
        assert status == 200 and json.loads(body)["record"]["record_id"] == "rec0"
        status, _, body = request(port, "POST", "/api/next", credentials, b'{"annotator": ""}')
        assert status == 400 and "Give your name" in json.loads(body)["error"]
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- the page in a real browser

def chromium_or_skip() -> str:
    from test_app import chromium_or_skip as find

    return find()


def page_state(page) -> dict:
    return page.evaluate("""() => ({
        record: document.body.dataset.record, answered: Number(document.body.dataset.answered),
        left: Number(document.getElementById('left').textContent),
        texts: [document.getElementById('text-1').textContent, document.getElementById('text-2').textContent],
        done: !document.getElementById('done').hidden, message: document.getElementById('message').textContent})""")


def wait_until_shown(page, timeout_s: float = 60) -> dict:
    """The page's state once it waits for the annotator again."""
    page.wait_for_function("() => document.body.dataset.busy === 'false' && document.body.dataset.answered !== undefined",
                           timeout=timeout_s * 1000)
    return page_state(page)


def press(page, *keys: str) -> dict:
    """Press keys as the annotator does; the state once the page has the server's answer."""
    before = page_state(page)
    for key in keys:
        page.keyboard.press(key)
    page.wait_for_function("([record, answered]) => document.body.dataset.busy === 'false' && "
                           "(document.body.dataset.record !== record || Number(document.body.dataset.answered) !== answered)",
                           arg=[before["record"], before["answered"]], timeout=60_000)
    return page_state(page)


def annotate_arguments(sample: Path, image_folder: Path, database: Path, port: int, *extra: str) -> list[str]:
    return ["annotate", "--candidates", str(sample), "--image_folder", str(image_folder), "--db", str(database),
            "--port", str(port), *extra]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_annotator_labels_with_the_keyboard_and_a_sigkill_loses_nothing(synthetic_dir, tmp_path):
    from mcmdpo.app import browser

    chromium = chromium_or_skip()
    sample = write_stage(tmp_path / "sample.jsonl", stage_records(synthetic_dir, 10))
    database, port = tmp_path / "annotations.sqlite", browser.free_port()
    arguments = annotate_arguments(sample, synthetic_dir / "image", database, port)
    items = {item.record_id: item for item in read_candidates(sample, synthetic_dir / "image").items}
    corrected = "A clay green square on the right, beside a small yellow circle."
    with browser.headless_chromium(chromium) as chrome:
        page = chrome.new_page(viewport={"width": 1200, "height": 760})
        with browser.serve_app(arguments, port) as server:
            blocked = browser.block_other_addresses(page, server.url)
            page.goto(server.url)
            page.fill("#name-input", "ann")  # the annotator names themself at the start
            page.press("#name-input", "Enter")
            state = wait_until_shown(page)
            assert (state["record"], state["answered"], state["left"]) == ("rec0", 0, 10) and "annotator=ann" in page.url
            page.wait_for_function("() => document.getElementById('image').naturalWidth > 0")  # the record's image, served
            assert press(page, "1")["record"] == "rec1"
            assert press(page, "2")["record"] == "rec2"
            assert press(page, "t")["record"] == "rec3"
            state = press(page, "u")  # undo: rec2 again, the count back to 2
            assert (state["record"], state["answered"]) == ("rec2", 2) and "Undone" in state["message"]
            assert press(page, "b")["record"] == "rec3"
            edited_side_text = page_state(page)["texts"][0]
            page.keyboard.press("e")
            page.keyboard.press("1")  # edit the first: it is the better one
            assert page.input_value("#edit-text") == edited_side_text
            page.keyboard.press("Control+A")
            page.keyboard.type(corrected)
            state = press(page, "Control+Enter")
            assert (state["record"], state["answered"]) == ("rec4", 4) and "with your correction" in state["message"]
            page.wait_for_function("() => document.getElementById('image').naturalWidth > 0")
            SCREENSHOT.write_bytes(page.screenshot())  # the docs' picture: record 5 of 10, four answered
            assert press(page, "2")["record"] == "rec5"
            state = press(page, "s")
            assert (state["record"], state["answered"], state["left"]) == ("rec6", 6, 4)
            assert blocked == [], blocked
            server.process.kill()  # SIGKILL: no chance to save anything more
            assert server.process.wait(30) == -9

        with browser.serve_app(arguments, port):
            page.reload()
            state = wait_until_shown(page)
            assert (state["record"], state["answered"], state["left"]) == ("rec6", 6, 4)

    kept = read_answers(database, include_undone=True)
    assert [(a.record_id, a.choice, a.undone) for a in kept] == [
        ("rec0", "first", False), ("rec1", "second", False), ("rec2", "tie", True), ("rec2", "both_bad", False),
        ("rec3", "first", False), ("rec4", "second", False), ("rec5", "skip", False)]
    assert kept[4].corrected_text == corrected and kept[4].first_text == edited_side_text
    assert {kept[4].first_text, kept[4].second_text} == {items["rec3"].first_text, items["rec3"].second_text}
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Two annotators' labels of records rec0..rec8 (about each record's texts A and B), and the one
# correction: bea's, of the text both chose on rec1.
TWO_ANNOTATORS = {
    "ann": ["A", "B", "A", "tie", "both_bad", "A", "B", "B", "skip"],
    "bea": ["A", "B", "B", "tie", "both_bad", "A", "A", "B", "A"],
}
BEA_CORRECTS = ("rec1", "A clay orange square, right, beside a yellow circle.")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_annotators_with_overlap_two(synthetic_dir, tmp_path):
    from sklearn.metrics import cohen_kappa_score

    from mcmdpo.app import browser

    chromium = chromium_or_skip()
    sample = write_stage(tmp_path / "sample.jsonl", stage_records(synthetic_dir, 9))
    database, port = tmp_path / "annotations.sqlite", browser.free_port()
    credentials = ("lead", "pass word")
    items = {item.record_id: item for item in read_candidates(sample, synthetic_dir / "image").items}

    refused = subprocess.run([sys.executable, "-m", "mcmdpo.app", *annotate_arguments(sample, synthetic_dir / "image", database, port,
                                                                                       "--host", "0.0.0.0")],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "needs --auth USER:PASS" in refused.stderr and not database.exists()

    arguments = annotate_arguments(sample, synthetic_dir / "image", database, port, "--overlap", "2", "--auth", ":".join(credentials))
    seen: dict[str, list[str]] = {name: [] for name in TWO_ANNOTATORS}
    labels: dict[str, dict[str, str]] = {name: {} for name in TWO_ANNOTATORS}
    with browser.serve_app(arguments, port) as server, browser.headless_chromium(chromium) as chrome:
        assert request(port, "GET", "/")[0] == 401  # no credentials, no page
        assert request(port, "GET", "/image/../../annotations.sqlite", credentials)[0] == 403
        pages, blocked = {}, []
        for name in TWO_ANNOTATORS:
            context = chrome.new_context(http_credentials={"username": credentials[0], "password": credentials[1]})
            pages[name] = context.new_page()
            blocked.append(browser.block_other_addresses(pages[name], server.url))
            pages[name].goto(f"{server.url}?annotator={name}")
            wait_until_shown(pages[name])
        # Turn about, each answering the record their own page shows.
        for _ in range(len(items)):
            for name, page in pages.items():
                state = page_state(page)
                if state["done"]:
                    continue
                record = state["record"]
                seen[name].append(record)
                label = TWO_ANNOTATORS[name][int(record.removeprefix("rec"))]
                choice = choice_for(label, tuple(state["texts"]), items[record])
                if (name, record) == ("bea", BEA_CORRECTS[0]):
                    page.keyboard.press("e")
                    page.keyboard.press("1" if choice == "first" else "2")
                    page.fill("#edit-text", BEA_CORRECTS[1])
                    press(page, "Control+Enter")
                else:
                    press(page, {"first": "1", "second": "2", "tie": "t", "both_bad": "b", "skip": "s"}[choice])
                if label != "skip":
                    labels[name][record] = label
        assert all(page_state(page)["done"] for page in pages.values())
        assert blocked == [[], []]  # the pages asked nothing of any other address
    for name, shown in seen.items():
        assert len(shown) == len(set(shown)) == len(items), (name, shown)  # every record once, none twice

    output = tmp_path / "export" / "pairs.json"
    output.parent.mkdir()
    result = subprocess.run([sys.executable, "-m", "mcmdpo.app", "export", "--db", str(database), "--output", str(output)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((output.parent / REPORT_FILE).read_text())
    both = sorted(set(labels["ann"]) & set(labels["bea"]))
    expected = cohen_kappa_score([labels["ann"][r] for r in both], [labels["bea"][r] for r in both])
    assert report["agreement"]["overall"]["measure"] == "cohen_kappa" and len(both) == 8
    assert report["agreement"]["overall"]["value"] == pytest.approx(expected, abs=1e-12)
    assert {reason: group["records"] for reason, group in report["left_out"].items() if group["count"]} == {
        "tie": ["rec3"], "both_bad": ["rec4"], "no_majority": ["rec2", "rec6"]}
    pairs = json.loads(output.read_text())
    assert [pair["provenance"]["record"] for pair in pairs] == ["rec0", "rec1", "rec5", "rec7", "rec8"]
    assert json.loads(pairs[1]["text"])["chosen"] == BEA_CORRECTS[1] and report["pairs_with_correction"] == 1
