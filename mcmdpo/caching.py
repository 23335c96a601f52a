"""Keys of the project's caches on disk (reference log-probs, data checks): a cached result is
named by a digest of a description of everything it depends on, so that a later run on the same
inputs finds it and a change of any input misses it. The description itself is kept beside the
result, for a person to read."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any


def text_sha256(text: str) -> str:
    """sha256 of ``text`` in UTF-8, in hex."""
    return hashlib.sha256(text.encode()).hexdigest()


def stable_repr(value: Any) -> str:
    """A value JSON cannot write, as text that does not change from one run to the next (no
    memory addresses)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def json_sha256(value: Any) -> str:
    """sha256 of ``value`` as JSON with sorted keys, a value JSON cannot write by its
    :func:`stable_repr`."""
    return text_sha256(json.dumps(value, sort_keys=True, default=stable_repr))


def description_key(description: dict[str, Any]) -> str:
    """The name of the cache entry ``description`` describes: 32 hex digits of its sha256."""
    return text_sha256(json.dumps(description, sort_keys=True))[:32]
