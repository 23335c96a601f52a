"""Batched alt-text generation: left-padded prompts, beam search or sampling."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from mcmdpo.data.collate import PaddingCollator
from mcmdpo.data.conversation import encode_prompt, end_of_turn_ids
from mcmdpo.data.image_inputs import ImageInputs, encode_image
from mcmdpo.data.records import TestExample


@dataclass(frozen=True)
class GenerationSettings:
    """Upstream defaults: greedy (temperature 0), 3 beams, 256 new tokens."""

    temperature: float = 0.0
    num_beams: int = 3
    max_new_tokens: int = 256
    top_p: float | None = None

    def generate_kwargs(self, processor: Any, model_stops: Any = None) -> dict[str, Any]:
        """``model_stops``: the checkpoint's own generation_config.eos_token_id (an id or a list);
        generation stops at those and at the chat template's end of turn."""
        stops = [model_stops] if isinstance(model_stops, int) else list(model_stops or [])
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "do_sample": self.temperature > 0,
            "pad_token_id": processor.tokenizer.pad_token_id,
            "eos_token_id": list(dict.fromkeys([*end_of_turn_ids(processor), *stops])),
        }
        if self.temperature > 0:
            kwargs["temperature"] = self.temperature
            if self.top_p is not None:
                kwargs["top_p"] = self.top_p
        return kwargs


@torch.no_grad()
def generate_batch(
    model: Any, processor: Any, inputs: ImageInputs, questions: Sequence[str], images: Sequence[Any], settings: GenerationSettings
) -> list[str]:
    """Responses for one batch (an image may be None: a text-only question). Prompts are tokenised exactly as training tokenises them
    (:func:`~mcmdpo.data.conversation.encode_prompt`) and padded on the left, so every row ends
    where its answer starts and the new tokens line up."""
    rows = []
    for question, image in zip(questions, images):
        encoded = encode_image(processor, image, inputs) if image is not None else None
        rows.append({**encode_prompt(processor, question, encoded, inputs.token_type_key), **(encoded.tensors if encoded else {})})
    batch = PaddingCollator(processor.tokenizer.pad_token_id, padding_side="left")(rows)
    device = next(model.parameters()).device
    batch = {key: value.to(device, model.dtype if value.is_floating_point() else None) for key, value in batch.items()}
    output = model.generate(**batch, **settings.generate_kwargs(processor, model.generation_config.eos_token_id))
    new_tokens = output[:, batch["input_ids"].shape[1]:]
    return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]


def generate_responses(
    model: Any,
    processor: Any,
    inputs: ImageInputs,
    examples: Sequence[TestExample],
    image_folder: str | Path | None,
    settings: GenerationSettings,
    batch_size: int = 8,
) -> Iterator[tuple[list[TestExample], list[str]]]:
    """Yield (examples, responses) batch by batch, in input order."""
    for start in range(0, len(examples), batch_size):
        batch = list(examples[start : start + batch_size])
        images = [example.image.open(image_folder) if example.image is not None else None for example in batch]
        yield batch, generate_batch(model, processor, inputs, [e.question for e in batch], images, settings)
