"""Conversation templates: how a conversation becomes text, and how that text becomes tokens.

``vicuna_v1`` is the original MCM-DPO / LLaVA recipe: LLaVA's ``conv_vicuna_v1``,

    {system} USER: <image>\\n{question} ASSISTANT: {answer}</s>

with its system prompt, tokenised as LLaVA's ``tokenizer_image_token`` does: the text is split at
the image placeholder and each piece is tokenised on its own (so a LLaMA tokenizer puts its "▁"
at the start of the piece after the image, as the original's sentencepiece tokenizer did, whatever
the checkpoint's ``legacy`` setting). ``checkpoint`` is the checkpoint's own chat template, with
the whole text tokenised at once (what its processor does). ``auto`` keeps a checkpoint's own
vicuna_v1 template (ours: a trained checkpoint records the template it was trained with; the
plain tiny test model's has no system prompt), else is the model family's default
(:mod:`mcmdpo.model.families`: ``vicuna_v1`` for LLaVA-1.5 and LLaVA-1.6, ``checkpoint`` for
every other family).
"""

from __future__ import annotations

from typing import Any

CONVERSATION_TEMPLATES = ("auto", "vicuna_v1", "checkpoint")

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# Marks our vicuna_v1 templates, whatever their system prompt, so a saved checkpoint's template
# is recognised as one (and tokenised as the original does) when it is loaded again.
VICUNA_V1_MARKER = "{#- mcmdpo conversation template: vicuna_v1 -#}"


def vicuna_v1_chat_template(system_prompt: str = VICUNA_V1_SYSTEM) -> str:
    """conv_vicuna_v1 as a Hugging Face chat template, with ``system_prompt`` as its default (an
    empty one leaves the system part out). Message content may be a string or a list of
    {"type": "image"} / {"type": "text", "text": ...} parts, as processors expect; a leading
    system message replaces the default. The text of the turn that carries the image is stripped,
    as LLaVA's preprocess_multimodal strips it."""
    default = "{{ '" + system_prompt.replace("\\", "\\\\").replace("'", "\\'") + " ' }}" if system_prompt else ""
    return (
        VICUNA_V1_MARKER
        + "{%- macro text_of(message) -%}"
        "{%- if message['content'] is string -%}{{ message['content'] }}"
        "{%- else -%}{{ message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') }}"
        "{%- endif -%}{%- endmacro -%}"
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{{ text_of(messages[0]) + ' ' }}{%- set turns = messages[1:] -%}"
        "{%- else -%}" + default + "{%- set turns = messages -%}{%- endif -%}"
        "{%- for message in turns -%}"
        "{%- if message['role'] == 'user' -%}{{ 'USER: ' }}"
        "{%- set images = [] if message['content'] is string else message['content'] | selectattr('type', 'equalto', 'image') | list -%}"
        "{%- if images -%}{{ '<image>\\n' * (images | length) + (text_of(message) | trim) + ' ' }}"
        "{%- else -%}{{ text_of(message) + ' ' }}{%- endif -%}"
        "{%- else -%}{{ 'ASSISTANT: ' + text_of(message) + eos_token }}{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
    )


VICUNA_V1_CHAT_TEMPLATE = vicuna_v1_chat_template()


def is_vicuna_v1(chat_template: str | None) -> bool:
    return bool(chat_template) and chat_template.startswith(VICUNA_V1_MARKER)


def resolve_template(processor: Any, requested: str = "auto", family_default: str = "checkpoint") -> str:
    """``vicuna_v1`` or ``checkpoint``, for a processor, a requested template name and the model
    family's default."""
    if requested not in CONVERSATION_TEMPLATES:
        raise ValueError(f"conversation template must be one of {CONVERSATION_TEMPLATES}, got {requested!r}")
    if requested != "auto":
        return requested
    if is_vicuna_v1(getattr(processor, "chat_template", None)):
        return "checkpoint"  # one of ours already, with the system prompt it was trained with
    return family_default


def apply_template(processor: Any, requested: str = "auto", family_default: str = "checkpoint") -> Any:
    """Set the processor's chat template to the one requested (``checkpoint`` keeps its own) and
    return the processor. A saved processor then records the template that training used."""
    if resolve_template(processor, requested, family_default) == "vicuna_v1":
        if getattr(processor, "image_token", "<image>") != "<image>":
            raise ValueError(
                f"--conversation_template vicuna_v1 is LLaVA's: it writes <image>, and {type(processor).__name__} expands "
                f"{processor.image_token!r}; use the checkpoint's own template (checkpoint or auto)"
            )
        processor.chat_template = VICUNA_V1_CHAT_TEMPLATE
    elif getattr(processor, "chat_template", None) is None:
        raise ValueError("the checkpoint's processor has no chat template; use --conversation_template vicuna_v1")
    return processor


def splits_at_image(processor: Any) -> bool:
    """Whether text is tokenised piece by piece around the image placeholder (vicuna_v1)."""
    return is_vicuna_v1(getattr(processor, "chat_template", None))
