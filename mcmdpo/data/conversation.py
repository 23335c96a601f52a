"""Prompting and labels: render a conversation with the processor's chat template, tokenise it with
the image placeholder expanded by the processor, and mask every label that is not answer text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from PIL import Image

from mcmdpo.data.templates import splits_at_image

IGNORE_INDEX = -100


def build_messages(turns: Sequence[tuple[str, str | None]], with_image: bool = True) -> list[dict[str, Any]]:
    """Chat messages for ``turns`` of (user, assistant) text; the image (if any) goes with the
    first user turn. An assistant text of None leaves the turn open (a generation prompt)."""
    messages: list[dict[str, Any]] = []
    for position, (user, assistant) in enumerate(turns):
        content: list[dict[str, str]] = [{"type": "image"}] if position == 0 and with_image else []
        content.append({"type": "text", "text": user})
        messages.append({"role": "user", "content": content})
        if assistant is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": assistant}]})
    return messages


def render_prompt(processor: Any, question: str, with_image: bool = True) -> str:
    """The prompt text for one question, ending where the model starts answering."""
    messages = build_messages([(question, None)], with_image)
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_conversation(
    processor: Any, turns: Sequence[tuple[str, str]], with_image: bool = True
) -> tuple[str, list[tuple[int, int]]]:
    """Full conversation text and the character span of each answer (with its end-of-turn token).

    Spans come from rendering growing prefixes of the conversation, so they hold for any chat
    template whose rendering of a prefix is a prefix of the whole, which we check."""
    messages = build_messages(turns, with_image)
    text = processor.apply_chat_template(messages, tokenize=False)
    eos = processor.tokenizer.eos_token
    if eos and not text.endswith(eos):
        # So the model learns to stop where the template does not close the turn; a template that
        # ends an answer with a space (llava-hf's) would otherwise put a stray space token before it.
        text = text.rstrip(" ") + eos
    spans = []
    for turn in range(len(turns)):
        before = processor.apply_chat_template(messages[: 2 * turn + 1], tokenize=False, add_generation_prompt=True)
        through = processor.apply_chat_template(messages[: 2 * turn + 2], tokenize=False)
        if not (text.startswith(before) and text.startswith(through.rstrip(" ")) and len(through) > len(before)):
            raise ValueError(
                "the processor's chat template does not render conversation prefixes as prefixes of the whole; "
                "cannot tell answer tokens from prompt tokens"
            )
        end = len(text) if turn == len(turns) - 1 else len(through)
        spans.append((len(before), end))
    return text, spans


def tokenize_text(processor: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` (image placeholder not expanded) and each token's character span.

    With the vicuna_v1 template the text is cut at the image placeholder and each piece tokenised
    on its own, the first with the tokenizer's BOS, as LLaVA's ``tokenizer_image_token`` does;
    otherwise the whole text at once, as the checkpoint's processor does."""
    tokenizer = processor.tokenizer
    if not splits_at_image(processor):
        encoding = tokenizer(text, return_offsets_mapping=True)
        return list(encoding["input_ids"]), [tuple(span) for span in encoding["offset_mapping"]]
    placeholder = processor.image_token
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    start = 0
    for position, piece in enumerate(text.split(placeholder)):
        if position:
            ids.append(processor.image_token_id)
            offsets.append((start - len(placeholder), start))
        encoding = tokenizer(piece, add_special_tokens=position == 0, return_offsets_mapping=True)
        ids += encoding["input_ids"]
        offsets += [(lo + start, hi + start) for lo, hi in encoding["offset_mapping"]]
        start += len(piece) + len(placeholder)
    return ids, offsets


def answer_token_mask(processor: Any, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[bool]]:
    """Token ids of ``text`` (image placeholder not expanded) and, for each, whether it is answer
    text: whether it overlaps an answer span (a LLaMA token "▁word" starts at the space before
    the answer's first word, which is the answer's first token all the same)."""
    ids, offsets = tokenize_text(processor, text)
    mask = [end > start and any(start < hi and end > lo for lo, hi in spans) for start, end in offsets]
    return ids, mask


def num_image_tokens(processor: Any, image_size: tuple[int, int]) -> int:
    """How many placeholder tokens the processor expands one image of (height, width) into."""
    counter = getattr(processor, "_get_num_multimodal_tokens", None)
    if counter is not None:
        try:
            return int(counter(image_sizes=[list(image_size)]).num_image_tokens[0])
        except (AttributeError, KeyError, TypeError, NotImplementedError):
            pass
    height, width = image_size
    encoded = processor(text=[processor.image_token], images=[Image.new("RGB", (width, height))])
    return sum(1 for token in encoded["input_ids"][0] if token == processor.image_token_id)


@dataclass(frozen=True)
class SequencePlan:
    """Length of the expanded sequence and where its first answer token sits."""

    length: int
    first_answer: int


def plan_sequence(processor: Any, turns: Sequence[tuple[str, str]], image_tokens: int | None) -> SequencePlan:
    """Where a conversation's answer starts and how long it is once its image placeholder is
    expanded to ``image_tokens`` tokens (None: a text-only conversation)."""
    text, spans = render_conversation(processor, turns, with_image=image_tokens is not None)
    ids, mask = answer_token_mask(processor, text, spans)
    extra = image_tokens - 1 if image_tokens is not None else 0  # one placeholder becomes this many tokens
    first = mask.index(True) if True in mask else len(ids)
    image_position = ids.index(processor.image_token_id) if processor.image_token_id in ids else len(ids)
    return SequencePlan(len(ids) + extra, first + (extra if image_position < first else 0))


def process_image(processor: Any, image: Image.Image) -> dict[str, Any]:
    """The image tensors the model takes for one image (pixel_values, and image_sizes for
    LLaVA-NeXT), without the batch dimension, plus ``num_image_tokens``: how many placeholder
    tokens the processor expands this image into."""
    encoded = processor.image_processor(images=[image], return_tensors="pt")
    features = {key: value[0] for key, value in encoded.items()}
    features["num_image_tokens"] = num_image_tokens(processor, (image.height, image.width))
    return features


def expand_image_tokens(processor: Any, ids: list[int], mask: list[bool], image_tokens: int) -> tuple[list[int], list[int]]:
    """input_ids with the image placeholder repeated ``image_tokens`` times, and labels (answer
    tokens, IGNORE_INDEX elsewhere)."""
    input_ids: list[int] = []
    labels: list[int] = []
    for token, is_answer in zip(ids, mask):
        if token == processor.image_token_id:
            input_ids += [token] * image_tokens
            labels += [IGNORE_INDEX] * image_tokens
        else:
            input_ids.append(token)
            labels.append(token if is_answer else IGNORE_INDEX)
    return input_ids, labels


def tokenize_conversation(
    processor: Any, turns: Sequence[tuple[str, str]], image_tokens: int | None, max_length: int | None = None
) -> dict[str, list[int]]:
    """input_ids, attention_mask and labels (answer tokens only) of one conversation, with the
    image placeholder expanded to ``image_tokens`` tokens as the processor expands it (None: a
    text-only conversation).

    Sequences longer than ``max_length`` are cut from the end; the caller is expected to have
    dropped the records whose whole answer would be cut (see :func:`plan_sequence`)."""
    text, spans = render_conversation(processor, turns, with_image=image_tokens is not None)
    ids, mask = answer_token_mask(processor, text, spans)
    input_ids, labels = expand_image_tokens(processor, ids, mask, image_tokens or 0)
    if max_length is not None and len(input_ids) > max_length:
        if processor.image_token_id in input_ids[max_length:]:
            raise ValueError(f"image tokens do not fit in max_length={max_length}")
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def encode_prompt(processor: Any, question: str, image_tokens: int) -> list[int]:
    """Token ids of a generation prompt, tokenised exactly as training tokenises its prompts."""
    ids, _ = tokenize_text(processor, render_prompt(processor, question))
    return expand_image_tokens(processor, ids, [False] * len(ids), image_tokens)[0]


def encode_conversation(
    processor: Any, image: Image.Image | None, turns: Sequence[tuple[str, str]], max_length: int | None = None
) -> dict[str, Any]:
    """Model inputs for one conversation about one image (or none): token lists and image tensors."""
    if image is None:
        return tokenize_conversation(processor, turns, None, max_length)
    image_features = process_image(processor, image)
    tokens = tokenize_conversation(processor, turns, image_features.pop("num_image_tokens"), max_length)
    return {**tokens, **image_features}
