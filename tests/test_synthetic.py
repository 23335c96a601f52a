"""The synthetic data: deterministic from its seed, valid in every format, and built so that both
the image and the context decide the right alt-text."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

from PIL import Image

from mcmdpo.data import load_examples
from mcmdpo.data.synthetic import COLORS, MATERIALS, generate_records, write_dataset


def digest(folder) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    sizes = dict(num_sft=20, num_pref_train=10, num_pref_test=5, num_test=5)
    a = write_dataset(tmp_path / "a", seed=3, **sizes)
    b = write_dataset(tmp_path / "b", seed=3, **sizes)
    c = write_dataset(tmp_path / "c", seed=4, **sizes)
    assert digest(a) == digest(b)
    assert json.loads((a / "pref_train.json").read_text()) != json.loads((c / "pref_train.json").read_text())


def test_cli_writes_all_files_and_they_validate(tmp_path):
    out = tmp_path / "data"
    args = ["--num_sft", "12", "--num_pref_train", "6", "--num_pref_test", "4", "--num_test", "5"]
    assert subprocess.run([sys.executable, "-m", "mcmdpo.data.synthetic", "--output_dir", str(out), *args]).returncode == 0
    for name, count in (("sft_train.json", 12), ("pref_train.json", 6), ("pref_test.json", 4), ("test.jsonl", 5)):
        result = subprocess.run(
            [sys.executable, "-m", "mcmdpo.data.validate", str(out / name), "--image_folder", str(out / "image"), "--quiet"],
            capture_output=True, text=True,
        )
        assert result.returncode == 0 and f"{count} valid" in result.stdout, result.stdout
    assert len(list((out / "image").glob("*.png"))) == 12 + 6 + 4 + 5


def test_context_picks_the_object_and_the_image_gives_its_colour(tmp_path):
    records = list(generate_records("check", 50, seed=0))
    for record in records:
        post = record.question.split("Context:\n", 1)[1]
        side = "left" if "left" in post else "right"
        [material] = [m for m in MATERIALS if m in post]
        position = 0 if side == "left" else 1
        color, shape = record.scene.objects[position]
        assert record.chosen.startswith(f"A {material} {color} {shape} on the {side}")
        assert record.rejected != record.chosen
    # Each side is asked about, and the pixels at the named side have the named colour.
    assert {("left" in r.chosen.split(",")[0]) for r in records} == {True, False}
    from mcmdpo.data.synthetic import draw_scene

    image = draw_scene(records[0].scene)
    left_pixel = image.getpixel((16, 32))
    assert left_pixel == COLORS[records[0].scene.objects[0][0]]


def test_committed_sample_validates():
    from conftest import REPO_ROOT

    sample = REPO_ROOT / "data" / "sample"
    for name, kind in (("sft_train.json", "sft"), ("pref_train.json", "preference"), ("pref_test.json", "preference"), ("test.jsonl", "test")):
        loaded = load_examples(sample / name, kind, sample / "image", show_progress=False)
        assert loaded.examples
    assert Image.open(next((sample / "image").glob("*.png"))).size == (64, 64)



def test_object_halbench_release_scores_the_truth_as_no_hallucination(tmp_path):
    """The demo's hallucination check: an Object HalBench release of the test images, in the
    released layout, read by the benchmark's reader; its scorer finds no hallucination and every
    object in the chosen alt-text, and a wrong colour in a rejected one."""
    from mcmdpo.data.records import RecordLocation
    from mcmdpo.eval.benchmarks import object_halbench
    from mcmdpo.eval.benchmarks.base import ScoreOptions

    out = write_dataset(tmp_path, seed=3, num_sft=4, num_pref_train=2, num_pref_test=2, num_test=12, num_objhal_images=10)
    records = list(generate_records("test", 12, 3))[:10]
    lines = [json.loads(line) for line in (out / "objhal" / "obj_halbench_300_with_image.jsonl").read_text().splitlines()]
    assert [set(line) for line in lines] == [{"image_id", "question", "image", "org_idx"}] * 10
    data = object_halbench.read(out / "objhal", None, ())
    assert not data.problems and [e.question for e in data.examples] == [r.question for r in records]
    assert data.examples[0].image.data == (out / "image" / records[0].name).read_bytes()

    def scored(responses):
        outputs = [(RecordLocation("o.jsonl", "line", i + 1), {**example.record, "response": response})
                   for i, (example, response) in enumerate(zip(data.examples, responses))]
        options = ScoreOptions(benchmark_dir=out / "objhal", coco_annotations=out / "coco")
        assert not object_halbench.check(outputs, options)
        return object_halbench.score(outputs, options).scores

    truth = scored([record.chosen for record in records])
    assert truth["CHAIRs"] == truth["CHAIRi"] == 0.0 and truth["obj_rec"] == 100.0
    (colour, shape), other = records[0].scene.objects
    wrong = next(c for c in COLORS if c not in (colour, other[0]))
    hallucinated = scored([f"A clay {wrong} {shape} beside a {other[0]} {other[1]}."] + [r.chosen for r in records[1:]])
    assert hallucinated["CHAIRs"] == 10.0 and hallucinated["CHAIRi"] == 100 / 20  # 1 of 10 alt-texts, 1 of 20 mentions
