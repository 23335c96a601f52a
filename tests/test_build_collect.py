"""The builder's collect stage: every input format read into the same records, exactly the planted
bad records dropped (each with its reason, its id in the report), broken input stopped before any
work with its file, record and field named, a cut stage file resumed without rewriting a finished
line, and a changed input redoing the stage and making the later files stale."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from build_support import quick_options, read_stage_lines, sft_records, write_json
from mcmdpo.build import BuildError, build, read_report, run_collect, run_correct
from mcmdpo.build.cli import main as build_main
from mcmdpo.build.sample import run_sample
from mcmdpo.data.records import DataValidationError
from mcmdpo.data.synthetic import INSTRUCTION

POST = "Look at the knitted shape on the left of this picture."
LONG = " ".join(["A knitted blue circle on the left"] * 6)  # 42 words


def conversation(record_id, image, question, alt_text):
    record = {"id": record_id, "conversations": [{"from": "human", "value": "<image>\n" + question},
                                                 {"from": "gpt", "value": alt_text}]}
    return record | ({"image": image} if image is not None else {})


@pytest.fixture(scope="module")
def planted(synthetic_dir, tmp_path_factory):
    """An SFT file of good records and planted bad ones: {record id: reason} of the bad ones."""
    root = tmp_path_factory.mktemp("planted")
    images = root / "image"
    images.mkdir()
    good = sft_records(synthetic_dir, 6)
    for record in good:
        shutil.copy(synthetic_dir / "image" / record["image"], images / record["image"])
    (images / "corrupt.png").write_bytes(b"not an image at all")
    whole = (images / good[1]["image"]).read_bytes()
    (images / "truncated.png").write_bytes(whole[: len(whole) // 2])
    first = good[0]
    question, alt = first["conversations"][0]["value"].removeprefix("<image>\n"), first["conversations"][1]["value"]
    post_question = INSTRUCTION + POST
    bad = {
        "missing_file": (conversation("missing_file", "nope.png", question, "A red square on the left."), "missing_image"),
        "no_image": (conversation("no_image", None, question, "A red square on the left."), "missing_image"),
        "corrupt": (conversation("corrupt", "corrupt.png", question, "A red square on the left."), "unreadable_image"),
        "truncated": (conversation("truncated", "truncated.png", question, "A red square on the left."), "unreadable_image"),
        "empty": (conversation("empty", first["image"], question, ""), "empty_alt_text"),
        "blank": (conversation("blank", first["image"], question, "  \n "), "empty_alt_text"),
        "null": (conversation("null", first["image"], question, None), "empty_alt_text"),
        "file_name": (conversation("file_name", first["image"], question, "IMG_2034.JPG"), "placeholder_alt_text"),
        "own_name": (conversation("own_name", first["image"], question, "sft_000000"), "placeholder_alt_text"),
        "word": (conversation("word", first["image"], question, "Image."), "placeholder_alt_text"),
        "alt_text": (conversation("alt_text", first["image"], question, "alt text"), "placeholder_alt_text"),
        "echo": (conversation("echo", good[2]["image"], post_question, " " + POST), "placeholder_alt_text"),
        "short": (conversation("short", first["image"], question, "Dog."), "too_short"),
        "long": (conversation("long", first["image"], question, LONG), "too_long"),
        "dup": (conversation("dup", first["image"], question, alt + " "), "duplicate"),
    }
    kept_variants = [
        conversation("same_image_other_text", first["image"], question, "A wooden orange triangle, seen from above."),
        conversation("same_text_other_image", good[1]["image"], question, alt),
        conversation("two_words", good[3]["image"], post_question, "Blue circle."),
        conversation("photo_word", good[4]["image"], post_question, "A photo of a blue circle on the left."),
    ]
    records = [*good[:3], *(record for record, _ in bad.values()), *good[3:], *kept_variants]
    data = write_json(root / "sft.json", records)
    return data, images, {record_id: reason for record_id, (_, reason) in bad.items()}, [r["id"] for r in records if r["id"] not in bad]


def test_collect_drops_exactly_the_planted_records_with_their_reasons(planted, tmp_path):
    data, images, bad, kept_ids = planted
    section = run_collect(quick_options(data, images, tmp_path, min_words=2, max_words=30))
    dropped = {record["id"]: reason for reason, group in section["dropped"].items() for record in group["records"]}
    assert dropped == bad
    assert section["kept"] == len(kept_ids) and section["dropped_count"] == len(bad)
    assert {reason: group["count"] for reason, group in section["dropped"].items()} == {
        "empty_alt_text": 3, "placeholder_alt_text": 5, "too_short": 1, "too_long": 1, "missing_image": 2,
        "unreadable_image": 2, "duplicate": 1}
    details = {record["id"]: record.get("detail") for group in section["dropped"].values() for record in group["records"]}
    assert details["dup"] == "same image and alt-text as record sft_0"
    assert details["echo"] == "the post repeated verbatim" and details["own_name"] == "the image's file name"
    assert details["no_image"] == "no image given" and "image file not found" in details["missing_file"]
    assert read_report(tmp_path)["collect"] == section

    lines = read_stage_lines(tmp_path / "collect.jsonl")
    kept = [line for line in lines if "dropped" not in line]
    assert [line["id"] for line in kept] == kept_ids
    first = kept[0]
    assert first["question"] == sft_records_question(data, 0) and "<image>" not in first["question"]
    assert first["context"] == first["question"].split("Context:\n", 1)[1]
    assert first["image"] == {"path": "sft_000000.png"} and len(first["image_sha256"]) == 64
    assert [line["id"] for line in lines] == [record["id"] for record in json.loads(data.read_text())]


def sft_records_question(data: Path, position: int) -> str:
    return json.loads(data.read_text())[position]["conversations"][0]["value"].removeprefix("<image>\n")


def test_every_format_gives_the_same_records(synthetic_dir, tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = sft_records(synthetic_dir, 3)
    posts = [r["conversations"][0]["value"].split("Context:\n", 1)[1] for r in good]
    alts = [r["conversations"][1]["value"] for r in good]
    paths = [r["image"] for r in good]
    image_bytes = [(synthetic_dir / "image" / path).read_bytes() for path in paths]
    rows = [{"uid": f"u{i}", "picture": path, "post": post, "alt": alt} for i, (path, post, alt) in enumerate(zip(paths, posts, alts))]
    rows.append({"uid": "u3", "picture": paths[0], "post": posts[0], "alt": None})  # an empty cell: dropped, not an error
    columns = "image=picture,context=post,alt_text=alt,id=uid"

    csv_file = tmp_path / "table.csv"
    with csv_file.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["uid", "picture", "post", "alt"])
        writer.writeheader()
        writer.writerows(rows)
    jsonl_file = tmp_path / "table.jsonl"
    jsonl_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    parquet_file = tmp_path / "table.parquet"  # images embedded as bytes
    embedded = [{**row, "picture": {"bytes": data, "path": None}} for row, data in zip(rows, [*image_bytes, image_bytes[0]])]
    pq.write_table(pa.Table.from_pylist(embedded), parquet_file)
    folder = tmp_path / "hf_dataset"
    features = datasets.Features({"uid": datasets.Value("string"), "picture": datasets.Image(), "post": datasets.Value("string"),
                                  "alt": datasets.Value("string")})
    images = [Image.open(io.BytesIO(data)) for data in [*image_bytes, image_bytes[0]]]
    datasets.Dataset.from_dict({"uid": [r["uid"] for r in rows], "picture": images, "post": [r["post"] for r in rows],
                                "alt": [r["alt"] for r in rows]}, features=features).save_to_disk(str(folder))
    sft_file = write_json(tmp_path / "sft.json", good)
    preference_file = tmp_path / "pref.json"
    write_json(preference_file, [{"idx": f"u{i}", "image_path": path, "image": {"path": path},
                                  "text": json.dumps({"question": INSTRUCTION + post, "chosen": alt, "rejected": "Something else."})}
                                 for i, (path, post, alt) in enumerate(zip(paths, posts, alts))])

    expected = [(INSTRUCTION + post, post, alt) for post, alt in zip(posts, alts)]
    for source, given_columns in ((csv_file, columns), (jsonl_file, columns), (parquet_file, columns), (folder, columns),
                                  (sft_file, None), (preference_file, None)):
        out = tmp_path / f"out_{source.name}"
        section = run_collect(quick_options(source, synthetic_dir / "image", out, columns=given_columns))
        kept = [line for line in read_stage_lines(out / "collect.jsonl") if "dropped" not in line]
        assert [(line["question"], line["context"], line["alt_text"]) for line in kept] == expected, source.name
        assert [line["image_sha256"] for line in kept] == [read_sha(out, line, synthetic_dir) for line in kept]
        if given_columns:
            assert section["dropped"] == {"empty_alt_text": {"count": 1, "records": [{"id": "u3"}]}}
            assert [line["id"] for line in kept] == ["u0", "u1", "u2"]
        if source in (parquet_file, folder):  # embedded images are stored once, by content, in the output folder
            assert all(line["image"]["stored"].startswith("images/") for line in kept)
            assert (out / kept[0]["image"]["stored"]).read_bytes() == image_bytes[0] or source == folder


def read_sha(out: Path, line: dict, synthetic_dir: Path) -> str:
    import hashlib

    path = out / line["image"]["stored"] if "stored" in line["image"] else synthetic_dir / "image" / line["image"]["path"]
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_broken_records_stop_the_build_before_any_work(synthetic_dir, tmp_path, capsys):
    good = sft_records(synthetic_dir, 2)
    broken = [
        good[0],
        {"id": "three_turns", "image": good[1]["image"], "conversations": good[1]["conversations"] * 2 + [good[1]["conversations"][0]]},
        {"id": "number", "image": good[1]["image"], "conversations": [good[1]["conversations"][0], {"from": "gpt", "value": 7}]},
        {"id": "no_question", "image": good[1]["image"], "conversations": [{"from": "human", "value": "<image>\n"},
                                                                            good[1]["conversations"][1]]},
        {"id": "sft_0", "image": good[1]["image"], "conversations": good[1]["conversations"]},  # sft_0 again, another record
    ]
    data = write_json(tmp_path / "broken.json", broken)
    out = tmp_path / "out"
    with pytest.raises(DataValidationError) as caught:
        run_collect(quick_options(data, synthetic_dir / "image", out))
    listed = [str(problem) for problem in caught.value.problems]
    assert listed == [
        f"{data}, record 1 (idx='three_turns'), field 'conversations': must be one exchange: a human turn (the question) and "
        "a gpt turn (the alt-text)",
        f"{data}, record 2 (idx='number'), field 'conversations[1].value': must be a string, found int",
        f"{data}, record 3 (idx='no_question'), field 'conversations[0].value': is empty",
        f"{data}, record 4 (idx='sft_0'), field 'id': id 'sft_0' is also the id of record 0, another record: ids must be unique",
    ]
    assert not (out / "collect.jsonl").exists()
    # The command line: exit 2, every problem listed.
    assert build_main(["--data_path", str(data), "--image_folder", str(synthetic_dir / "image"), "--output_dir", str(out),
                       "--stages", "collect", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "4 problem(s) in the input data" in err and "record 2 (idx='number')" in err
    assert build_main(["--data_path", str(data), "--output_dir", str(out), "--stages", "collect", "--columns", "image=a,alt_text=b"]) == 2
    assert "--columns must name context" in capsys.readouterr().err


def test_a_cut_collect_file_resumes_and_a_changed_input_redoes_it(planted, tmp_path):
    data, images, _, _ = planted
    options = quick_options(data, images, tmp_path, min_words=2, max_words=30)
    run_collect(options)
    path = tmp_path / "collect.jsonl"
    whole = path.read_text()
    lines = whole.splitlines(keepends=True)
    # Killed mid-write: the header and 5 records whole, the 6th cut; and a finished line marked to
    # show it is never rewritten.
    marked = json.loads(lines[2]) | {"marker": "written before the interruption"}
    path.write_text(lines[0] + lines[1] + json.dumps(marked) + "\n" + "".join(lines[3:6]) + lines[6][:25])
    section = run_collect(options)
    resumed = path.read_text().splitlines(keepends=True)
    assert len(resumed) == len(lines) and json.loads(resumed[2]) == marked
    assert resumed[:2] + resumed[3:] == lines[:2] + lines[3:]
    assert section["kept"] == read_report(tmp_path)["collect"]["kept"] and not section["up_to_date"]
    assert run_collect(options)["up_to_date"]

    # A later stage built on it, then a changed setting: collect is redone, correct is stale.
    run_correct(options)
    assert "correct" in read_report(tmp_path)
    changed = quick_options(data, images, tmp_path, min_words=1, max_words=30)
    section = run_collect(changed)
    assert not section["up_to_date"] and "short" not in json.dumps(section["dropped"])
    assert "correct" not in read_report(tmp_path)
    with pytest.raises(BuildError, match="correct.jsonl was built from another collect.jsonl than the one there now; run the correct stage again"):
        run_sample(quick_options(data, images, tmp_path, sampler=Path("unused")))
    # Changing the data's bytes also redoes it.
    edited = tmp_path / "edited.json"
    edited.write_text(data.read_text().replace("A red square on the left.", "A red square on the left side."))
    with pytest.raises(BuildError, match="is not the data"):
        build(quick_options(edited, images, tmp_path, stages=["correct"]), echo=None)
