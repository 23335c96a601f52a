"""A tiny, randomly initialised text-only instruct model (a LLaMA causal LM with the plain tiny
LLaVA's BPE tokenizer and a chat template), for the tests and demos of the preference-data
builder's local corrector (:mod:`mcmdpo.build.correct`). It loads through ``AutoModelForCausalLM``
and ``AutoTokenizer`` as a published instruct model does; its replies are random text.

    write_tiny_instruct_checkpoint("runs/tiny-instruct")
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mcmdpo.tiny.bpe import build_tokenizer
from mcmdpo.tiny.spec import TinyModelSpec

# A plain instruct chat template: each message on its own turn, the answer closed by </s>.
CHAT_TEMPLATE = (
    "{{ bos_token }}{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ 'USER: ' + message['content'] + ' ' }}"
    "{%- else -%}{{ 'ASSISTANT: ' + message['content'] + eos_token }}{%- endif -%}"
    "{%- endfor -%}{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)


def write_tiny_instruct_checkpoint(output_dir: str | Path, spec: TinyModelSpec | None = None) -> Path:
    """Save the tiny instruct model and its tokenizer in ``output_dir`` (sizes and seed from
    ``spec``'s language-model fields); return it."""
    spec = spec or TinyModelSpec()
    output_dir = Path(output_dir)
    tokenizer = build_tokenizer(spec.vocab_size)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir
