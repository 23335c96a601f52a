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
