"""Prompting and labels: render a conversation with the processor's chat template, expand the image
placeholder into the text the processor expands it into, tokenise, and mask every label that is
not answer text (the answer and the token that closes its turn)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from PIL import Image

from mcmdpo.data.image_inputs import EncodedImage, ImageInputs, encode_image
from mcmdpo.data.templates import splits_at_image

IGNORE_INDEX = -100
# The longest sequence trained or scored, in tokens, image tokens included: the original's
# model_max_length, the default of training, the preference evaluation and the app.
DEFAULT_MAX_LENGTH = 2048
Span = tuple[int, int]


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


def closing_tokens(processor: Any, text: str) -> list[str]:
    """The special tokens ``text`` ends with (the template's end of turn: ``</s>``,
    ``<|im_end|>``, ``<end_of_turn>``, ``<end_of_utterance>``), if any."""
    return [token for token in processor.tokenizer.all_special_tokens if token and text.endswith(token)]


def render_conversation(processor: Any, turns: Sequence[tuple[str, str]], with_image: bool = True) -> tuple[str, list[Span]]:
    """Full conversation text and the character span of each answer, through the token that
    closes its turn and not the whitespace the template writes after it.

    Spans come from rendering growing prefixes of the conversation, so they hold for any chat
    template whose rendering of a prefix is a prefix of the whole, which we check. Where the
    template closes the last answer with no special token (llava-hf's ends it with a space), the
    tokenizer's EOS is appended so the model learns to stop."""
    messages = build_messages(turns, with_image)
    text = processor.apply_chat_template(messages, tokenize=False)
    spans = []
    for turn in range(len(turns)):
        before = processor.apply_chat_template(messages[: 2 * turn + 1], tokenize=False, add_generation_prompt=True)
        through = processor.apply_chat_template(messages[: 2 * turn + 2], tokenize=False).rstrip()
        if not (text.startswith(before) and text.startswith(through) and len(through) > len(before)):
            raise ValueError(
                "the processor's chat template does not render conversation prefixes as prefixes of the whole; "
                "cannot tell answer tokens from prompt tokens"
            )
        spans.append((len(before), len(through)))
    eos = processor.tokenizer.eos_token
    last_start, last_end = spans[-1]
    if eos and not closing_tokens(processor, text[:last_end]):
        text = text[:last_end] + eos
        spans[-1] = (last_start, len(text))
    return text, spans


def expand_image(processor: Any, text: str, spans: list[Span], replacement: str) -> tuple[str, list[Span], Span]:
    """``text`` with its one image placeholder replaced by ``replacement`` (what the processor
    expands it into), the answer spans moved with it, and the replacement's span."""
    placeholder = processor.image_token
    at = text.find(placeholder)
    if at < 0 or text.find(placeholder, at + len(placeholder)) >= 0:
        raise ValueError(
            f"expected exactly one image placeholder {placeholder!r} in the rendered conversation, found "
            f"{text.count(placeholder)}: the record's text holds the model's own image placeholder"
        )
    end = at + len(placeholder)
    shift = len(replacement) - len(placeholder)
    moved = [(lo + shift if lo >= end else lo, hi + shift if hi >= end else hi) for lo, hi in spans]
    return text[:at] + replacement + text[end:], moved, (at, at + len(replacement))


def _adds_special_tokens(processor: Any, text: str) -> bool:
    """Templates that write the BOS themselves (Gemma's) are tokenised without adding another."""
    bos = processor.tokenizer.bos_token
    return not (bos and text.startswith(bos))


def tokenize_text(processor: Any, text: str, image_span: Span | None = None) -> tuple[list[int], list[Span]]:
    """Token ids of ``text`` (image already expanded, at ``image_span``) and each token's span.

    With the vicuna_v1 template the text is cut around the image and each piece tokenised on its
    own, the first with the tokenizer's BOS, as LLaVA's ``tokenizer_image_token`` does; otherwise
    the whole text at once, as the checkpoint's processor does."""
    tokenizer = processor.tokenizer
    if image_span is None or not splits_at_image(processor):
        encoding = tokenizer(text, add_special_tokens=_adds_special_tokens(processor, text), return_offsets_mapping=True)
        return list(encoding["input_ids"]), [tuple(span) for span in encoding["offset_mapping"]]
    ids: list[int] = []
    offsets: list[Span] = []
    bounds = (0, *image_span, len(text))
    for piece, (start, end) in enumerate(zip(bounds, bounds[1:])):
        encoding = tokenizer(text[start:end], add_special_tokens=piece == 0, return_offsets_mapping=True)
        ids += encoding["input_ids"]
        offsets += [(lo + start, hi + start) for lo, hi in encoding["offset_mapping"]]
    return ids, offsets


@dataclass(frozen=True)
class TokenizedConversation:
    """Token ids, which are answer tokens, and how many tokens run through the image."""

    ids: list[int]
    answer: list[bool]
    image_end: int  # index after the image's last token (0 without an image)

    @property
    def first_answer(self) -> int:
        return self.answer.index(True) if True in self.answer else len(self.ids)


def tokenize_turns(processor: Any, turns: Sequence[tuple[str, str]], replacement: str | None) -> TokenizedConversation:
    """Tokenise a conversation whose image placeholder becomes ``replacement`` (None: no image).
    A token is answer text when it overlaps an answer span (a LLaMA token "▁word" starts at the
    space before the answer's first word, which is the answer's first token all the same)."""
    text, spans = render_conversation(processor, turns, with_image=replacement is not None)
    image_span = None
    if replacement is not None:
        text, spans, image_span = expand_image(processor, text, spans, replacement)
    ids, offsets = tokenize_text(processor, text, image_span)
    answer = [end > start and any(start < hi and end > lo for lo, hi in spans) for start, end in offsets]
    image_end = 0 if image_span is None else sum(1 for start, _ in offsets if start < image_span[1])
    return TokenizedConversation(ids, answer, image_end)


@dataclass(frozen=True)
class SequencePlan:
    """Length of the tokenised sequence and where its first answer token sits."""

    length: int
    first_answer: int


def plan_sequence(processor: Any, turns: Sequence[tuple[str, str]], replacement: str | None) -> SequencePlan:
    """Where a conversation's answer starts and how long it is, with its image placeholder
    expanded into ``replacement`` (None: a text-only conversation)."""
    tokenized = tokenize_turns(processor, turns, replacement)
    return SequencePlan(len(tokenized.ids), tokenized.first_answer)


def token_types(processor: Any, input_ids: list[int]) -> list[int]:
    """Per token: 1 for image tokens, 0 for text, as the processor flags them for the model."""
    return list(processor.create_mm_token_type_ids([input_ids])[0])


def tokenize_conversation(
    processor: Any,
    turns: Sequence[tuple[str, str]],
    replacement: str | None,
    max_length: int | None = None,
    token_type_key: str | None = None,
) -> dict[str, list[int]]:
    """input_ids, attention_mask and labels (answer tokens only) of one conversation, with the
    image placeholder expanded into ``replacement`` (None: a text-only conversation), and the
    image-token flags under ``token_type_key`` where the model takes them.

    Sequences longer than ``max_length`` are cut from the end; the caller is expected to have
    dropped the records whose whole answer would be cut (see :func:`plan_sequence`)."""
    tokenized = tokenize_turns(processor, turns, replacement)
    input_ids = tokenized.ids
    labels = [token if is_answer else IGNORE_INDEX for token, is_answer in zip(input_ids, tokenized.answer)]
    if max_length is not None and len(input_ids) > max_length:
        if tokenized.image_end > max_length:
            raise ValueError(f"image tokens do not fit in max_length={max_length}")
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    encoded = {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}
    if token_type_key:
        encoded[token_type_key] = token_types(processor, input_ids)
    return encoded


def encode_prompt(
    processor: Any, question: str, image: EncodedImage | None, token_type_key: str | None = None
) -> dict[str, list[int]]:
    """input_ids and attention_mask of a generation prompt, tokenised exactly as training
    tokenises its prompts (``image`` None: a text-only prompt)."""
    text = render_prompt(processor, question, with_image=image is not None)
    image_span = None
    if image is not None:
        text, _, image_span = expand_image(processor, text, [], image.replacement)
    ids, _ = tokenize_text(processor, text, image_span)
    encoded = {"input_ids": ids, "attention_mask": [1] * len(ids)}
    if token_type_key:
        encoded[token_type_key] = token_types(processor, ids)
    return encoded


def encode_conversation(
    processor: Any,
    image: Image.Image | None,
    turns: Sequence[tuple[str, str]],
    inputs: ImageInputs,
    max_length: int | None = None,
) -> dict[str, Any]:
    """Model inputs for one conversation about one image (or none): token lists and image tensors."""
    if image is None:
        return tokenize_conversation(processor, turns, None, max_length, inputs.token_type_key)
    encoded = encode_image(processor, image, inputs)
    tokens = tokenize_conversation(processor, turns, encoded.replacement, max_length, inputs.token_type_key)
    return {**tokens, **encoded.tensors}


def end_of_turn_ids(processor: Any) -> list[int]:
    """Token ids generation stops at: the tokenizer's EOS and the special token the chat template
    closes an answer with, where that differs (Qwen's ``<|im_end|>``, Gemma's ``<end_of_turn>``)."""
    tokenizer = processor.tokenizer
    stops = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    text, spans = render_conversation(processor, [("q", "a")], with_image=False)
    stops += [tokenizer.convert_tokens_to_ids(token) for token in closing_tokens(processor, text[: spans[-1][1]])]
    return list(dict.fromkeys(stops))
