"""The Vicuna v1 conversation template (design §1.4) as a Hugging Face chat template.

Renders ``[system ]USER: <image>\\n{question} ASSISTANT: {answer}</s>USER: ...``; with
``add_generation_prompt`` it ends in ``ASSISTANT:``. Message content may be a string or a list of
``{"type": "image"}`` / ``{"type": "text", "text": ...}`` parts, as processors expect.
"""

VICUNA_V1_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}"
    "{%- set text = parts | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') -%}"
    "{%- if message['role'] == 'system' -%}{{ text + ' ' }}"
    "{%- elif message['role'] == 'user' -%}{{ 'USER: ' }}"
    "{%- for part in parts if part['type'] == 'image' -%}{{ '<image>\\n' }}{%- endfor -%}"
    "{{ text + ' ' }}"
    "{%- else -%}{{ 'ASSISTANT: ' + text + eos_token }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)
