"""The processes of a build launched with torchrun: this process's rank and their number (from
RANK and WORLD_SIZE), and a barrier over a gloo process group (CPU or GPU alike). Only sampling is
shared out; the other stages run on the first process while the others wait."""

from __future__ import annotations

import os
from datetime import timedelta

# Other processes wait at a barrier while the first runs collect and correct, which may take hours.
BARRIER_TIMEOUT = timedelta(days=2)


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def start_group() -> bool:
    """Join the launcher's process group (gloo) when there are several processes; whether this
    call started it (and :func:`end_group` should end it)."""
    import torch.distributed as dist

    if process_rank()[1] == 1 or dist.is_initialized():
        return False
    dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    return True


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def end_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
