"""Real tokenizers rebuilt from registry packages (see :mod:`mcmdpo.tiny.assets`).

LLaMA-1/2 (Vicuna v1.5, hence LLaVA-1.5 and LLaVA-1.6-Vicuna): ``llama-tokenizer-js`` bakes the
32,000-token vocabulary (base64, one token a line, in id order) and the BPE merges (pairs of
16-bit little-endian vocabulary ids, in priority order) into its JavaScript file; its
``data-conversion.py`` shows the encoding. Rebuilt with LLaMA's normaliser (prepend "▁", spaces to
"▁") and byte fallback, it encodes as LLaMA-2 does ("Hello world!" -> 1, 15043, 3186, 29991).
"""

from __future__ import annotations

import base64
import re
import struct
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

from mcmdpo.tiny.assets import AssetError, npm_package

LLAMA_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")


def _js_string(source: str, name: str, path: Path) -> str:
    match = re.search(rf'const {name} = "([^"]+)"', source)
    if match is None:
        raise AssetError(f"{path}: no string constant {name}; is this llama-tokenizer-js?")
    return match.group(1)


def llama2_vocab_and_merges() -> tuple[list[str], list[tuple[str, str]]]:
    """LLaMA-2's vocabulary (index = id) and merges (index = priority)."""
    path = npm_package("llama-tokenizer-js") / "llama-tokenizer.js"
    source = path.read_text(encoding="utf-8")
    vocab = base64.b64decode(_js_string(source, "llama_vocab_base64", path)).decode("utf-8").split("\n")
    packed = base64.b64decode(_js_string(source, "llama_merges_binary", path))
    ids = struct.unpack(f"<{len(packed) // 2}H", packed)
    merges = [(vocab[ids[i]], vocab[ids[i + 1]]) for i in range(0, len(ids), 2)]
    if len(vocab) != 32000 or vocab[:3] != list(LLAMA_SPECIAL_TOKENS):
        raise AssetError(f"{path}: expected LLaMA's 32,000-token vocabulary, found {len(vocab)} tokens")
    return vocab, merges


def llama2_backend() -> Tokenizer:
    """The LLaMA-2 tokenizer as a ``tokenizers`` object, laid out like Meta's tokenizer.json."""
    vocab, merges = llama2_vocab_and_merges()
    backend = Tokenizer(
        models.BPE({token: i for i, token in enumerate(vocab)}, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    backend.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in LLAMA_SPECIAL_TOKENS])
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return backend
