"""Length-grouped batches without encoding the data set to measure it."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Sampler
from transformers.trainer_pt_utils import LengthGroupedSampler

from mcmdpo.compat import GET_TRAIN_SAMPLER, LENGTH_GROUPED_SAMPLER, relies_on


class LengthGroupingMixin:
    """For a Trainer: ``--train_sampling_strategy group_by_length`` takes the lengths from the
    dataset's ``lengths`` (cheap estimates) instead of encoding every item (every image) first."""

    @relies_on(GET_TRAIN_SAMPLER, LENGTH_GROUPED_SAMPLER)
    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and hasattr(dataset, "lengths"):
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return LengthGroupedSampler(batch, lengths=dataset.lengths)
        return super()._get_train_sampler(train_dataset)
