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

The sharing is :mod:`mcmdpo.train.shared_work`'s, the fingerprints
:mod:`mcmdpo.train.data_fingerprints`', the cache :mod:`mcmdpo.train.data_cache`'.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import PIL
import transformers

from mcmdpo.caching import description_key, json_sha256
from mcmdpo.data.lengths import ImageSizes, LengthReport, Measurement, PlannedDataset, measure_records, report_of_measured
from mcmdpo.data.loading import ImageCheck, LoadedData, apply_image_checks, check_images, distinct_images, find_warnings, parse_records
from mcmdpo.data.records import DataValidationError, Problem
from mcmdpo.train.data_cache import CACHE_FORMAT, DataCache
from mcmdpo.train.data_fingerprints import file_digest, image_fingerprints, processor_fingerprint
from mcmdpo.train.shared_work import Processes, counts, unshard

logger = logging.getLogger("mcmdpo.train")


class DataChecks:
    """The checks of one training job's data file, shared among the job's processes and cached
    (see the module's documentation). :meth:`load_examples` validates the records and images;
    :meth:`check_lengths` measures what a dataset of them plans to train on, as
    :func:`mcmdpo.data.lengths.check_lengths` does in one process."""

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

    def _cached(self, describe: Callable[[], dict[str, Any] | None], part: str, expected: int) -> tuple[list[Any] | None, str | None, dict[str, Any] | None]:
        """(results, key, description): the main process describes and reads; every process gets
        the results (None on a miss). An error on the main process is a miss, never a hang."""
        found: list[Any] | None = None
        key = description = None
        if self.processes.main and self.cache.folder is not None:
            try:
                description = describe()
                if description is not None:
                    key = description_key(description)
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
                "images": len(images), "images_sha256": json_sha256([listing, fingerprints]), "pillow": PIL.__version__,
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

    def check_lengths(self, dataset: PlannedDataset, image_sizes: ImageSizes, show_progress: bool = True) -> LengthReport:
        """:func:`mcmdpo.data.lengths.check_lengths`, once per job: each process measures its share
        of the records (or the main process reads them all from the cache); every process gets the
        same report, or the same :class:`DataValidationError` listing every record that cannot be
        measured."""
        started = time.perf_counter()
        processes = self.processes
        examples = dataset.examples

        def describe() -> dict[str, Any] | None:
            if self.description is None:
                return None
            return {**self.description, "part": "lengths", "records": len(examples), "max_length": dataset.max_length,
                    "settings": self.settings, "inputs": dataclasses.asdict(dataset.inputs),
                    "processor": processor_fingerprint(dataset.processor), "transformers": transformers.__version__}

        cached, key, description = self._cached(describe, "lengths", len(examples))
        if cached is not None:
            measured: list[Any] = [Measurement(*row) for row in cached]
            self.measured = [0] * processes.count
        else:
            positions = list(range(len(examples)))
            shares = processes.together(lambda: measure_records(
                dataset, image_sizes, processes.share(positions), show_progress=show_progress and self.show_progress))
            measured = unshard(shares)
            self.measured = [len(share) for share in shares]
        report = report_of_measured(dataset, measured)
        if processes.main:
            if cached is not None:
                logger.info("data checks read from cache %s: %d records' lengths, 0 measured", self.cache.path(key, "lengths"), len(examples))
            else:
                if key is not None:
                    self.cache.write(key, "lengths", description, [list(row) for row in measured])
                logger.info("data checks: %d records' lengths measured on %d process%s (%s) in %.1f s", len(examples),
                            processes.count, "es" if processes.count > 1 else "", counts(shares), time.perf_counter() - started)
        return report

    def confirm_agreement(self, loaded: LoadedData, report: LengthReport) -> None:
        """Every process holds the same examples' sizes and report, or every process stops."""
        if not self.processes.active:
            return
        mine = json_sha256([loaded.image_sizes, report.kept, report.dropped, report.truncated, report.image_tokens])
        everyone = self.processes.gather(mine)
        if len(set(everyone)) > 1:
            raise RuntimeError(f"data checks: the processes disagree on the data (digests {sorted(set(everyone))})")
        if self.processes.main:
            logger.info("data checks agree on all %d processes: %d of %d records kept (digest %s)",
                        self.processes.count, len(report.kept), report.records, mine[:12])
