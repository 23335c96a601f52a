"""Work shared out among a training job's processes, on every node: each process takes every
``count``-th item of a list from its rank, and the results are gathered back in order on every
process. Without a process group (or with one process), one process does it all and nothing is
exchanged. The collectives themselves are :mod:`mcmdpo.train.several_nodes`'."""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

import torch

from mcmdpo.train.several_nodes import distributed, from_every_process, from_main

T = TypeVar("T")


class Processes:
    """The job's processes as shared work sees them: this one's rank among ``count``, its share
    of a list, and the two collectives it needs (on gloo and NCCL alike)."""

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
