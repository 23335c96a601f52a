"""Conversation templates: how a conversation becomes text, and how that text becomes tokens.

``vicuna_v1`` is the original MCM-DPO / LLaVA recipe (design §1.4): LLaVA's ``conv_vicuna_v1``,

    {system} USER: <image>\\n{question} ASSISTANT: {answer}</s>

with its system prompt, tokenised as LLaVA's ``tokenizer_image_token`` does: the text is split at
the image placeholder and each piece is tokenised on its own (so a LLaMA tokenizer puts its "▁"
at the start of the piece after the image, as the original's sentencepiece tokenizer did, whatever
the checkpoint's ``legacy`` setting). ``checkpoint`` is the checkpoint's own chat template, with
the whole text tokenised at once (what its processor does). ``auto`` is ``vicuna_v1`` for LLaVA
checkpoints (LLaVA-1.5, LLaVA-1.6) and ``checkpoint`` for every other family.
"""

from __future__ import annotations

from typing import Any

CONVERSATION_TEMPLATES = ("auto", "vicuna_v1", "checkpoint")
LLAVA_PROCESSORS = ("LlavaProcessor", "LlavaNextProcessor")

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# conv_vicuna_v1 as a Hugging Face chat template. Message content may be a string or a list of
# {"type": "image"} / {"type": "text", "text": ...} parts, as processors expect; a leading system
# message replaces the default system prompt. The text of the turn that carries the image is
# stripped, as LLaVA's preprocess_multimodal strips it.
VICUNA_V1_CHAT_TEMPLATE = (
    "{%- macro text_of(message) -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{{ message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') }}"
    "{%- endif -%}{%- endmacro -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{{ text_of(messages[0]) + ' ' }}{%- set turns = messages[1:] -%}"
    "{%- else -%}{{ '" + VICUNA_V1_SYSTEM.replace("'", "\\'") + " ' }}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if message['role'] == 'user' -%}{{ 'USER: ' }}"
    "{%- set images = [] if message['content'] is string else message['content'] | selectattr('type', 'equalto', 'image') | list -%}"
    "{%- if images -%}{{ '<image>\\n' * (images | length) + (text_of(message) | trim) + ' ' }}"
    "{%- else -%}{{ text_of(message) + ' ' }}{%- endif -%}"
    "{%- else -%}{{ 'ASSISTANT: ' + text_of(message) + eos_token }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)


def resolve_template(processor: Any, requested: str = "auto") -> str:
    """``vicuna_v1`` or ``checkpoint``, for a processor and a requested template name."""
    if requested not in CONVERSATION_TEMPLATES:
        raise ValueError(f"conversation template must be one of {CONVERSATION_TEMPLATES}, got {requested!r}")
    if requested != "auto":
        return requested
    return "vicuna_v1" if type(processor).__name__ in LLAVA_PROCESSORS else "checkpoint"


def apply_template(processor: Any, requested: str = "auto") -> Any:
    """Set the processor's chat template to the one requested (``checkpoint`` keeps its own) and
    return the processor. A saved processor then records the template that training used."""
    if resolve_template(processor, requested) == "vicuna_v1":
        processor.chat_template = VICUNA_V1_CHAT_TEMPLATE
    elif getattr(processor, "chat_template", None) is None:
        raise ValueError("the checkpoint's processor has no chat template; use --conversation_template vicuna_v1")
    return processor


def splits_at_image(processor: Any) -> bool:
    """Whether text is tokenised piece by piece around the image placeholder (vicuna_v1)."""
    return getattr(processor, "chat_template", None) == VICUNA_V1_CHAT_TEMPLATE
