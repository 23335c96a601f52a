"""What a job over several nodes needs beyond one machine's: folders every node sees (checkpoints,
the reference log-prob cache), decisions every process takes together, and a clear stop when
another process of the job is lost.

A folder that one node does not see would not fail by itself: that node would miss the cached
reference log-probs the others read and start computing them, and the others would wait for it
in the next collective until the timeout. So it is checked at start-up, before any model loads.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import torch.distributed as dist

PROBE_PREFIX = ".mcmdpo-shared-folder-check-"
# How long a process looks for the probe another node wrote: network filesystems may cache a
# folder's listing for a few seconds.
VISIBILITY_WAIT_S = 10.0


class SharedFolderError(RuntimeError):
    """A folder the job needs on every node is not visible (or not writable) from all of them."""


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def from_every_process(value: Any) -> list[Any]:
    """``value`` of every process, in rank order (``[value]`` without a process group)."""
    if not distributed():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def from_main(value: Any) -> Any:
    """The first process's ``value``, on every process (``value`` itself without a process group)."""
    if not distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agreed(flag: bool) -> bool:
    """True only where every process says True: a decision (e.g. "the cache holds it") that all
    processes then act on alike."""
    return all(from_every_process(bool(flag)))


def _wait_for(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            os.listdir(path.parent)  # refreshes a network filesystem's view of the folder
        except OSError:
            pass
        if path.is_file():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)


def check_shared_folders(folders: dict[str, str | Path], wait_s: float = VISIBILITY_WAIT_S) -> None:
    """Check that every process sees the same ``folders`` (``{what it is: path}``): the first
    process writes a probe file in each, every process looks for it. Raises
    :class:`SharedFolderError` on every process, naming the hosts and processes that do not see a
    folder; returns at once without a process group."""
    if not distributed():
        return
    rank = dist.get_rank()
    names = [f"{PROBE_PREFIX}{uuid.uuid4().hex}" if rank == 0 else None]
    dist.broadcast_object_list(names, src=0)
    probe_name = names[0]
    written: dict[str, str] = {}  # what could not be written, by folder
    if rank == 0:
        for what, folder in folders.items():
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
                (Path(folder) / probe_name).write_text(socket.gethostname())
            except OSError as error:
                written[what] = str(error)
    failures = from_every_process(written)[0]
    if failures:
        listed = "; ".join(f"{what} {folders[what]}: {error}" for what, error in failures.items())
        raise SharedFolderError(f"cannot write {listed}")
    unseen = [what for what, folder in folders.items() if not _wait_for(Path(folder) / probe_name, wait_s)]
    reports = from_every_process((socket.gethostname(), rank, unseen))
    if rank == 0:
        for folder in folders.values():
            (Path(folder) / probe_name).unlink(missing_ok=True)
    problems = []
    for what, folder in folders.items():
        blind = [f"{host} (process {process})" for host, process, missed in reports if what in missed]
        if blind:
            problems.append(
                f"{what} {Path(folder).resolve()} is not visible from {', '.join(blind)}: it is read and written by "
                f"every node, so it must be on a filesystem all of them mount, at the same path: point {what} at such a folder"
            )
    if problems:
        raise SharedFolderError("; ".join(problems) + f" (checked from {reports[0][0]}, process 0)")


def lost_another_process(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another process of the job went away
    (gloo: the connection closed or reset; NCCL: a communicator error or timeout)."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        sign in text for sign in ("gloo/transport", "Connection reset by peer", "Connection closed by peer", "NCCL error")
    )
