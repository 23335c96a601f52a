"""Preemption: on SIGTERM (what schedulers send before they kill a job) training saves a checkpoint
at the next step boundary and stops, and the run exits with :data:`PREEMPTED_EXIT_STATUS`, so a
job script can tell "saved, requeue me" from a crash; ``RESUME=1`` then continues exactly."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

import torch
from transformers import TrainerCallback

# EX_TEMPFAIL: a temporary failure, worth retrying (sysexits.h).
PREEMPTED_EXIT_STATUS = 75


class PreemptionCallback(TrainerCallback):
    """Turns a SIGTERM into a checkpoint at the next step boundary and a stop. Every process
    stops at the same step: whether any of them was signalled is agreed on at each step end."""

    def __init__(self) -> None:
        self.signalled = False
        self.preempted = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = True

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if _any_process(self.signalled, args.device):
            self.preempted = True
            control.should_save = True
            control.should_training_stop = True


def _any_process(flag: bool, device: Any) -> bool:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    value = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())
