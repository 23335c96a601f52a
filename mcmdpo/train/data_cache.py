"""The data checks' results on disk (``--data_cache_dir``): one JSON file per key and part
(``images``: each distinct image's [height, width]; ``lengths``: each record's [fate, image
tokens]), written atomically by the main process and checked row by row when read back, so that
a damaged or foreign entry is checked again rather than trusted."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

from mcmdpo.caching import stable_repr
from mcmdpo.data.lengths import CUT, DROPPED, KEPT
from mcmdpo.files import cache_root, write_text_atomically

# 1: image checks as [height, width] per distinct image; lengths as [fate, image tokens] per record.
# Raise it when what a check finds changes, so that no run reads an older version's results.
CACHE_FORMAT = 1
DEFAULT_DATA_CACHE_DIR = cache_root() / "data_checks"
NO_CACHE = ("", "none")  # --data_cache_dir values that check everything again and cache nothing

logger = logging.getLogger("mcmdpo.train")


def _is_size(row: Any) -> bool:
    return isinstance(row, list) and len(row) == 2 and all(isinstance(side, int) for side in row)


def _is_measurement(row: Any) -> bool:
    return (isinstance(row, list) and len(row) == 2 and row[0] in (KEPT, CUT, DROPPED)
            and (row[1] is None or isinstance(row[1], int)))


# What one cached result is: an image's [height, width]; a record's [fate, image tokens or null].
ROWS: dict[str, Callable[[Any], bool]] = {"images": _is_size, "lengths": _is_measurement}


class DataCache:
    """Results of the checks on disk, one JSON file per key and part (``images``, ``lengths``),
    written atomically by the main process; ``folder`` in :data:`NO_CACHE` caches nothing."""

    def __init__(self, folder: str | Path | None):
        self.folder = None if folder is None or str(folder).strip().lower() in NO_CACHE else Path(folder)

    def path(self, key: str, part: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{key}.{part}.json"

    def read(self, key: str, part: str, expected: int) -> list[Any] | None:
        """The cached results (``expected`` of them, each as :data:`ROWS` expects for ``part``), or
        None: absent, unreadable or not matching."""
        if self.folder is None or not self.path(key, part).is_file():
            return None
        try:
            stored = json.loads(self.path(key, part).read_text())
            results = stored["results"]
            if stored.get("format") != CACHE_FORMAT or not isinstance(results, list) or len(results) != expected:
                raise ValueError(f"not {expected} results of format {CACHE_FORMAT}")
            if not all(map(ROWS[part], results)):
                raise ValueError(f"a result that is not {part}")
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("data checks: cache entry %s ignored (%s); checking again", self.path(key, part), error)
            return None
        return results

    def write(self, key: str, part: str, description: dict[str, Any], results: list[Any]) -> Path | None:
        """Write the entry; a cache that cannot be written costs the next run time, not this one."""
        if self.folder is None:
            return None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            text = json.dumps({"format": CACHE_FORMAT, "description": description, "results": results}, default=stable_repr)
            return write_text_atomically(self.path(key, part), text)
        except OSError as error:
            logger.warning("data checks: could not write the cache %s (%s)", self.path(key, part), error)
            return None
