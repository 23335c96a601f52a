"""Everything but the weights of the published llava-hf checkpoints that the paper's recipe starts
from, so tests see what a real checkpoint sees: the LLaMA-2 (Vicuna v1.5) tokenizer with
``<image>`` and ``<pad>`` added as llava-hf adds them, the CLIP-L/336 processor settings (patch 14,
576 tokens a tile, LLaVA-1.6's grid pinpoints, CLIP's mean and std) and the checkpoints' chat
templates.

    python -m mcmdpo.model.tiny --like llava-v1.6-vicuna-7b --output_dir DIR
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

    from mcmdpo.model.real_tokenizers import llama2_backend

    backend = llama2_backend()
    backend.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in ("<image>", "<pad>")])
    if backend.token_to_id("<image>") != IMAGE_TOKEN_ID or backend.token_to_id("<pad>") != PAD_TOKEN_ID:
        raise RuntimeError("<image> and <pad> did not land on ids 32000 and 32001")
    folder = Path(folder)
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(published.tokenizer_config(), indent=2) + "\n")
