"""What a tiny checkpoint is made of: its family, its (tiny) sizes, its seed, and optionally the
published checkpoint whose tokenizer, processor and chat template it copies."""

from __future__ import annotations

from dataclasses import dataclass

from mcmdpo.model.families import ARCHITECTURES
from mcmdpo.tiny.published import PUBLISHED, PublishedCheckpoint


@dataclass
class TinyModelSpec:
    architecture: str = "llava"  # a family name of mcmdpo.model.families (llava: LLaVA-1.5, llava_next: LLaVA-1.6, ...)
    vocab_size: int = 1024
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    image_size: int = 32
    patch_size: int = 8
    max_position_embeddings: int = 2048
    seed: int = 0
    like: str = ""  # a key of PUBLISHED: its tokenizer, processor and chat template, tiny weights

    def __post_init__(self) -> None:
        if self.like:
            if self.like not in PUBLISHED:
                raise ValueError(f"--like must be one of {sorted(PUBLISHED)}, got {self.like!r}")
            published = PUBLISHED[self.like]
            if self.architecture not in ("llava", published.architecture):  # "llava" is the default
                raise ValueError(f"--like {self.like} is a {published.architecture} checkpoint, not {self.architecture}")
            self.architecture = published.architecture
            self.image_size, self.patch_size = published.image_size, published.patch_size
            self.max_position_embeddings = max(self.max_position_embeddings, 4096)
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; expected one of {ARCHITECTURES}")

    @property
    def published(self) -> PublishedCheckpoint | None:
        return PUBLISHED[self.like] if self.like else None
