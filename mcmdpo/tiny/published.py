"""Everything but the weights of the published llava-hf checkpoints that the paper's recipe starts
from, so tests see what a real checkpoint sees: the LLaMA-2 (Vicuna v1.5) tokenizer with
``<image>`` and ``<pad>`` added as llava-hf adds them, the CLIP-L/336 processor settings (patch 14,
576 tokens a tile, LLaVA-1.6's grid pinpoints, CLIP's mean and std) and the checkpoints' chat
templates.

    python -m mcmdpo.tiny --like llava-v1.6-vicuna-7b --output_dir DIR
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# CLIP's normalisation constants, as LLaVA's CLIP-L/336 processor uses.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

IMAGE_TOKEN_ID = 32000  # llava-hf appends <image>, then <pad>, to LLaMA's 32,000 tokens
PAD_TOKEN_ID = 32001
PADDED_VOCAB_SIZE = 32064  # the embedding is padded to a multiple of 64

# The chat template llava-hf publishes with llava-1.5-7b-hf and llava-v1.6-vicuna-7b-hf alike: no
# default system prompt (a system message would be written with no role), each turn's text
# followed by a space, no </s> after an answer.
LLAVA_HF_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


@dataclass(frozen=True)
class PublishedCheckpoint:
    """What a tiny stand-in copies from a published checkpoint."""

    name: str  # the hub name it stands in for
    architecture: str  # "llava" or "llava_next"
    chat_template: str
    image_size: int = 336
    patch_size: int = 14
    grid_pinpoints: tuple[tuple[int, int], ...] = ()
    # Not confirmed for either repository; transformers 5 reads a missing flag as False. The
    # vicuna_v1 template tokenises the same ids either way (tests check both).
    tokenizer_legacy: bool = False

    def tokenizer_config(self) -> dict:
        """tokenizer_config.json as llava-hf publishes it (LLaMA tokenizer, <image> and <pad> added)."""
        added = {
            str(i): {"content": token, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
            for i, token in ((0, "<unk>"), (1, "<s>"), (2, "</s>"), (IMAGE_TOKEN_ID, "<image>"), (PAD_TOKEN_ID, "<pad>"))
        }
        return {
            "add_bos_token": True,
            "add_eos_token": False,
            "added_tokens_decoder": added,
            "bos_token": "<s>",
            "clean_up_tokenization_spaces": False,
            "eos_token": "</s>",
            "extra_special_tokens": {"image_token": "<image>"},
            "legacy": self.tokenizer_legacy,
            "model_max_length": 1000000000000000019884624838656,
            "pad_token": "<pad>",
            "padding_side": "left",
            "tokenizer_class": "LlamaTokenizer",
            "unk_token": "<unk>",
            "use_default_system_prompt": False,
        }


PUBLISHED = {
    "llava-1.5-7b": PublishedCheckpoint("llava-hf/llava-1.5-7b-hf", "llava", LLAVA_HF_CHAT_TEMPLATE),
    "llava-v1.6-vicuna-7b": PublishedCheckpoint(
        "llava-hf/llava-v1.6-vicuna-7b-hf",
        "llava_next",
        LLAVA_HF_CHAT_TEMPLATE,
        grid_pinpoints=((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)),
    ),
}


def write_tokenizer_files(folder: str | Path, published: PublishedCheckpoint) -> None:
    """Write tokenizer.json (Meta's LLaMA-2 layout plus llava-hf's two tokens) and
    tokenizer_config.json as the published checkpoint has them, over whatever is there."""
    from tokenizers import AddedToken

    from mcmdpo.tiny.real_tokenizers import llama2_backend

    backend = llama2_backend()
    backend.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in ("<image>", "<pad>")])
    if backend.token_to_id("<image>") != IMAGE_TOKEN_ID or backend.token_to_id("<pad>") != PAD_TOKEN_ID:
        raise RuntimeError("<image> and <pad> did not land on ids 32000 and 32001")
    folder = Path(folder)
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(published.tokenizer_config(), indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# The families beyond LLaVA: the chat templates and processor settings their published
# checkpoints ship (Qwen/Qwen2.5-VL-7B-Instruct, Qwen/Qwen3-VL-8B-Instruct, google/gemma-3-4b-it,
# HuggingFaceTB/SmolVLM-256M-Instruct, llava-hf/llava-onevision-qwen2-7b-ov-hf). Gemma 3's template
# comes with its tokenizer package.

QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL Instruct: no default system turn; images as <|vision_start|><|image_pad|><|vision_end|>
# inside the user turn; no thinking block (the Thinking variant's is left out). Tools are not used here.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
    "{%- macro render_content(content, do_vision_count) %}{%- if content is string %}{{- content }}{%- else %}"
    "{%- for item in content %}{%- if 'image' in item or 'image_url' in item or item.type == 'image' %}"
    "{%- if do_vision_count %}{%- set image_count.value = image_count.value + 1 %}{%- endif %}"
    "{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif 'video' in item or item.type == 'video' %}{%- if do_vision_count %}{%- set video_count.value = video_count.value + 1 %}{%- endif %}"
    "{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in item %}{{- item.text }}{%- endif %}{%- endfor %}{%- endif %}{%- endmacro %}"
    "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\n' + render_content(messages[0].content, false) + '<|im_end|>\n' }}{%- endif %}"
    "{%- for message in messages %}{%- set content = render_content(message.content, True) %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == 'image' %}"
    "{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SIGLIP_MEAN = SIGLIP_STD = [0.5, 0.5, 0.5]

# LLaVA-OneVision's tiles: every pair of multiples of 384 up to 2304.
ONEVISION_GRID_PINPOINTS = [[h, w] for h in range(384, 2305, 384) for w in range(384, 2305, 384)]

# SmolVLM's added tokens (SmolLM2 has <|endoftext|>, <|im_start|>, <|im_end|> at 0-2).
SMOLVLM_ADDED_TOKENS = (
    ["<global-img>"]
    + [f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)]
    + ["<fake_token_around_image>", "<image>"]
    + [f"<|reserved_special_token_{i}|>" for i in range(88)]
    + ["<end_of_utterance>"]
)
