"""Which records a run will draw, per epoch and in the order drawn, known before it starts: read
from the same sampler the Trainer's loader will use (seeded by the run's seed and the epoch), so
the reference pass can score exactly those and nothing else."""

from __future__ import annotations

import random
from itertools import islice
from typing import Any

import numpy
import torch

from accelerate.data_loader import SeedableRandomSampler
from torch.utils.data import SequentialSampler

from mcmdpo.compat import SET_INITIAL_TRAINING_VALUES, relies_on

# Samplers whose order follows from the run's seed and the epoch alone.
FORESEEABLE_SAMPLERS = (SeedableRandomSampler, SequentialSampler)


@relies_on(SET_INITIAL_TRAINING_VALUES)
def drawn_records(trainer: Any) -> list[list[int]]:
    """Per epoch the run starts, the dataset positions its steps draw over all processes, in the
    order drawn, each once. A run resumed from a checkpoint is counted from its start (a superset)."""
    args = trainer.args
    dataloader = trainer.get_train_dataloader()
    epochs, updates_per_epoch, *_, max_steps = trainer.set_initial_training_values(args, dataloader)
    batch_sampler = dataloader.batch_sampler
    # Several processes: accelerate's shard wraps the batches of all of them, dealt out in turn.
    every_process = getattr(batch_sampler, "batch_sampler", batch_sampler)
    processes = args.world_size if every_process is not batch_sampler else 1
    if not isinstance(getattr(every_process, "sampler", None), FORESEEABLE_SAMPLERS):
        # A sampler drawing from the global generator (length grouping's) draws after the
        # reference model's loading has moved it: its order cannot be read ahead, so every record.
        return [list(range(len(trainer.train_dataset)))] * epochs
    states = torch.get_rng_state(), random.getstate(), numpy.random.get_state()
    drawn, updates_left = [], max_steps
    try:
        for epoch in range(epochs):
            updates = min(updates_per_epoch, updates_left)
            updates_left -= updates
            batches = len(dataloader) if updates == updates_per_epoch else updates * args.gradient_accumulation_steps
            for sampler in (dataloader, every_process, getattr(every_process, "sampler", None)):
                if hasattr(sampler, "set_epoch"):  # as the Trainer does before each epoch
                    sampler.set_epoch(epoch)
            positions = dict.fromkeys(index for batch in islice(iter(every_process), batches * processes) for index in batch)
            drawn.append(list(positions))
    finally:  # a sampler drawing from the global generators must not move the run's own draws
        torch.set_rng_state(states[0])
        random.setstate(states[1])
        numpy.random.set_state(states[2])
    return drawn


def merged_epochs(drawn: list[list[int]]) -> list[int]:
    """The records of every epoch together, first drawn first (negatives the same every epoch)."""
    return list(dict.fromkeys(position for epoch in drawn for position in epoch))
