"""CLIPScore: a reference-free image–text score (Hessel et al. 2021, "CLIPScore: A Reference-free
Evaluation Metric for Image Captioning").

    CLIP-S(c, v) = w * max(cos(E_c, E_v), 0),  w = 2.5

where E_c and E_v are a CLIP checkpoint's embeddings of the text and the image. Scores lie in
[0, 2.5] (the paper's w stretches CLIP's usual cosines, about 0 to 0.4, over a wider range);
``torchmetrics.multimodal.CLIPScore`` reports 100 * max(cos, 0) instead, so divide its numbers by
40 to compare. Hessel et al.'s reference code also puts "A photo depicts" before each caption;
this module embeds the text as given (as torchmetrics does): prepend it yourself for their exact
numbers.

The same formula between two texts' embeddings (:meth:`ClipScorer.text_text`) scores how well an
alt-text matches the post it accompanies: a context-free score cannot see that the right alt-text
depends on the post (Kreiss et al. 2022, "Context Matters for Image Descriptions for
Accessibility"), so ``get_score.py --clip_model`` reports that context term beside the image one,
and the preference-data builder's ``clip`` ranker uses both.

Used by ``get_score.py --clip_model`` (:class:`ClipMetrics`: ``clip_score`` and
``clip_context_score`` per record and in the summary) and the preference-data builder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from mcmdpo.data.loading import verify_images
from mcmdpo.data.parsing import check_record, parse_image
from mcmdpo.data.records import DataValidationError, ImageRef, Problem, RecordLocation

if TYPE_CHECKING:
    import torch

    from mcmdpo.eval.alt_text_scores import Predictions

CLIP_S_WEIGHT = 2.5  # Hessel et al.'s w
CLIP_S_UNIT = "CLIP-S 0-2.5"  # how get_score labels the two metrics (they are not x 100)
CONTEXT_MARKER = "Context:"  # the released data's and the synthetic data's questions end "...Context:\n{post}"


def clip_s(cosine: float, weight: float = CLIP_S_WEIGHT) -> float:
    """CLIP-S from a cosine similarity: ``weight * max(cosine, 0)``. A text that CLIP finds
    dissimilar to the image scores 0, never below (a negative cosine says no more than "unrelated")."""
    return weight * max(float(cosine), 0.0)


class ClipScorer:
    """CLIPScore with any CLIP checkpoint that transformers loads (``AutoModel`` with
    ``get_image_features`` / ``get_text_features``, ``AutoProcessor``).

    Embeddings are computed in batches of ``batch_size`` under ``torch.no_grad`` in float32 on
    ``device`` (default: CUDA when there is one, else the CPU). Texts are truncated to the model's
    text length (77 tokens for CLIP, start and end tokens included, so about 60 words): only the
    beginning of a longer alt-text counts. Identical texts, and images passed as the same object,
    are embedded once per call (a ranker scores several candidates against one image and post).
    """

    def __init__(self, model_path: str, device: str | None = None, batch_size: int = 32):
        import torch
        from transformers import AutoModel, AutoProcessor

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        processor = AutoProcessor.from_pretrained(model_path)
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        # float32 whatever the checkpoint's stored dtype: scores should not depend on how it was saved.
        self.model = AutoModel.from_pretrained(model_path, dtype=torch.float32).to(self.device).eval()
        if not all(hasattr(self.model, name) for name in ("get_image_features", "get_text_features")):
            raise ValueError(f"{model_path}: a {type(self.model).__name__} has no get_image_features / get_text_features; "
                             "CLIPScore needs a CLIP checkpoint")
        text_config = getattr(self.model.config, "text_config", self.model.config)
        # The position table bounds what the text encoder can read; a tokenizer may claim more.
        self.max_length = min(text_config.max_position_embeddings, self.tokenizer.model_max_length)

    def image_text(self, images: list[Image.Image], texts: list[str]) -> list[float]:
        """CLIP-S of each (image, text) pair, in order: ``2.5 * max(cos(E_text, E_image), 0)``."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts: CLIPScore scores pairs")
        if not texts:
            return []
        return self._scores(self._embed_images(images), self._embed_texts(texts))

    def text_text(self, texts_a: list[str], texts_b: list[str]) -> list[float]:
        """The same formula between two texts' embeddings, pair by pair (symmetric): how well an
        alt-text matches its post."""
        if len(texts_a) != len(texts_b):
            raise ValueError(f"{len(texts_a)} and {len(texts_b)} texts: CLIPScore scores pairs")
        if not texts_a:
            return []
        embedded = self._embed_texts(texts_a + texts_b)  # one pass, so a text shared by both sides is embedded once
        return self._scores(embedded[: len(texts_a)], embedded[len(texts_a):])

    def _scores(self, first: torch.Tensor, second: torch.Tensor) -> list[float]:
        cosines = (first * second).sum(dim=-1)  # both sides unit length: the dot product is the cosine
        return [clip_s(cosine) for cosine in cosines.tolist()]

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Unit-length text embeddings, one row per text."""
        distinct = list(dict.fromkeys(texts))

        def embed(batch: list[str]) -> torch.Tensor:
            inputs = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            return self.model.get_text_features(input_ids=inputs["input_ids"].to(self.device),
                                                attention_mask=inputs["attention_mask"].to(self.device))

        rows = self._embed(distinct, embed)
        where = {text: i for i, text in enumerate(distinct)}
        return rows[[where[text] for text in texts]]

    def _embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        """Unit-length image embeddings, one row per image."""
        distinct = list({id(image): image for image in images}.values())

        def embed(batch: list[Image.Image]) -> torch.Tensor:
            pixels = self.image_processor([image.convert("RGB") for image in batch], return_tensors="pt")["pixel_values"]
            return self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype))

        rows = self._embed(distinct, embed)
        where = {id(image): i for i, image in enumerate(distinct)}
        return rows[[where[id(image)] for image in images]]

    def _embed(self, items: list[Any], embed: Any) -> torch.Tensor:
        import torch

        rows = []
        with torch.no_grad():
            for start in range(0, len(items), self.batch_size):
                output = embed(items[start : start + self.batch_size])
                # transformers 5 returns the projected embedding as the output's pooler_output.
                features = output.pooler_output if hasattr(output, "pooler_output") else output
                rows.append(features.float())
        features = torch.cat(rows)
        return features / features.norm(dim=-1, keepdim=True)


def post_of(question: str) -> str:
    """The post (the context) of a record's question: what follows the last "Context:" and its
    line break, or the whole question where there is no such marker. The instruction before it is
    the same for every record and would only pull every post's embedding towards it."""
    at = question.rfind(CONTEXT_MARKER)
    return question if at < 0 else question[at + len(CONTEXT_MARKER):].removeprefix("\n")


@dataclass(frozen=True)
class _ImagedRecord:
    """What the data layer's image checks need of a record: its image, position and idx."""

    image: ImageRef
    location: RecordLocation
    idx: Any


@dataclass
class ClipMetrics:
    """``get_score.py --clip_model``: ``clip_score`` (image–alt-text) and ``clip_context_score``
    (alt-text–post, for records whose question holds a post) of each scored record, and their
    means over the file. An empty response scores 0 on both, as it does on every other metric.
    Build it with :meth:`prepare`, which checks every image first."""

    scorer: ClipScorer
    image_folder: str | None
    images: dict[str, dict[int, ImageRef]]  # file -> position -> its image, every one checked
    show_progress: bool = True

    @classmethod
    def prepare(cls, files: list[Predictions], model_path: str, image_folder: str | None, show_progress: bool = True) -> ClipMetrics:
        """Check every scored record's image in every file (decoded in full) before the model
        loads, so a missing or broken image stops scoring before it starts, with the file,
        the record and the field named; then load the scorer."""
        problems: list[Problem] = []
        images: dict[str, dict[int, ImageRef]] = {}
        for predictions in files:
            records = []
            for position, record in predictions.records.items():
                location = predictions.locations[position]
                check = check_record(location, record, problems)
                image = parse_image(check) if check is not None else None
                if image is not None:
                    records.append(_ImagedRecord(image, location, check.idx))
            sound, _ = verify_images(records, predictions.path, image_folder, problems, show_progress)
            images[str(predictions.path)] = {record.location.number: record.image for record in sound}
        if problems:
            raise DataValidationError(problems)
        return cls(ClipScorer(model_path), image_folder, images, show_progress)

    def score(self, predictions: Predictions) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
        """The file's mean scores and each record's, by position."""
        from tqdm import tqdm

        images = self.images[str(predictions.path)]
        positions = list(predictions.hypotheses)
        per_record: dict[int, dict[str, float]] = {position: {} for position in positions}
        answered = [p for p in positions if predictions.hypotheses[p].strip()]
        step = self.scorer.batch_size  # open only one batch of images at a time
        for start in tqdm(range(0, len(answered), step), desc=f"CLIPScore {predictions.path.name}", disable=not self.show_progress):
            batch = answered[start : start + step]
            scores = self.scorer.image_text([images[p].open(self.image_folder) for p in batch],
                                            [predictions.hypotheses[p] for p in batch])
            for position, value in zip(batch, scores):
                per_record[position]["clip_score"] = value
        posts = {p: post_of(question) for p in positions
                 if isinstance(question := predictions.records[p].get("question"), str) and post_of(question).strip()}
        with_post = [p for p in answered if p in posts]
        context_scores = self.scorer.text_text([predictions.hypotheses[p] for p in with_post], [posts[p] for p in with_post])
        for position, value in zip(with_post, context_scores):
            per_record[position]["clip_context_score"] = value
        for position in positions:
            if position not in answered:  # an empty response says nothing about the image or the post
                per_record[position]["clip_score"] = 0.0
                if position in posts:
                    per_record[position]["clip_context_score"] = 0.0
        corpus = {}
        for name in ("clip_score", "clip_context_score"):
            values = [scores[name] for scores in per_record.values() if name in scores]
            if values:
                corpus[name] = sum(values) / len(values)
        return corpus, per_record
