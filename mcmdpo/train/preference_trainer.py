"""DPO and MCM-DPO: a thin ``transformers.Trainer`` subclass that scores each record's sequences
under the policy with the sequence packing it is given, takes the reference log-probs from the batch
(precomputed) or from a frozen reference, and applies the loss it is given (a
:class:`~mcmdpo.preference.losses.PreferenceLoss`: DPO and MCM-DPO differ only in its layout)."""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback

from mcmdpo.compat import SET_INITIAL_TRAINING_VALUES, relies_on
from mcmdpo.train.resume import CheckpointWeightsMixin
from mcmdpo.preference.losses import PreferenceLoss
from mcmdpo.train.optimizer import ComponentLearningRateMixin
from mcmdpo.train.sampling import LengthGroupingMixin
from mcmdpo.preference.batch import INDEX, REFERENCE_LOGPS
from mcmdpo.preference.packing import SequencePacking


def prepare_reference_model(model: nn.Module, trainer: Trainer) -> nn.Module:
    """A frozen, evaluation-mode reference on the trainer's device. Under ZeRO-3 its weights stay
    partitioned across processes, inside an inference-only DeepSpeed engine."""
    model.eval()
    model.requires_grad_(False)
    if trainer.is_deepspeed_enabled:
        import deepspeed

        config = copy.deepcopy(trainer.accelerator.state.deepspeed_plugin.deepspeed_config)
        if config.get("zero_optimization", {}).get("stage") == 3:
            config.pop("optimizer", None)
            config.pop("scheduler", None)
            engine, *_ = deepspeed.initialize(model=model, config=config)
            engine.eval()
            return engine
    return model.to(trainer.accelerator.device)


class PreferenceTrainer(CheckpointWeightsMixin, ComponentLearningRateMixin, LengthGroupingMixin, Trainer):
    """``args`` is an :class:`~mcmdpo.train.arguments.AltTextTrainingArguments`; ``train_dataset``
    a :class:`~mcmdpo.preference.dataset.PreferenceDataset`; ``packing`` scores its
    batches (its collator becomes the data collator) and ``loss`` turns the log-probs into losses.

    The reference is, in order: the batch's ``reference_logps`` (precomputed), ``reference_model``,
    or the policy with its LoRA adapters disabled."""

    def __init__(
        self, *args: Any, loss: PreferenceLoss, packing: SequencePacking, reference_model: nn.Module | None = None, **kwargs: Any
    ):
        super().__init__(*args, data_collator=packing.collator, **kwargs)
        self.loss = loss
        self.packing = packing
        # Our loss is a mean over records: the Trainer must divide it over accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self.reference_model = prepare_reference_model(reference_model, self) if reference_model is not None else None
        self._stored_metrics: dict[str, list[float]] = defaultdict(list)

    @property
    def num_sequences(self) -> int:
        return len(self.loss.layout.triples)

    def _reference_context(self):
        if self.reference_model is not None:
            return nullcontext()
        unwrapped = self.accelerator.unwrap_model(self.model)
        if not hasattr(unwrapped, "disable_adapter"):
            raise RuntimeError("no reference: pass reference_model, precompute reference log-probs, or train with LoRA")
        return unwrapped.disable_adapter()

    def sequence_logps(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[records, sequences] log-probs (columns: the layout's triples)."""
        return self.packing.logps(model, batch, self.args.logps_reduction == "mean")

    @torch.no_grad()
    def reference_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with self._reference_context():
            return self.sequence_logps(self.reference_model if self.reference_model is not None else self.model, batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        policy = self.sequence_logps(model, inputs)
        if REFERENCE_LOGPS in inputs:
            reference = inputs[REFERENCE_LOGPS].to(policy)
        else:
            reference = self.reference_logps(inputs).to(policy)
        losses, metrics = self.loss(policy, reference)
        for name, values in metrics.items():
            self._stored_metrics[name].append(self.accelerator.gather_for_metrics(values.detach()).float().mean().item())
        loss = losses.mean()
        return (loss, {"policy_logps": policy.detach()}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for name, values in self._stored_metrics.items():
            logs[name] = sum(values) / len(values)
        self._stored_metrics.clear()
        super().log(logs, start_time)

    @relies_on(SET_INITIAL_TRAINING_VALUES)
    def planned_epochs(self) -> int:
        """How many epochs ``train()`` will start (from --num_train_epochs or --max_steps)."""
        return self.set_initial_training_values(self.args, self.get_train_dataloader())[0]

    @torch.no_grad()
    def compute_reference_logps(self, dataset: Any, epochs: int = 1, batch_size: int | None = None) -> torch.Tensor:
        """[epochs, records, sequences] reference log-probs of ``dataset`` for each epoch's
        negatives, computed once, spread over all processes and gathered on each, in record order."""
        per_epoch = []
        for epoch in range(epochs):
            dataset.set_negatives_epoch(epoch)
            loader = DataLoader(
                dataset,
                batch_size=batch_size or self.args.per_device_train_batch_size,
                shuffle=False,
                collate_fn=self.data_collator,
                num_workers=self.args.dataloader_num_workers,
            )
            loader = self.accelerator.prepare(loader)
            chunks, indices = [], []
            description = "reference log-probs" + (f" (epoch {epoch + 1}/{epochs})" if epochs > 1 else "")
            for batch in tqdm(loader, desc=description, disable=not self.is_world_process_zero()):
                logps = self.reference_logps(batch)
                chunks.append(self.accelerator.gather_for_metrics(logps.float()).cpu())
                indices.append(self.accelerator.gather_for_metrics(batch[INDEX]).cpu())
            result = torch.empty(len(dataset), self.num_sequences)
            result[torch.cat(indices)] = torch.cat(chunks)
            per_epoch.append(result)
        dataset.set_negatives_epoch(0)
        return torch.stack(per_epoch)


class NegativesEpochCallback(TrainerCallback):
    """Tells the preference dataset which epoch begins, before its loader starts, so each epoch
    draws its own negative images (and reads its own reference log-probs)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # state.epoch is fractional once training is under way (e.g. 1.37 when resuming mid-epoch).
        self.dataset.set_negatives_epoch(math.floor((state.epoch or 0) + 1e-6))
