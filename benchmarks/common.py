"""What the benchmarks share: the realistic token profile and how results are reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mcmdpo.data.synthetic import FILLERS
from mcmdpo.model.tiny import TinyModelSpec


def realistic_spec(hidden_size: int = 256, num_layers: int = 4) -> TinyModelSpec:
    """A tiny LLaVA with LLaVA-1.5's image token count: 336-pixel images in 14-pixel patches."""
    return TinyModelSpec(image_size=336, patch_size=14, hidden_size=hidden_size, intermediate_size=4 * hidden_size,
                         num_layers=num_layers, num_heads=4)


def long_context(question: str) -> str:
    """A synthetic post padded with filler sentences to about 100 tokens, as real posts run."""
    return question + " " + " ".join(FILLERS * 3)


def report(results: dict[str, Any], json_path: str | None) -> None:
    print(json.dumps(results, indent=1))
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1) + "\n")
