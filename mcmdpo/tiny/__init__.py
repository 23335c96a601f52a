"""Tiny, randomly initialised checkpoints of every declared family, for the tests, the demo and
the benchmarks (a user's training never runs this package): real tokenizers from registry
packages, the published processor settings and chat templates, tiny random weights, saved and
loaded through the real ``from_pretrained`` paths. Nothing is downloaded from a model hub.

    python -m mcmdpo.tiny --output_dir DIR [--architecture NAME] [--like PUBLISHED]
"""

from mcmdpo.tiny.checkpoints import write_tiny_checkpoint
from mcmdpo.tiny.spec import TinyModelSpec

__all__ = ["TinyModelSpec", "write_tiny_checkpoint"]
