"""Synthetic alt-text data: the project's own sample data, in the upstream formats.

    python -m mcmdpo.data.synthetic --output_dir DIR [--seed 0]

Each image shows two coloured shapes, one on the left and one on the right. The post (context)
says which of the two it is about and what it is made of, so the right alt-text needs both: the
context gives the side and the material, the image gives that object's colour and shape. Rejected
alt-text is plausible but wrong (the other object, a wrong colour, the context ignored) or generic
and verbose. SFT targets are noisy on purpose, as user-written
alt-text is (``--sft_noise``). Writes DIR/image/*.png, DIR/sft_train.json (LLaVA conversations),
DIR/pref_train.json and DIR/pref_test.json (upstream preference format) and DIR/test.jsonl
(upstream test format); optionally an Object HalBench release of the test images (DIR/objhal/,
DIR/coco/: the objects are the coloured shapes), for the demo's hallucination check. Everything
follows from the seed.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from PIL import Image, ImageDraw

from mcmdpo.files import write_text_atomically

INSTRUCTION = "Given an image and context, generate alt-text for the image.\nContext:\n"
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 30),
    "purple": (140, 60, 180),
    "orange": (245, 130, 20),
}
SHAPES = ("circle", "square", "triangle")
SIDES = ("left", "right")
MATERIALS = ("wooden", "knitted", "paper", "clay", "glass", "felt")
POST_TEMPLATES = (
    "Just finished my {material} piece, the one on the {side}!",
    "The {material} one on the {side} is my favourite, what do you think?",
    "Look at the {material} shape on the {side} of this picture.",
    "My daughter made the {side} piece from {material} at school today.",
    "Can't stop staring at the {material} thing on the {side}.",
    "Bought the {side} one at the market this morning, all {material}.",
)
FILLERS = (
    "Happy Friday everyone.",
    "Thoughts?",
    "#art #shapes",
    "Weekend project done.",
    "It took me all afternoon.",
    "Sharing this with you all.",
    "Colours came out better than expected.",
    "More photos soon.",
    "Not bad for a first try.",
    "Made with love.",
)
GENERIC_ALT_TEXTS = (
    "An image with some colourful shapes on a plain background, shared by a user in a post.",
    "A picture that shows a few objects; it was posted on social media with a caption.",
    "Some shapes in different colours arranged next to each other in a simple photo.",
)


@dataclass(frozen=True)
class Scene:
    objects: tuple[tuple[str, str], tuple[str, str]]  # (colour, shape) on the left, then the right
    background: tuple[int, int, int]
    jitter: tuple[int, int, int, int]


def _random_scene(rng: random.Random) -> Scene:
    colors = rng.sample(sorted(COLORS), 2)
    objects = tuple((color, rng.choice(SHAPES)) for color in colors)
    background = tuple(rng.randint(225, 255) for _ in range(3))
    jitter = tuple(rng.randint(-3, 3) for _ in range(4))
    return Scene(objects, background, jitter)  # type: ignore[arg-type]


def draw_scene(scene: Scene, size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), scene.background)
    draw = ImageDraw.Draw(image)
    radius = size // 6
    for position, ((color, shape), (dx, dy)) in enumerate(zip(scene.objects, (scene.jitter[:2], scene.jitter[2:]))):
        cx = (size // 4 if position == 0 else 3 * size // 4) + dx
        cy = size // 2 + dy
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        fill = COLORS[color]
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill)
    return image


def _describe(obj: tuple[str, str], side: str, other: tuple[str, str], material: str) -> str:
    return f"A {material} {obj[0]} {obj[1]} on the {side}, beside a {other[0]} {other[1]}."


def _post(rng: random.Random, side: str, material: str) -> str:
    parts = [rng.choice(POST_TEMPLATES).format(side=side, material=material)]
    for filler in rng.sample(FILLERS, rng.randint(0, 2)):
        parts.insert(rng.randint(0, len(parts)), filler)
    return " ".join(parts)


def _rejected(rng: random.Random, scene: Scene, focus: int, material: str) -> str:
    obj, other = scene.objects[focus], scene.objects[1 - focus]
    kind = rng.choice(("other_object", "wrong_color", "wrong_material", "generic"))
    if kind == "other_object":
        return _describe(other, SIDES[1 - focus], obj, material)
    if kind == "wrong_color":
        wrong = rng.choice([c for c in sorted(COLORS) if c not in (obj[0], other[0])])
        return _describe((wrong, obj[1]), SIDES[focus], other, material)
    if kind == "wrong_material":
        return _describe(obj, SIDES[focus], other, rng.choice([m for m in MATERIALS if m != material]))
    return rng.choice(GENERIC_ALT_TEXTS)


@dataclass(frozen=True)
class SyntheticRecord:
    name: str
    scene: Scene
    question: str
    chosen: str
    rejected: str


def generate_records(split: str, count: int, seed: int) -> Iterator[SyntheticRecord]:
    """Records of one split; each split has its own stream so sizes can change independently."""
    rng = random.Random(f"{seed}-{split}")
    for number in range(count):
        scene = _random_scene(rng)
        focus = rng.randrange(2)
        material = rng.choice(MATERIALS)
        question = INSTRUCTION + _post(rng, SIDES[focus], material)
        chosen = _describe(scene.objects[focus], SIDES[focus], scene.objects[1 - focus], material)
        rejected = _rejected(rng, scene, focus, material)
        yield SyntheticRecord(f"{split}_{number:06d}.png", scene, question, chosen, rejected)


OBJECT_NAMES = [f"{color} {shape}" for color in COLORS for shape in SHAPES]  # the "COCO classes" of the synthetic images
SHAPE_SYNONYMS = {"circle": "disc", "square": "box", "triangle": "wedge"}


def write_object_halbench(output_dir: Path, records: list[SyntheticRecord], image_dir: Path) -> None:
    """An Object HalBench release for ``records`` in the layout its scorer reads, so the demo can
    measure object hallucination in the alt-text through the benchmark's own path:
    ``objhal/obj_halbench_300_with_image.jsonl`` (``image_id``, ``question`` = the alt-text
    prompt with its post, ``image`` base64, ``org_idx``), ``objhal/synonyms_refine.txt`` (one
    line per coloured shape, ", "-separated, its name first) and COCO-format
    ``coco/instances_val2014.json`` (each image's two objects) and ``coco/captions_val2014.json``
    (the chosen alt-text as the image's caption)."""
    objhal, coco = output_dir / "objhal", output_dir / "coco"
    objhal.mkdir(exist_ok=True)
    coco.mkdir(exist_ok=True)
    category_id = {name: number for number, name in enumerate(OBJECT_NAMES, start=1)}
    questions, images, instances, captions = [], [], [], []
    for number, record in enumerate(records):
        image_id = number + 1
        encoded = base64.b64encode((image_dir / record.name).read_bytes()).decode("ascii")
        questions.append({"image_id": image_id, "question": record.question, "image": encoded, "org_idx": number})
        images.append({"id": image_id, "file_name": record.name})
        for color, shape in record.scene.objects:
            instances.append({"id": len(instances) + 1, "image_id": image_id, "category_id": category_id[f"{color} {shape}"]})
        captions.append({"id": image_id, "image_id": image_id, "caption": record.chosen})
    write_text_atomically(objhal / "obj_halbench_300_with_image.jsonl", "".join(json.dumps(q) + "\n" for q in questions))
    synonyms = [f"{name}, {name.split()[0]} {SHAPE_SYNONYMS[name.split()[1]]}" for name in OBJECT_NAMES]
    write_text_atomically(objhal / "synonyms_refine.txt", "\n".join(synonyms) + "\n")
    categories = [{"id": number, "name": name, "supercategory": "shape"} for name, number in category_id.items()]
    _write_json(coco / "instances_val2014.json", {"images": images, "annotations": instances, "categories": categories})
    _write_json(coco / "captions_val2014.json", {"images": images, "annotations": captions})


def tokenizer_corpus() -> list[str]:
    """Text a tiny tokenizer is trained on: the synthetic vocabulary and the prompt template."""
    texts = [INSTRUCTION, "USER: ASSISTANT:", *FILLERS, *GENERIC_ALT_TEXTS]
    for record in generate_records("corpus", 400, seed=0):
        # As rendered by the chat template, so the merges around the answer are learnt too.
        texts += [f"USER: {record.question} ASSISTANT: {record.chosen}", record.rejected]
    return texts


def write_dataset(
    output_dir: str | Path,
    seed: int = 0,
    num_sft: int = 2000,
    num_pref_train: int = 1000,
    num_pref_test: int = 200,
    num_test: int = 200,
    sft_noise: float = 0.25,
    image_size: int = 64,
    num_objhal_images: int = 0,
) -> Path:
    """Write the four files and their images under ``output_dir``; with ``num_objhal_images``,
    also an Object HalBench release of the first test images (:func:`write_object_halbench`)."""
    output_dir = Path(output_dir)
    image_dir = output_dir / "image"
    image_dir.mkdir(parents=True, exist_ok=True)

    def save_image(record: SyntheticRecord) -> str:
        draw_scene(record.scene, image_size).save(image_dir / record.name, optimize=True)
        return record.name

    noise_rng = random.Random(f"{seed}-sft-noise")
    sft = []
    for number, record in enumerate(generate_records("sft", num_sft, seed)):
        target = record.rejected if noise_rng.random() < sft_noise else record.chosen
        sft.append({
            "id": f"sft_{number}",
            "image": save_image(record),
            "conversations": [
                {"from": "human", "value": "<image>\n" + record.question},
                {"from": "gpt", "value": target},
            ],
        })
    _write_json(output_dir / "sft_train.json", sft)

    for split, count in (("pref_train", num_pref_train), ("pref_test", num_pref_test)):
        records = []
        for number, record in enumerate(generate_records(split, count, seed)):
            path = save_image(record)
            text = {"question": record.question, "chosen": record.chosen, "rejected": record.rejected}
            records.append({
                "ds_name": "synthetic_shapes",
                "image": {"path": path},
                "origin_dataset": "mcmdpo-synthetic",
                "origin_split": json.dumps({"split": split}),
                "idx": number,
                "image_path": path,
                "text": json.dumps(text, ensure_ascii=False),
            })
        _write_json(output_dir / f"{split}.json", records)

    lines = []
    test_records = []
    for number, record in enumerate(generate_records("test", num_test, seed)):
        row = {"image_path": save_image(record), "question": record.question, "chosen": record.chosen, "idx": number}
        lines.append(json.dumps(row, ensure_ascii=False))
        test_records.append(record)
    write_text_atomically(output_dir / "test.jsonl", "\n".join(lines) + "\n")
    if num_objhal_images:
        write_object_halbench(output_dir, test_records[:num_objhal_images], image_dir)
    return output_dir


def _write_json(path: Path, data: object) -> None:
    write_text_atomically(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mcmdpo.data.synthetic", description="Write the synthetic alt-text data set.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_sft", type=int, default=2000)
    parser.add_argument("--num_pref_train", type=int, default=1000)
    parser.add_argument("--num_pref_test", type=int, default=200)
    parser.add_argument("--num_test", type=int, default=200)
    parser.add_argument("--sft_noise", type=float, default=0.25, help="share of SFT targets replaced by a rejected-style alt-text")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--num_objhal_images", type=int, default=0,
                        help="also write an Object HalBench release (objhal/, coco/) of this many test images")
    args = vars(parser.parse_args(argv))
    path = write_dataset(**args)
    print(f"synthetic data written to {path}")


if __name__ == "__main__":
    main()
