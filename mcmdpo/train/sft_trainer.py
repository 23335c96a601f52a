"""SFT: a thin ``transformers.Trainer`` subclass with cheap length grouping, per-component
learning rates, and the choice of how token losses are weighed (:mod:`mcmdpo.train.sft_loss`)."""

from __future__ import annotations

from typing import Any

from transformers import Trainer

from mcmdpo.train.optimizer import ComponentLearningRateMixin
from mcmdpo.train.resume import CheckpointWeightsMixin
from mcmdpo.train.sampling import LengthGroupingMixin
from mcmdpo.train.sft_loss import per_example_token_means


class SFTTrainer(CheckpointWeightsMixin, ComponentLearningRateMixin, LengthGroupingMixin, Trainer):
    """``args`` is an :class:`~mcmdpo.train.arguments.AltTextTrainingArguments`. Under
    ``--sft_loss_reduction token`` the Trainer's own loss (the model's, over the global batch's
    answer tokens); under ``example`` the mean over the micro-batch's examples of each one's token
    mean, which the Trainer divides over accumulation steps and the processes average."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.args.sft_loss_reduction == "example":
            # No global token count: the loss is a mean over examples, scaled for accumulation by the Trainer.
            self.model_accepts_loss_kwargs = False
            self.loss_is_scaled_for_ga = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.args.sft_loss_reduction == "token":
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs["labels"]
        outputs = model(**{name: value for name, value in inputs.items() if name != "labels"})
        loss = per_example_token_means(outputs.logits, labels).mean()
        return (loss, outputs) if return_outputs else loss
