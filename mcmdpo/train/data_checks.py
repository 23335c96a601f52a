"""A training job's data checks (every record, every image decoded, every sequence measured), run
once per job rather than once per process, and kept on disk for the next run on the same data.

Every process reads and parses the data file (each needs the examples, and parsing is cheap
beside decoding images); the expensive work is shared out among all processes of all nodes, each
taking every ``count``-th item from its rank, and put back in order on every process:

1. each process fingerprints its share of the distinct images (size and mtime_ns, not the
   pixels) and hashes the data file; gathered, these and the resolved image paths key the image
   checks. A data file whose content differs between processes is an error;
2. the main process alone reads the cache and sends what it found, or that it found nothing, to
   every process, so that nodes with different local caches never diverge;
3. on a miss each process decodes its share of the images; every process gathers every share,
   so that every process ends with the same examples, sizes and problems (all of them, from every
   share), and the main process caches a result without problems;
4. the lengths likewise, keyed further by what they depend on: the processor (tokenizer, image
   processor, chat template, image protocol), ``--max_length``, the stage's negatives and
   layout, and the family's image inputs.

A process whose share fails unexpectedly tells the others, which stop with it rather than wait for
it at the next collective. Without a process group (one process) the same steps run alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import PIL
import torch
import transformers

from mcmdpo.data.image_inputs import ImageInputs
from mcmdpo.data.lengths import CUT, DROPPED, KEPT, LengthReport, Measurement, PlannedConversations, measure_records, report_from
from mcmdpo.data.loading import (
    ImageCheck,
    LoadedData,
    apply_image_checks,
    check_images,
    distinct_images,
    find_warnings,
    parse_records,
)
from mcmdpo.data.records import DataValidationError, ImageRef, Problem
from mcmdpo.files import write_text_atomically
from mcmdpo.train.reference_cache import file_sha256
from mcmdpo.train.several_nodes import distributed, from_every_process, from_main

# 1: image checks as [height, width] per distinct image; lengths as [fate, image tokens] per record.
# Raise it when what a check finds changes, so that no run reads an older version's results.
CACHE_FORMAT = 1
DEFAULT_DATA_CACHE_DIR = Path(os.environ.get("MCMDPO_CACHE", Path.home() / ".cache" / "mcmdpo")) / "data_checks"
NO_CACHE = ("", "none")  # --data_cache_dir values that check everything again and cache nothing

logger = logging.getLogger("mcmdpo.train")
T = TypeVar("T")


class Processes:
    """The job's processes as the checks see them: this one's rank among ``count``, its share of
    a list, and the two collectives they need (on gloo and NCCL alike). Without a process group
    (or with one process), one process and no collective."""

    def __init__(self) -> None:
        self.active = distributed()
        self.rank = torch.distributed.get_rank() if self.active else 0
        self.count = torch.distributed.get_world_size() if self.active else 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's share: every ``count``-th item from its rank (:func:`unshard` undoes it)."""
        return list(items[self.rank::self.count])

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, in rank order, on every process."""
        return from_every_process(value)

    def from_main(self, value: Any) -> Any:
        """The main process's ``value`` on every process."""
        return from_main(value)

    def together(self, work: Callable[[], T]) -> list[T]:
        """Run ``work`` on every process and gather what each returned. If it raised anywhere,
        every process raises (the one that failed its own error), so that none waits forever at
        the next collective for one that has stopped."""
        error: Exception | None = None
        try:
            outcome: tuple[bool, Any] = (True, work())
        except Exception as caught:  # shipped to the others as text, then raised here
            error = caught
            outcome = (False, f"process {self.rank}: {type(caught).__name__}: {caught}")
        outcomes = self.gather(outcome)
        if error is not None:
            raise error
        failed = [message for ok, message in outcomes if not ok]
        if failed:
            raise RuntimeError("data checks failed on another process: " + "; ".join(failed))
        return [value for _, value in outcomes]


def unshard(shares: Sequence[Sequence[T]]) -> list[T]:
    """The whole list from the shares of :meth:`Processes.share` (share r = items[r::len(shares)])."""
    items: list[Any] = [None] * sum(len(share) for share in shares)
    for rank, share in enumerate(shares):
        items[rank::len(shares)] = share
    return items


def counts(shares: Sequence[Sequence[Any]]) -> str:
    """What each process did: ``24 + 24``, or ``24-25 each`` past eight processes."""
    sizes = [len(share) for share in shares]
    return " + ".join(map(str, sizes)) if len(sizes) <= 8 else f"{min(sizes)}-{max(sizes)} each"


def file_digest(path: str | Path) -> str | None:
    """sha256 of a file's bytes; None when it cannot be read (parsing reports why)."""
    try:
        return file_sha256(path)
    except OSError:
        return None


def image_fingerprints(images: Sequence[ImageRef], image_folder: str | Path | None) -> list[list[int] | None]:
    """[size, mtime_ns] of each image file (stat, threads for network file systems); None for an
    embedded image (the data file's digest covers it) or a file that cannot be stat'ed."""

    folder = str(image_folder) if image_folder else ""

    def stat(chunk: Sequence[ImageRef]) -> list[list[int] | None]:
        rows: list[list[int] | None] = []
        for image in chunk:
            if image.data is not None or image.path is None:
                rows.append(None)
                continue
            try:
                found = os.stat(os.path.join(folder, image.path))  # what ImageRef.resolve names, without Path's cost
                rows.append([found.st_size, found.st_mtime_ns])
            except OSError:
                rows.append(None)
        return rows

    chunks = [images[start:start + 4096] for start in range(0, len(images), 4096)]
    with ThreadPoolExecutor(min(4, max(1, len(chunks)))) as pool:
        return [row for rows in pool.map(stat, chunks) for row in rows]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=_stable_repr).encode()).hexdigest()


def _stable_repr(value: Any) -> str:
    """A value JSON cannot write, as text that does not change from one run to the next."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def processor_fingerprint(processor: Any) -> dict[str, Any]:
    """What the processor's share of the sequence lengths depends on, by content (not its
    folder: a DPO run from a fresh SFT checkpoint with the same tokenizer finds the SFT run's
    lengths): its class and configuration (image processor, image protocol, token counts), the
    tokenizer's definition and settings, and the chat template."""
    tokenizer = processor.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    settings = {key: value for key, value in tokenizer.init_kwargs.items()
                if key not in ("name_or_path", "is_local", "local_files_only", "chat_template") and not key.endswith("_file")}
    try:
        configuration = processor.to_dict()
    except Exception:  # a processor that cannot describe itself: its image processor's settings
        configuration = vars(processor.image_processor)
    return {
        "class": f"{type(processor).__module__}.{type(processor).__qualname__}",
        "configuration_sha256": _digest(configuration),
        "image_aspect_ratio": getattr(processor.image_processor, "image_aspect_ratio", None),
        "tokenizer": type(tokenizer).__qualname__,
        "tokenizer_sha256": hashlib.sha256(vocabulary.encode()).hexdigest(),
        "tokenizer_settings_sha256": _digest([settings, tokenizer.special_tokens_map]),
        "chat_template_sha256": hashlib.sha256((processor.chat_template or "").encode()).hexdigest(),
    }


def length_settings(stage: str, negatives: Any = None, layout: Any = None) -> dict[str, Any]:
    """What a stage's sequences depend on besides the records and the processor: for a
    preference stage, its triples and the negatives they read (other records' contexts and
    images, the crop's size)."""
    if layout is None:
        return {"stage": stage}
    return {
        "stage": stage,
        "triples": [triple.name for triple in layout.triples],
        "negatives": negatives.key_fields(layout.uses_negative_context, layout.uses_negative_image),
    }


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
            text = json.dumps({"format": CACHE_FORMAT, "description": description, "results": results}, default=_stable_repr)
            return write_text_atomically(self.path(key, part), text)
        except OSError as error:
            logger.warning("data checks: could not write the cache %s (%s)", self.path(key, part), error)
            return None


class DataChecks:
    """The checks of one training job's data file, shared among the job's processes and cached
    (see the module's documentation). :meth:`load_examples` validates the records and images;
    :meth:`check_lengths` takes the arguments of :func:`mcmdpo.data.lengths.check_lengths` (so
    it can stand in for it, e.g. in ``PreferenceDataset.keep_what_fits``)."""

    def __init__(
        self,
        data_path: str | Path,
        kind: str,
        image_folder: str | Path | None,
        cache_dir: str | Path | None,
        settings: dict[str, Any] | None = None,
        show_progress: bool = True,
        processes: Processes | None = None,
    ):
        self.data_path = Path(data_path)
        self.kind = kind
        self.image_folder = image_folder
        self.cache = DataCache(cache_dir)
        self.settings = settings or {}
        self.show_progress = show_progress
        self.processes = processes or Processes()
        self.description: dict[str, Any] | None = None  # what keys the image checks; None: not cached
        self.decoded: list[int] = []  # images each process decoded in this run (none when read from the cache)
        self.measured: list[int] = []  # records each process measured in this run

    def _keyed(self, description: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32]

    def _cached(self, describe: Callable[[], dict[str, Any] | None], part: str, expected: int) -> tuple[list[Any] | None, str | None, dict[str, Any] | None]:
        """(results, key, description): the main process describes and reads; every process gets
        the results (None on a miss). An error on the main process is a miss, never a hang."""
        found: list[Any] | None = None
        key = description = None
        if self.processes.main and self.cache.folder is not None:
            try:
                description = describe()
                if description is not None:
                    key = self._keyed(description)
                    found = self.cache.read(key, part, expected)
            except Exception as error:
                logger.warning("data checks: cache not used (%s: %s)", type(error).__name__, error)
                key = description = None
        return self.processes.from_main(found), key, description

    def load_examples(self) -> LoadedData:
        """Parse the file and decode every distinct image once per job; raise
        :class:`DataValidationError` listing every problem (on every process alike)."""
        started = time.perf_counter()
        path, folder, processes = self.data_path, self.image_folder, self.processes
        kind, examples, problems = parse_records(path, self.kind)
        images = distinct_images(examples)
        shares = processes.together(lambda: (file_digest(path), image_fingerprints(processes.share(images), folder)))
        digests = sorted({digest for digest, _ in shares if digest is not None})
        if len(digests) > 1:
            raise DataValidationError([Problem(str(path), "the file's content differs between the job's processes (sha256 "
                                               f"{', '.join(d[:12] for d in digests)}): every node must read the same data")])
        fingerprints = unshard([rows for _, rows in shares])

        def describe() -> dict[str, Any] | None:
            if not digests:
                return None
            resolved = os.path.realpath(folder) if folder else None
            listing = [None if image.data is not None else os.path.abspath(os.path.join(resolved or "", image.path))
                       for image in images]
            return {
                "format": CACHE_FORMAT, "kind": kind, "data_sha256": digests[0], "image_folder": resolved,
                "images": len(images), "images_sha256": _digest([listing, fingerprints]), "pillow": PIL.__version__,
            }

        cached, key, description = self._cached(describe, "images", len(images))
        if cached is not None:
            checks: list[ImageCheck] = [(size, None) for size in cached]
            self.decoded = [0] * processes.count
        else:
            decoded = processes.together(lambda: check_images(
                processes.share(images), folder, self.show_progress, description=f"checking images of {path.name}"))
            checks = unshard(decoded)
            self.decoded = [len(share) for share in decoded]
        examples, sizes = apply_image_checks(examples, dict(zip(images, checks)), path, problems)
        if problems:
            raise DataValidationError(problems)
        self.description = description if processes.main else None
        if processes.main:
            if cached is not None:
                logger.info("data checks read from cache %s: %d records, %d images, 0 decoded",
                            self.cache.path(key, "images"), len(examples), len(images))
            else:
                if key is not None:
                    self.cache.write(key, "images", description, [size for size, _ in checks])
                logger.info("data checks: %d records, %d images checked on %d process%s (%s) in %.1f s", len(examples),
                            len(images), processes.count, "es" if processes.count > 1 else "", counts(decoded),
                            time.perf_counter() - started)
        loaded = LoadedData(str(path), kind, examples, sizes)
        loaded.warnings = find_warnings(loaded, folder)
        return loaded

    def check_lengths(
        self,
        examples: Sequence[Any],
        image_sizes: Sequence[tuple[int, int] | None],
        processor: Any,
        max_length: int,
        inputs: ImageInputs,
        conversations_at: Callable[[int], PlannedConversations] | None = None,
        show_progress: bool = True,
    ) -> LengthReport:
        """:func:`mcmdpo.data.lengths.check_lengths`, once per job: each process measures its share
        of the records (or the main process reads them all from the cache); every process gets the
        same report, or the same :class:`DataValidationError` listing every record that cannot be
        measured."""
        started = time.perf_counter()
        processes = self.processes

        def describe() -> dict[str, Any] | None:
            if self.description is None:
                return None
            return {**self.description, "part": "lengths", "records": len(examples), "max_length": max_length,
                    "settings": self.settings, "inputs": dataclasses.asdict(inputs),
                    "processor": processor_fingerprint(processor), "transformers": transformers.__version__}

        cached, key, description = self._cached(describe, "lengths", len(examples))
        if cached is not None:
            measured: list[Any] = [Measurement(*row) for row in cached]
            self.measured = [0] * processes.count
        else:
            positions = list(range(len(examples)))
            shares = processes.together(lambda: measure_records(
                examples, image_sizes, processor, max_length, inputs, conversations_at, processes.share(positions),
                show_progress=show_progress and self.show_progress))
            measured = unshard(shares)
            self.measured = [len(share) for share in shares]
        problems = [result for result in measured if isinstance(result, Problem)]
        if problems:
            raise DataValidationError(problems)
        if processes.main:
            if cached is not None:
                logger.info("data checks read from cache %s: %d records' lengths, 0 measured", self.cache.path(key, "lengths"), len(examples))
            else:
                if key is not None:
                    self.cache.write(key, "lengths", description, [list(row) for row in measured])
                logger.info("data checks: %d records' lengths measured on %d process%s (%s) in %.1f s", len(examples),
                            processes.count, "es" if processes.count > 1 else "", counts(shares), time.perf_counter() - started)
        return report_from(examples, max_length, measured)

    def confirm_agreement(self, loaded: LoadedData, report: LengthReport) -> None:
        """Every process holds the same examples' sizes and report, or every process stops."""
        if not self.processes.active:
            return
        mine = _digest([loaded.image_sizes, report.kept, report.dropped, report.truncated, report.image_tokens])
        everyone = self.processes.gather(mine)
        if len(set(everyone)) > 1:
            raise RuntimeError(f"data checks: the processes disagree on the data (digests {sorted(set(everyone))})")
        if self.processes.main:
            logger.info("data checks agree on all %d processes: %d of %d records kept (digest %s)",
                        self.processes.count, len(report.kept), report.records, mine[:12])
